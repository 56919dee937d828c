"""Cost of a multi-resolution block (the multi-resolution-block paper (WACV submission 832)) relative to its block at full resolution alone.

For R = 1, 2, 3 resolutions: MACs (``poolarch.complexity.count_macs``: conv/linear + resizing;
max/avg pooling is reported separately, not in the total) and forward+backward wall time, each as a
ratio to the plain block, for the Conv-ReLU-BN block and the MBConv6+SE ("Eff-Conv") block.

    python benchmarks/bench_multires.py [--channels 64] [--size 32] [--batch 16] [--threads 1] [--clock cpu]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from poolarch.complexity import count_macs
from poolarch.layers.multires import MultiResBlock
from poolarch.models.multires import make_block


CLOCK = time.perf_counter


def fwd_bwd_s(module: nn.Module, x: torch.Tensor) -> float:
    module.zero_grad(set_to_none=True)
    start = CLOCK()
    module(x).sum().backward()
    return CLOCK() - start


def timed_ratio(base: nn.Module, multi: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """``(median ms of multi, median of the per-pair ratios multi / base)``: the two modules run
    alternately (after one warm-up each), so load changes on a shared machine hit both alike."""
    fwd_bwd_s(base, x), fwd_bwd_s(multi, x)
    pairs = []
    for _ in range(repeats):
        b = fwd_bwd_s(base, x)
        m = fwd_bwd_s(multi, x)
        pairs.append((m, m / b))
    ms = sorted(p[0] for p in pairs)[len(pairs) // 2]
    ratio = sorted(p[1] for p in pairs)[len(pairs) // 2]
    return 1e3 * ms, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu",
        help="cpu: process CPU time (robust on a shared machine; use with --threads 1); wall: elapsed time",
    )
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    c, s = args.channels, args.size
    x = torch.randn(args.batch, c, s, s)
    print(f"C={c}, {s}x{s}, batch {args.batch}, {args.threads} thread(s), {args.clock} clock; ratios to the block at full resolution alone")
    print(f"{'block':8s} {'upsample':9s} {'R':>2s} {'MACs':>12s} {'ratio':>6s} {'pool MACs':>10s} {'fwd+bwd ms':>10s} {'ratio':>6s}")
    for kind in ("conv", "mbconv"):
        block = make_block(kind, c, c)
        base_macs = count_macs(block, (1, c, s, s)).total
        base_ms, _ = timed_ratio(block, block, x, args.repeats)
        print(f"{kind:8s} {'-':9s} {'-':>2s} {base_macs:12d} {1.0:6.3f} {0:10d} {base_ms:10.1f} {1.0:6.2f}")
        for upsample in ("nearest", "bilinear"):
            for r in (1, 2, 3):
                multi = MultiResBlock(block, resolutions=r, upsample=upsample)
                count = count_macs(multi, (1, c, s, s))
                ms, ratio = timed_ratio(block, multi, x, args.repeats)
                print(
                    f"{kind:8s} {upsample:9s} {r:2d} {count.total:12d} {count.total / base_macs:6.3f} "
                    f"{count.by_category.get('pool', 0):10d} {ms:10.1f} {ratio:6.2f}"
                )


if __name__ == "__main__":
    main()
