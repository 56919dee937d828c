"""DynOPool speed and memory, side by side: nn.MaxPool2d(2) vs fused kernel vs fallback vs grid_sample.

Forward + backward (gradient for the input and, for DynOPool, for alpha), median of repeats, with
the methods interleaved round-robin inside each repeat so a shared machine slows them alike.
Peak memory: bytes allocated by the CPU allocator during one forward + backward (from the
profiler's allocation/free events, summed in time order), relative to MaxPool2d's.

    python benchmarks/bench_dynopool.py            # full table
    python benchmarks/bench_dynopool.py --quick    # short run
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from poolarch.layers import DynOPool2d
from poolarch.layers import _dynopool_ext

FULL_CASES = [
    ((128, 64, 32, 32), (0.5, 0.5)),
    ((128, 512, 4, 4), (0.5, 0.5)),
    ((16, 64, 112, 112), (0.5, 0.5)),
    ((128, 64, 32, 32), (0.66, 0.44)),
    ((128, 64, 32, 32), (1.2, 1.2)),
]
QUICK_CASES = [
    ((32, 64, 32, 32), (0.5, 0.5)),
    ((32, 64, 32, 32), (0.66, 0.44)),
]
METHODS = ("maxpool", "fused", "fallback", "grid_sample")


def grid_sample_dynopool(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The naive formulation: a full (N, 2H_out, 2W_out, 2) grid, grid_sample, then 2x2 max pooling."""
    cont = torch.clamp(torch.tensor(x.shape[2:], dtype=alpha.dtype) / alpha, min=1.5)
    s = torch.floor(cont.detach() + 0.5) + (cont - cont.detach())
    coords = []
    for d in range(2):
        k = torch.arange(2 * int(s[d].item()), dtype=x.dtype) + 0.5
        coords.append(k / s[d] - 1)  # lattice point k in normalised [-1, 1] coordinates
    gy, gx = torch.meshgrid(coords[0], coords[1], indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(x.shape[0], -1, -1, -1)
    z = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.max_pool2d(z, 2)


def make_step(method: str, x: torch.Tensor, scale: tuple[float, float]) -> Callable[[], None]:
    """A closure running one forward + backward of ``method`` on ``x``."""
    if method == "maxpool":
        module = nn.MaxPool2d(2)
        forward = module
    elif method in ("fused", "fallback"):
        module = DynOPool2d(scale)
        forward = module
    else:
        alpha = nn.Parameter(torch.tensor([1 / scale[0], 1 / scale[1]]))
        module = None
        forward = lambda t: grid_sample_dynopool(t, alpha)  # noqa: E731
    with torch.no_grad():
        grad = torch.randn_like(forward(x))
    disable = "1" if method == "fallback" else "0"

    def step() -> None:
        os.environ["POOLARCH_DISABLE_EXT"] = disable
        forward(x).backward(grad)

    if module is not None and method in ("fused", "fallback"):
        os.environ["POOLARCH_DISABLE_EXT"] = disable
        uses_fused = "Fused" in type(forward(x).grad_fn).__name__
        if uses_fused != (method == "fused"):
            raise RuntimeError(f"{method}: expected fused={method == 'fused'}, got {uses_fused}")
    return step


@contextlib.contextmanager
def _quiet_native_output():
    """Silence the profiler library's own start/stop lines (printed from C++, not via Python)."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1), os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def peak_bytes(step: Callable[[], None], x: torch.Tensor) -> int:
    """Peak of (allocated - freed) CPU bytes during one call of ``step``: the profiler records every
    allocation and free of the CPU allocator (including those inside the C++ kernel)."""
    x.grad = None
    with _quiet_native_output(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def run_case(shape, scale, channels_last: bool, repeats: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    steps = {m: make_step(m, x, scale) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for step in steps.values():
        x.grad = None
        step()  # warm-up
    for _ in range(repeats):
        for m, step in steps.items():
            x.grad = None
            start = time.perf_counter()
            step()
            times[m].append(time.perf_counter() - start)
    return {
        m: {"ms": 1e3 * statistics.median(times[m]), "peak": float(peak_bytes(steps[m], x))} for m in METHODS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per method (median)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not _dynopool_ext.extension_available():
        raise SystemExit("the fused DynOPool kernel could not be built; nothing to compare")
    cases = QUICK_CASES if args.quick else FULL_CASES
    repeats = args.repeats or (3 if args.quick else 7)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {repeats}, fwd+bwd")
    head = (
        f"{'shape (N,C,H,W)':<20}{'r':<12}{'layout':<8}"
        f"{'max ms':>8}{'fused':>8}{'fallbk':>8}{'grid':>8} |"
        f"{'fus/max':>8}{'fus/grid':>9}{'fb/max':>8}{'fb/grid':>8} |"
        f"{'mem fus':>8}{'mem fb':>8}{'mem grd':>8}"
    )
    print(head)
    print("-" * len(head))
    for shape, scale in cases:
        for channels_last in (False, True):
            res = run_case(shape, scale, channels_last, repeats)
            t = {m: res[m]["ms"] for m in METHODS}
            mem = {m: res[m]["peak"] / max(res["maxpool"]["peak"], 1.0) for m in METHODS}
            r = f"{scale[0]:g}" if scale[0] == scale[1] else f"{scale[0]:g},{scale[1]:g}"
            print(
                f"{str(shape):<20}{r:<12}{'cl' if channels_last else 'nchw':<8}"
                f"{t['maxpool']:8.1f}{t['fused']:8.1f}{t['fallback']:8.1f}{t['grid_sample']:8.1f} |"
                f"{t['fused'] / t['maxpool']:8.2f}{t['fused'] / t['grid_sample']:9.2f}"
                f"{t['fallback'] / t['maxpool']:8.2f}{t['fallback'] / t['grid_sample']:8.2f} |"
                f"{mem['fused']:8.2f}{mem['fallback']:8.2f}{mem['grid_sample']:8.2f}",
                flush=True,
            )
    os.environ.pop("POOLARCH_DISABLE_EXT", None)
    print("ratios: time / time of MaxPool2d(2) or of grid_sample; mem: peak allocated bytes / MaxPool2d's")


if __name__ == "__main__":
    main()
