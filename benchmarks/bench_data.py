"""Images/s of one training epoch of mnist5k: poolarch's in-memory TensorLoader (batched crop +
normalise on the batch) vs a torchvision DataLoader with the same per-sample transforms.

    python benchmarks/bench_data.py [--threads 1] [--workers 0 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset


class PerSample(Dataset):
    """uint8 images -> torchvision v2 transforms per sample (the usual DataLoader path)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, padding: int, flip: bool,
                 mean: tuple, std: tuple) -> None:
        from torchvision.transforms import v2

        self.images, self.labels = images, labels
        steps = [v2.RandomCrop(images.shape[-1], padding=padding)] + ([v2.RandomHorizontalFlip()] if flip else [])
        self.tf = v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.tf(self.images[i]), self.labels[i]


def epoch_rate(loader, epoch: int) -> float:
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    n, t = 0, time.perf_counter()
    for x, _ in loader:
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from poolarch.data import load_data
    from poolarch.data.bundle import BatchPipeline
    from poolarch.data.loader import TensorLoader
    from poolarch.data.transforms import BatchAugment, Variant

    mnist = load_data("mnist5k", batch_size=args.batch_size).train
    g = torch.Generator().manual_seed(0)
    fake_cifar = torch.randint(0, 256, (10000, 3, 32, 32), dtype=torch.uint8, generator=g)
    fake_labels = torch.randint(0, 10, (10000,), generator=g)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    cifar = TensorLoader(fake_cifar, fake_labels, batch_size=args.batch_size, shuffle=True,
                         transform=BatchPipeline(in_chans=3, resize_to=None, variant=Variant(),
                                                 augment=BatchAugment(4, True), mean=mean, std=std))
    cases = [
        ("mnist5k train (crop pad 2)", mnist, PerSample(mnist.images, mnist.labels, 2, False, (0.1307,), (0.3081,))),
        ("CIFAR-shaped 3x32x32 random (crop pad 4 + flip)", cifar,
         PerSample(fake_cifar, fake_labels, 4, True, mean, std)),
    ]
    print(f"one training epoch, batch {args.batch_size}, {args.threads} thread(s), best of {args.repeats}")
    for title, ours, ds in cases:
        rates = {"poolarch TensorLoader (batched)": max(epoch_rate(ours, e) for e in range(args.repeats))}
        for w in args.workers:
            dl = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=w)
            rates[f"torchvision DataLoader, {w} workers"] = max(epoch_rate(dl, e) for e in range(args.repeats))
        base = rates["poolarch TensorLoader (batched)"]
        print(f"{title}: {ours.dataset_size} images")
        for name, r in rates.items():
            print(f"  {name:38s} {r:12.0f} images/s   ours/this = {base / r:6.1f}x")


if __name__ == "__main__":
    main()
