"""DynOPool speed on CPU: fused C++ kernel and pure-PyTorch path, each relative to nn.MaxPool2d(2).

One table: every case in float32 and bfloat16, NCHW and channels_last. Each cell is
time(DynOPool) / time(MaxPool2d(2)) on the same input, layout and dtype, for one forward + backward
(gradients for the input and, for DynOPool, for alpha); medians of N repeats in which the three
methods run interleaved, so a shared machine slows them alike. "torch" is the path every device
without the C++ kernel runs (CUDA; ``POOLARCH_DISABLE_EXT=1`` on CPU). A fused cell marked ``*`` fell
back to the PyTorch path (the kernel does not support that input).

    python benchmarks/bench_dynopool.py            # the full table (a few minutes)
    python benchmarks/bench_dynopool.py --quick    # batch 16, 3 repeats
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch
from torch import nn

from poolarch.layers import DynOPool2d
from poolarch.layers import _dynopool_ext

CASES = [
    ((64, 64, 32, 32), (0.5, 0.5)),
    ((64, 64, 32, 32), (0.66, 0.44)),
    ((64, 64, 32, 32), (1.2, 1.2)),
    ((64, 512, 4, 4), (0.5, 0.5)),
    ((32, 64, 32, 32), (0.5, 0.5)),  # issue 16: fused bf16
    ((128, 64, 32, 32), (0.5, 0.5)),  # issue 16: fused channels_last
    ((128, 64, 32, 32), (0.66, 0.44)),  # issue 16: fused channels_last, anisotropic
]
METHODS = ("maxpool", "fused", "torch")


def _uses_kernel(y: torch.Tensor) -> bool:
    """The custom op saves the kernel's int8 codes (the PyTorch path saves int64 indices)."""
    saved = getattr(y.grad_fn, "saved_tensors", ())
    return any(t.dtype == torch.int8 for t in saved)


def make_step(method: str, x: torch.Tensor, scale: tuple[float, float]) -> tuple[Callable[[], None], bool]:
    """``(step, fused_ran)``: a closure running one forward + backward of ``method`` on ``x``."""
    module = nn.MaxPool2d(2) if method == "maxpool" else DynOPool2d(scale)
    disable = "1" if method == "torch" else "0"
    os.environ["POOLARCH_DISABLE_EXT"] = disable
    y = module(x)
    fused_ran = method == "fused" and _uses_kernel(y)
    grad = torch.randn_like(y)

    def step() -> None:
        os.environ["POOLARCH_DISABLE_EXT"] = disable
        module(x).backward(grad)

    return step, fused_ran


def run_case(shape, scale, dtype: torch.dtype, channels_last: bool, repeats: int):
    torch.manual_seed(0)
    x = torch.randn(shape).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    steps, fused_ran = {}, False
    for m in METHODS:
        steps[m], ran = make_step(m, x, scale)
        fused_ran = fused_ran or ran
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
    return {m: statistics.median(times[m]) * 1e3 for m in METHODS}, fused_ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (median); default 7")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    kernel = _dynopool_ext.extension_available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {repeats} interleaved repeats, "
          f"fwd+bwd (input + alpha gradients); fused kernel {'built' if kernel else 'NOT available'}")
    head = f"{'shape (N,C,H,W)':<20}{'r':<11}{'dtype':<7}{'layout':<7}{'max ms':>8}{'fused/max':>11}{'torch/max':>11}"
    print(head)
    print("-" * len(head))
    for shape, scale in CASES:
        if args.quick:
            shape = (16,) + shape[1:]
        for dtype in (torch.float32, torch.bfloat16):
            for channels_last in (False, True):
                t, fused_ran = run_case(shape, scale, dtype, channels_last, repeats)
                r = f"{scale[0]:g}" if scale[0] == scale[1] else f"{scale[0]:g},{scale[1]:g}"
                fused = f"{t['fused'] / t['maxpool']:.2f}" + ("" if fused_ran else "*")
                print(
                    f"{str(shape):<20}{r:<11}{str(dtype).replace('torch.', ''):<7}{'cl' if channels_last else 'nchw':<7}"
                    f"{t['maxpool']:8.1f}{fused:>11}{t['torch'] / t['maxpool']:11.2f}",
                    flush=True,
                )
    os.environ.pop("POOLARCH_DISABLE_EXT", None)
    print("cells: time / time of nn.MaxPool2d(2) on the same input; * = the kernel did not run (PyTorch path)")


if __name__ == "__main__":
    main()
