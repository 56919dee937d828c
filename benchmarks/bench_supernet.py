"""Cost of one Balanced-Mixture supernet iteration vs the single network it samples (Javan et al. 2023).

Supernet iteration: sample (c, m) with the balanced mixture (IPF on p(c, m)), forward/backward/SGD
step on the path, validation mini-batch forward (batch statistics) and the moving-average update.
Baseline: a training step of the plain network of the same configuration (``resnet_from_blocks``)
plus its validation forward (no grad), either in eval mode (running statistics) or, like the
supernet's, with batch statistics (a supernet's running statistics are shared by all
configurations, so its validation mini-batch uses batch statistics). The variants are interleaved
step by step on the same configuration sequence so that machine load affects all alike; per-step
ratios are summarised by their median. Target: ratio <= 1.05.

    python benchmarks/bench_supernet.py [--steps 40] [--batch 64] [--threads 2] [--models 4]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from poolarch.methods import RunInfo
from poolarch.methods.search import BalancedMixture, batch_statistics
from poolarch.models.supernet import PoolingSupernet, resnet_from_blocks


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
    method = BalancedMixture(seed=0)
    fast = BalancedMixture(seed=0, val_batch_norm="running")
    run = RunInfo(epochs=1, steps_per_epoch=args.steps + args.warmup)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    xv = torch.randn(args.batch, 3, args.size, args.size)
    yv = torch.randint(0, 10, (args.batch,))
    method.setup(supernet, x[:1], run)
    fast.setup(supernet, x[:1], run)
    opt = torch.optim.SGD(method.param_groups(supernet), lr=0.01, momentum=0.9)
    singles = {c: resnet_from_blocks(args.backbone, c, num_classes=10) for c in supernet.space.configs}
    single_opts = {c: torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                   for c, n in singles.items()}
    supernet.train()

    def supernet_step(sampler: BalancedMixture) -> tuple:
        out = sampler.forward(supernet, x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sampler.val_step(supernet, xv, yv, F.cross_entropy)
        return sampler.configs[sampler.last[0]]

    def single_step(config: tuple, val_batch_stats: bool) -> None:
        net, net_opt = singles[config], single_opts[config]
        net.train()
        loss = F.cross_entropy(net(x), y)
        net_opt.zero_grad(set_to_none=True)
        loss.backward()
        net_opt.step()
        with torch.no_grad():
            if val_batch_stats:
                with batch_statistics(net):
                    net(xv)
            else:
                net.eval()
                net(xv)
                net.train()

    def timed(fn, *a):
        start = time.perf_counter()
        out = fn(*a)
        return out, time.perf_counter() - start

    totals = {"super": 0.0, "fast": 0.0, "eval": 0.0, "batch": 0.0}
    ratios: dict[str, list[float]] = {"batch": [], "eval": []}
    for i in range(args.warmup + args.steps):
        config, t_super = timed(supernet_step, method)
        _, t_batch = timed(single_step, config, True)
        fast_config, t_fast = timed(supernet_step, fast)  # val mini-batch with running statistics
        _, t_eval = timed(single_step, fast_config, False)
        if i >= args.warmup:
            for key, value in (("super", t_super), ("fast", t_fast), ("eval", t_eval), ("batch", t_batch)):
                totals[key] += value
            ratios["batch"].append(t_super / t_batch)
            ratios["eval"].append(t_fast / t_eval)
    # bookkeeping alone (sampling with IPF + moving average), without any network
    start = time.perf_counter()
    for _ in range(200):
        method.next_path()
        method.record(method.last[0], method.last[1], 0.5)
    bookkeeping_ms = (time.perf_counter() - start) / 200 * 1e3
    median = {k: sorted(v)[len(v) // 2] for k, v in ratios.items()}
    print(f"{args.backbone}, M={args.models}, batch {args.batch}x3x{args.size}x{args.size}, threads {args.threads}, "
          f"{args.steps} steps")
    ms = {k: v / args.steps * 1e3 for k, v in totals.items()}
    print("val mini-batch with batch statistics (default, val_batch_norm='batch'):")
    print(f"  supernet iteration {ms['super']:7.1f} ms | single net + val forward {ms['batch']:7.1f} ms | "
          f"ratio {median['batch']:.3f} (median step), {totals['super'] / totals['batch']:.3f} (totals)  target <= 1.05")
    print("val mini-batch in eval mode (val_batch_norm='running'):")
    print(f"  supernet iteration {ms['fast']:7.1f} ms | single net + val forward {ms['eval']:7.1f} ms | "
          f"ratio {median['eval']:.3f} (median step), {totals['fast'] / totals['eval']:.3f} (totals)  target <= 1.05")
    print(f"  (supernet default vs single net with eval-mode val forward: {totals['super'] / totals['eval']:.3f})")
    print(f"bookkeeping alone  : {bookkeeping_ms:8.3f} ms per iteration (sampling + IPF + moving average)")


if __name__ == "__main__":
    main()
