"""Training throughput of the engine: vgg16_cifar with DynOPool vs nn.MaxPool2d, same feature sizes.

Both nets see 32x32 inputs, 100 classes and start at identical feature-map sizes (DynOPool at
r = 0.5 equals MaxPool2d(2): maps 32-16-8-4-2). Each measurement is one (partial) training epoch
through :class:`poolarch.train.Trainer` -- data, forward, loss, backward, SGD step, and for
DynOPool the complexity loss (lambda > 0) -- timed by the engine (``images_per_s`` of the epoch;
evaluation excluded). Runs are interleaved and repeated; the median is reported, side by side.

    python benchmarks/bench_train.py                 # 2 threads, 8 steps of 128 images, 3 repeats
    python benchmarks/bench_train.py --demo          # also time ``poolarch train`` (the demo)

Target (issue 4): DynOPool >= 0.95x the max-pooling net's images/s.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from poolarch.train import TrainConfig, Trainer


def epoch_throughput(pool: str, lambda_: float, steps: int, batch_size: int, out: Path) -> float:
    cfg = TrainConfig(
        model="vgg16_cifar", pool=pool, dataset="random", image_size=32, num_classes=100, in_chans=3,
        limit=steps * batch_size, val_fraction=0.0, batch_size=batch_size, epochs=1, lr=0.1, scale_lr=0.01,
        weight_decay=5e-4, lambda_=lambda_, max_eval_steps=1, out=str(out), progress=False,
    )
    trainer = Trainer(cfg, overwrite=True)
    result = trainer.fit()
    return float(result.final["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="training steps per measured epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo", action="store_true", help="also time the embedded demo (poolarch train)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    variants = {
        "MaxPool2d": ("max", 0.0),
        "DynOPool (lambda=0)": ("dynopool", 0.0),
        "DynOPool + GMACs loss": ("dynopool", 2.2e-4),
    }
    results: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        epoch_throughput("max", 0.0, 2, args.batch_size, Path(tmp) / "warmup")
        for _ in range(args.repeats):
            for label, (pool, lam) in variants.items():
                results[label].append(epoch_throughput(pool, lam, args.steps, args.batch_size, Path(tmp) / "run"))
    base = statistics.median(results["MaxPool2d"])
    print(f"vgg16_cifar training epoch, 32x32, batch {args.batch_size}, {args.steps} steps, "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"{'variant':<24} {'images/s':>9} {'vs MaxPool2d':>13}   runs")
    for label, values in results.items():
        med = statistics.median(values)
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{label:<24} {med:>9.1f} {med / base:>12.3f}x   {runs}")

    if args.demo:
        from poolarch.cli import run_demo

        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            run_demo(Path(tmp) / "demo", quiet=True)
            print(f"demo (poolarch train, both nets): {time.perf_counter() - started:.1f} s wall")


if __name__ == "__main__":
    main()
