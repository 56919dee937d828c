"""Training throughput of the engine: vgg16_cifar with DynOPool vs nn.MaxPool2d, same feature sizes.

Both nets see 32x32 inputs, 100 classes and start at identical feature-map sizes (DynOPool at
r = 0.5 equals MaxPool2d(2): maps 32-16-8-4-2). A measurement is a block of ``--steps`` training
steps of :class:`poolarch.train.Trainer` (the engine's own step: forward, loss -- for DynOPool with
lambda > 0 the complexity loss --, backward, SGD step, lr schedule, scale clamp) on the batches of
an in-memory training epoch. Variants are interleaved and repeated; we report the best (least
disturbed) block per variant, in wall-clock images/s and in images per CPU-second of this process
(less sensitive to other jobs on a shared machine), side by side.

    python benchmarks/bench_train.py                 # 2 threads, 6 steps of 128 images, 5 repeats
    python benchmarks/bench_train.py --demo          # also time ``poolarch train`` (the demo)

Target (issue 4): DynOPool >= 0.95x the max-pooling net's images/s.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from poolarch.train import TrainConfig, Trainer


def make_trainer(pool: str, lambda_: float, steps: int, batch_size: int, out: Path) -> Trainer:
    cfg = TrainConfig(
        model="vgg16_cifar", pool=pool, dataset="random", image_size=32, num_classes=100, in_chans=3,
        limit=steps * batch_size, val_fraction=0.0, batch_size=batch_size, epochs=1000, lr=0.01, scale_lr=0.001,
        weight_decay=5e-4, lambda_=lambda_, out=str(out), progress=False,
    )
    trainer = Trainer(cfg, overwrite=True)
    trainer._train_acc = trainer.task.accumulator(trainer.data.num_classes)
    return trainer


def time_steps(trainer: Trainer, batches: list, first_step: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one training step per batch."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i, (x, y) in enumerate(batches):
        trainer._train_step(first_step + i, x, y, None)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="training steps per measured block")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--demo", action="store_true", help="also time the embedded demo (poolarch train)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    variants = {
        "MaxPool2d": ("max", 0.0),
        "DynOPool (lambda=0)": ("dynopool", 0.0),
        "DynOPool + GMACs loss": ("dynopool", 2.2e-4),
    }
    images = args.steps * args.batch_size
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {k: make_trainer(p, lam, args.steps, args.batch_size, Path(tmp) / k.split()[0] / str(lam))
                    for k, (p, lam) in variants.items()}
        batches = list(next(iter(trainers.values())).data.train)  # the same images for every variant
        for trainer in trainers.values():
            time_steps(trainer, batches[:1], 0)  # warm-up
        for repeat in range(args.repeats):
            for label, trainer in trainers.items():
                wall, cpu = time_steps(trainer, batches, 1 + repeat * len(batches))
                old = best.get(label, (float("inf"), float("inf")))
                best[label] = (min(old[0], wall), min(old[1], cpu))
        from poolarch.train.evaluation import architecture_summary

        sizes = {k: architecture_summary(t.model, t.example)[0] for k, t in trainers.items()}
    base_wall, base_cpu = best["MaxPool2d"]
    print(f"vgg16_cifar training steps, 32x32, batch {args.batch_size}, {args.steps} steps per block, "
          f"{args.threads} threads, best of {args.repeats} interleaved blocks")
    print(f"{'variant':<24} {'images/s':>9} {'ratio':>7} {'images/CPU-s':>13} {'ratio':>7}")
    for label, (wall, cpu) in best.items():
        print(f"{label:<24} {images / wall:>9.1f} {base_wall / wall:>6.3f}x {images / cpu:>13.1f} {base_cpu / cpu:>6.3f}x"
              f"   maps {sizes[label]}")

    if args.demo:
        from poolarch.cli import run_demo

        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            run_demo(Path(tmp) / "demo", quiet=True)
            print(f"demo (poolarch train, both nets): {time.perf_counter() - started:.1f} s wall")


if __name__ == "__main__":
    main()
