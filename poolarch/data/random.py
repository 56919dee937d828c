"""Dataset "random": uniform random uint8 images and labels, deterministic by seed (smoke tests of
configs on data of the right shape; nothing is learnable).

Sizes: ``limit`` training images (default 256) before the ``val_fraction`` split; 64 test images
(``eval_limit`` caps it). Shape from ``image_size`` (default 32), ``num_classes`` (default 10),
``in_chans`` (default 3).
"""
from __future__ import annotations

import torch

from .bundle import DataBundle, DataOptions, _pair, in_memory_bundle

__all__ = ["random_images", "build_random"]

RANDOM_TRAIN_SIZE, RANDOM_TEST_SIZE = 256, 64


def random_images(n: int, in_chans: int, size: tuple[int, int], num_classes: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(n, in_chans, H, W)`` uniform in 0..255 and int64 labels uniform in 0..num_classes-1."""
    x = torch.randint(0, 256, (n, in_chans, *size), generator=generator, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (n,), generator=generator)
    return x, y


def build_random(opts: DataOptions) -> DataBundle:
    if opts.root is not None:
        raise ValueError("dataset 'random' takes no root (got root=%r)" % (opts.root,))
    num_classes = opts.num_classes or 10
    in_chans = opts.in_chans or 3
    size = _pair(opts.image_size or 32)
    if num_classes < 1 or in_chans < 1 or min(size) < 1:
        raise ValueError(f"dataset 'random' needs num_classes, in_chans, image_size >= 1, got "
                         f"{num_classes}, {in_chans}, {size}")
    g = torch.Generator().manual_seed(opts.seed)
    n_train = opts.limit or RANDOM_TRAIN_SIZE
    train = random_images(n_train, in_chans, size, num_classes, g)
    test = random_images(opts.eval_limit or RANDOM_TEST_SIZE, in_chans, size, num_classes, g)
    # images already have the requested shape: no resize, no channel conversion in the pipeline
    native = DataOptions(**{**opts.__dict__, "image_size": None, "in_chans": None, "num_classes": None,
                            "limit": None})
    return in_memory_bundle("random", train, test, num_classes=num_classes, mean=(0.5,), std=(0.2887,),
                            opts=native, crop_padding=0, flip=False)
