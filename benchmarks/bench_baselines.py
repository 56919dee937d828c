"""Forward+backward time of the learnable-resizing baselines next to DynOPool and max-pooling.

Shape Adaptor (``ShapeAdaptor2d``, ratio 0.5 + margin, i.e. sizes of MaxPool2d(2)), DiffStride
(``DiffStride2d``, S = 2, R = 4, window crop; dense and FFT implementations) and DynOPool2d (r = 0.5), each timed as a ratio to
``nn.MaxPool2d(2)`` on the DynOPool benchmark shapes; the input requires grad and the loss is a
fixed random projection of the output, so the backward pass reaches the input and the architecture
parameters. Every layer runs alternately with max-pooling (after a warm-up), so load changes on a
shared machine hit both alike; the ratio is the median of the per-pair ratios. ``--allocator retain``
(the default) times every side on warm memory; see ``benchmarks/_allocator.py``.

    python benchmarks/bench_baselines.py [--quick] [--threads 2] [--repeats 5] [--allocator retain]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from poolarch.complexity import count_macs
from poolarch.layers import DiffStride2d, DynOPool2d, ShapeAdaptor2d

from _allocator import add_allocator_argument, apply_allocator

SHAPES = [(128, 64, 32, 32), (128, 512, 4, 4), (16, 64, 112, 112)]
QUICK_SHAPES = [(16, 64, 32, 32), (16, 512, 4, 4), (2, 64, 112, 112)]


def layers() -> dict[str, nn.Module]:
    return {
        "MaxPool2d(2)": nn.MaxPool2d(2),
        "DynOPool2d": DynOPool2d(0.5),
        "ShapeAdaptor2d": ShapeAdaptor2d(0.5),
        "DiffStride2d": DiffStride2d(2.0),
        "DiffStride2d/fft": DiffStride2d(2.0, impl="fft"),
    }


def fwd_bwd_s(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> float:
    module.zero_grad(set_to_none=True)
    x.grad = None
    start = time.perf_counter()
    (module(x) * weight).sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches (for development)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    add_allocator_argument(parser)
    args = parser.parse_args()
    allocator = apply_allocator(args.allocator)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    print(f"fwd+bwd, float32, {args.threads} threads, median of {args.repeats}; ratio = time / MaxPool2d(2) time; "
          f"{allocator}")
    print(f"{'shape':22s} {'layer':17s} {'out':>9s} {'ms':>9s} {'ratio':>7s} {'MACs/img':>10s}")
    for shape in shapes:
        x = torch.randn(*shape, requires_grad=True)
        base = nn.MaxPool2d(2)
        base_weight = torch.randn_like(base(x))
        for name, layer in layers().items():
            out = layer(x)
            weight = torch.randn_like(out)  # Shape Adaptor's margin makes 112 -> 57, not 56
            fwd_bwd_s(base, x, base_weight), fwd_bwd_s(layer, x, weight)
            pairs = []
            for _ in range(args.repeats):
                b = fwd_bwd_s(base, x, base_weight)
                m = fwd_bwd_s(layer, x, weight)
                pairs.append((m, m / b))
            ms = 1e3 * sorted(p[0] for p in pairs)[len(pairs) // 2]
            ratio = sorted(p[1] for p in pairs)[len(pairs) // 2]
            macs = count_macs(layer, (1, *shape[1:])).total
            size = "x".join(str(s) for s in out.shape[2:])
            print(f"{str(shape):22s} {name:17s} {size:>9s} {ms:9.2f} {ratio:7.2f} {macs:10d}")


if __name__ == "__main__":
    main()
