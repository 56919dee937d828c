"""Cost of one Balanced-Mixture supernet iteration vs the single network it samples (paper 003).

Supernet iteration: sample (c, m) with the balanced mixture (IPF on p(c, m)), forward/backward/SGD
step on the path, validation mini-batch forward (batch statistics) and the moving-average update.
Baseline: a training step of the plain network of the same configuration (``resnet_from_blocks``)
plus its validation forward (eval mode, no grad). The two are interleaved step by step on the same
configuration sequence so that machine load affects both alike. Target: ratio <= 1.05.

    python benchmarks/bench_supernet.py [--steps 40] [--batch 64] [--threads 2] [--models 4]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from poolarch.search.methods import BalancedMixture
from poolarch.search.supernet import PoolingSupernet, resnet_from_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--backbone", default="resnet20")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    supernet = PoolingSupernet(args.backbone, num_classes=10, num_weight_sets=args.models)
    method = BalancedMixture(total_steps=args.steps + args.warmup, seed=0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    xv = torch.randn(args.batch, 3, args.size, args.size)
    yv = torch.randint(0, 10, (args.batch,))
    method.setup(supernet, x[:1])
    opt = torch.optim.SGD(method.param_groups(supernet), lr=0.01, momentum=0.9)
    singles = {c: resnet_from_blocks(args.backbone, c, num_classes=10) for c in supernet.space.configs}
    single_opts = {c: torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                   for c, n in singles.items()}
    supernet.train()

    def supernet_step() -> tuple:
        out = method.forward(supernet, x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.val_step(supernet, xv, yv, F.cross_entropy)
        return method.configs[method.last[0]]

    def single_step(config: tuple) -> None:
        net, net_opt = singles[config], single_opts[config]
        net.train()
        loss = F.cross_entropy(net(x), y)
        net_opt.zero_grad(set_to_none=True)
        loss.backward()
        net_opt.step()
        net.eval()
        with torch.no_grad():
            net(xv)

    total_super = total_single = 0.0
    ratios = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        config = supernet_step()
        t_super = time.perf_counter() - start
        start = time.perf_counter()
        single_step(config)
        t_single = time.perf_counter() - start
        if i >= args.warmup:
            total_super += t_super
            total_single += t_single
            ratios.append(t_super / t_single)
    # bookkeeping alone (sampling with IPF + moving average), without any network
    start = time.perf_counter()
    for _ in range(200):
        method.next_path()
        method.record(method.last[0], method.last[1], 0.5)
    bookkeeping_ms = (time.perf_counter() - start) / 200 * 1e3
    ratios.sort()
    print(f"{args.backbone}, M={args.models}, batch {args.batch}x3x{args.size}x{args.size}, threads {args.threads}, "
          f"{args.steps} steps")
    print(f"supernet iteration : {total_super / args.steps * 1e3:8.1f} ms")
    print(f"single network     : {total_single / args.steps * 1e3:8.1f} ms")
    print(f"ratio (total)      : {total_super / total_single:8.3f}   median per-step ratio {ratios[len(ratios) // 2]:.3f}"
          f"   (target <= 1.05)")
    print(f"bookkeeping alone  : {bookkeeping_ms:8.3f} ms per iteration (sampling + IPF + moving average)")


if __name__ == "__main__":
    main()
