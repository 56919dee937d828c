"""Atomic files and checkpoints: a reader never sees a half-written file.

Every file is written to a temporary name in the same directory, flushed to disk and moved into
place with :func:`os.replace` (atomic on POSIX). A checkpoint holds everything needed to continue
a run exactly: model, optimiser, method, budget controller, AMP scaler and the random states of
python, numpy and torch.
"""
from __future__ import annotations

import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "load_model_state",
    "rng_state",
    "set_rng_state",
    "load_checkpoint",
    "CheckpointError",
]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, truncated, corrupt or from another model."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask



def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and :func:`os.replace`. The file gets
    the permissions of any file the user creates (``0o666`` less the process umask), not the
    ``0o600`` of :func:`tempfile.mkstemp`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV atomically; the columns are the union of the rows' keys, in order of
    first appearance (missing cells stay empty)."""
    import csv

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a truncated file at ``path``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def rng_state() -> dict[str, Any]:
    """Random states of python, numpy, torch (CPU and, if present, CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by the engine (trusted: it contains RNG states, not just tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): it was not written completely")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # zip/pickle/storage errors of a truncated or foreign file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({reason})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a poolarch checkpoint (no 'model' entry)")
    return state


def load_model_state(model: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state["model"])`` with a :class:`CheckpointError` naming ``path``
    and the first mismatching keys/shapes when the checkpoint was written for another model."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        missing = [k for k in model.state_dict() if k not in state["model"]]
        unexpected = [k for k in state["model"] if k not in model.state_dict()]
        detail = []
        if missing:
            detail.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        if not detail:
            detail.append("tensor shapes differ")
        raise CheckpointError(f"checkpoint {str(path)!r} was written for another model ({'; '.join(detail)})") from None
