"""Build and load the fused CPU kernel of 2-d DynOPool (``torch.ops.poolarch_dynopool``).

The C++ source ``poolarch/csrc/dynopool.cpp`` is compiled on first use with
:func:`torch.utils.cpp_extension.load` (ninja) into ``$POOLARCH_EXTENSIONS_DIR``, else
``$TORCH_EXTENSIONS_DIR/poolarch``, else ``~/.cache/poolarch/torch_extensions`` (one sub-directory per
Python/torch version, SIMD level and source hash, so checkouts with different sources never share or
rebuild each other's library). A failed build warns once; the custom op
(:mod:`._dynopool_op`) then runs the pure-PyTorch path, as it does when ``POOLARCH_DISABLE_EXT=1`` is
set or the input is not a CPU float32/float64/bfloat16/float16 4-d tensor.

16-bit inputs are computed in float32 (output and input gradient in the input dtype, size gradient in
the surrogate's dtype). The scale gradient at kinks -- lattice points exactly on a pixel centre, decided
in exact integer arithmetic -- is the mean of the two one-sided slopes (see :mod:`.dynopool`).
"""
from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path

import torch

__all__ = ["extension_available", "extension_enabled", "build_directory"]

_SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "dynopool.cpp"
_LIB_NAME = "poolarch_dynopool"
_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

_lock = threading.Lock()
_state: dict[str, object] = {"loaded": None}  # None: not tried; True: ops available; False: failed


def extension_enabled() -> bool:
    """False when the environment variable ``POOLARCH_DISABLE_EXT`` is set to a true value."""
    return os.environ.get("POOLARCH_DISABLE_EXT", "").strip().lower() not in ("1", "true", "yes", "on")


def build_directory() -> Path:
    """Where the extension is compiled and cached."""
    root = os.environ.get("POOLARCH_EXTENSIONS_DIR")
    if root:
        base = Path(root)
    elif os.environ.get("TORCH_EXTENSIONS_DIR"):
        base = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "poolarch"
    else:
        base = Path.home() / ".cache" / "poolarch" / "torch_extensions"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__.split('+')[0]}"
    return base / tag / f"{_LIB_NAME}_{_simd_level()}_{_source_hash()}"


def _source_hash() -> str:
    """First 12 hex digits of the SHA-256 of the kernel source: worktrees/versions never share a build."""
    import hashlib

    return hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:12]


def _simd_level() -> str:
    """``avx2`` when torch reports an AVX2-or-better CPU, else ``baseline``.

    With ``avx2`` the kernel is compiled with ``-mavx2``, which only widens its vector loops (no FMA
    contraction, ``-ffp-contract=off``): the arithmetic, hence every result, is the same. (``-mfma`` with
    contraction measured no faster on AMD EPYC: forward and backward 0.93-1.03x.)
    """
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch: stay portable
        return "baseline"
    return "avx2" if capability in ("AVX2", "AVX512") else "baseline"


def _load() -> bool:
    import logging

    # Importing cpp_extension logs a CUDA_HOME notice on CPU-only machines; it is irrelevant here.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)

    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=_LIB_NAME,
        sources=[str(_SOURCE)],
        extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"] + (["-mavx2"] if _simd_level() == "avx2" else []),
        extra_ldflags=["-fopenmp"],
        build_directory=str(directory),
        is_python_module=False,
        verbose=False,
    )
    return hasattr(torch.ops, _LIB_NAME) and hasattr(getattr(torch.ops, _LIB_NAME), "forward")


def extension_available() -> bool:
    """Build/load the kernel if not done yet; True when it can be used (ignores ``POOLARCH_DISABLE_EXT``)."""
    if _state["loaded"] is None:
        with _lock:
            if _state["loaded"] is None:
                try:
                    _state["loaded"] = _load()
                    if not _state["loaded"]:
                        raise RuntimeError("the library loaded but registered no operators")
                except Exception as exc:  # noqa: BLE001 - any build failure means: fall back
                    _state["loaded"] = False
                    warnings.warn(
                        f"poolarch: could not build the fused DynOPool CPU kernel ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); using the "
                        "pure-PyTorch path (slower, same results)",
                        RuntimeWarning,
                        stacklevel=3,
                    )
    return bool(_state["loaded"])


def _ops():
    return getattr(torch.ops, _LIB_NAME)
