"""``DataBundle`` and the two ways to build one: in memory (uint8 tensors) and streaming (files)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from .images import read_image
from .loader import StreamingLoader, TensorLoader
from .split import split_train_val
from .transforms import BatchAugment, Normalize, PerSample, Variant, make_variant

__all__ = ["DataBundle", "DataOptions", "BatchPipeline", "convert_channels", "in_memory_bundle",
           "streaming_bundle", "split_for_validation"]

Loader = Any  # TensorLoader | StreamingLoader


@dataclass
class DataBundle:
    """What :func:`poolarch.data.load_data` returns.

    ``train``/``val``/``test`` yield ``(x float32 normalised (N, C, H, W), y int64 (N,))``;
    ``val`` is ``None`` only when ``val_fraction == 0`` and the dataset has no official
    validation split. ``image_size`` is the ``(H, W)`` the network sees (after the variant).
    """

    train: Loader
    val: Loader | None
    test: Loader
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    task: str = "classification"
    name: str = ""
    variant: str | None = None
    classes: list[str] = field(default_factory=list)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def loaders(self) -> dict[str, Loader]:
        """The non-empty loaders by split name."""
        return {k: v for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v is not None}

    def set_epoch(self, epoch: int) -> None:
        """``set_epoch`` on every loader."""
        for loader in self.loaders().values():
            loader.set_epoch(epoch)


@dataclass
class DataOptions:
    """The load_data arguments every dataset builder receives."""

    root: str | None = None
    variant: str | None = None
    batch_size: int = 128
    eval_batch_size: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    device: str | torch.device = "cpu"
    limit: int | None = None
    eval_limit: int | None = None
    image_size: int | Sequence[int] | None = None
    num_classes: int | None = None
    in_chans: int | None = None
    augment: bool = True
    num_workers: int | None = None

    @property
    def eval_bs(self) -> int:
        return self.eval_batch_size or self.batch_size


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (H, W), got {size}")
    return size  # type: ignore[return-value]


def convert_channels(x: Tensor, in_chans: int) -> Tensor:
    """1 -> k channels by repetition, 3 -> 1 by ITU-R 601 luma; identity if already ``in_chans``."""
    c = x.shape[-3]
    if c == in_chans:
        return x
    if c == 1:
        return x.expand(*x.shape[:-3], in_chans, *x.shape[-2:])
    if c == 3 and in_chans == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(-3, keepdim=True)
    raise ValueError(f"in_chans={in_chans} is not reachable from {c}-channel images; allowed: {c}, "
                     + ("any k >= 1" if c == 1 else "1"))


class ConvertChannels(nn.Module):
    """Module form of :func:`convert_channels` (picklable for DataLoader workers)."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.in_chans = in_chans

    def forward(self, x: Tensor) -> Tensor:
        return convert_channels(x, self.in_chans)

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}"


def _stats_for(mean: Sequence[float], std: Sequence[float], in_chans: int) -> tuple[tuple, tuple]:
    if len(mean) == in_chans:
        return tuple(mean), tuple(std)
    if len(mean) == 1:
        return tuple(mean) * in_chans, tuple(std) * in_chans
    gray = (sum(mean) / len(mean),), (sum(std) / len(std),)
    return gray


class BatchPipeline(nn.Module):
    """Float ``[0, 1]`` batch -> network input: channels, resize to ``resize_to`` (bilinear),
    variant, augmentation (training only), normalisation."""

    def __init__(self, *, in_chans: int, resize_to: tuple[int, int] | None, variant: Variant,
                 augment: BatchAugment | None, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.in_chans, self.resize_to = in_chans, resize_to
        self.variant, self.augment, self.normalize = variant, augment, Normalize(mean, std)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = convert_channels(x, self.in_chans)
        if self.resize_to is not None and tuple(x.shape[-2:]) != self.resize_to:
            x = F.interpolate(x, size=self.resize_to, mode="bilinear", align_corners=False, antialias=True)
        x = self.variant(x, generator)
        if self.augment is not None:
            x = self.augment(x, generator)
        return self.normalize(x)

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, resize_to={self.resize_to}"


def _check_classes(num_classes: int | None, actual: int, name: str) -> None:
    if num_classes is not None and num_classes != actual:
        raise ValueError(f"num_classes={num_classes} does not match dataset {name!r}, which has {actual} classes")


def split_for_validation(labels: Tensor | Sequence[int], opts: DataOptions) -> tuple[Tensor, Tensor | None]:
    """``(train_idx, val_idx)`` of a training set by ``opts.val_fraction`` (val None if 0);
    ``opts.limit`` caps the training part."""
    if opts.val_fraction:
        tr, va = split_train_val(labels, opts.val_fraction)
    else:
        tr, va = split_train_val(labels, 0.0)
        va = None
    if va is not None and opts.eval_limit is not None:
        va = va[: opts.eval_limit]
    if opts.limit is not None:
        if opts.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {opts.limit}")
        tr = tr[: opts.limit]
    return tr, va


def in_memory_bundle(name: str, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *,
                     num_classes: int, mean: Sequence[float], std: Sequence[float], opts: DataOptions,
                     crop_padding: int, flip: bool, classes: Sequence[str] = (),
                     val: tuple[Tensor, Tensor] | None = None) -> DataBundle:
    """Bundle of uint8 ``(N, C, H, W)`` tensors. ``val=None``: split off ``opts.val_fraction`` of
    ``train`` (stratified, fixed seed)."""
    _check_classes(opts.num_classes, num_classes, name)
    native_c = train[0].shape[1]
    in_chans = opts.in_chans or native_c
    convert_channels(torch.zeros(1, native_c, 1, 1), in_chans)  # validates in_chans
    mean, std = _stats_for(mean, std, in_chans)
    base = tuple(train[0].shape[-2:]) if opts.image_size is None else _pair(opts.image_size)
    variant = make_variant(opts.variant)
    image_size = variant.output_size(base)
    resize = None if opts.image_size is None else base

    x, y = train
    if val is None:
        tr, va = split_for_validation(y, opts)
        val = None if va is None else (x[va], y[va])
        x, y = x[tr], y[tr]
    elif opts.limit is not None:
        x, y = x[: opts.limit], y[: opts.limit]
    if opts.eval_limit is not None:
        test = (test[0][: opts.eval_limit], test[1][: opts.eval_limit])

    def pipeline(train_mode: bool) -> BatchPipeline:
        v = make_variant(opts.variant).train(train_mode)
        aug = BatchAugment(crop_padding, flip) if (train_mode and opts.augment) else None
        return BatchPipeline(in_chans=in_chans, resize_to=resize, variant=v, augment=aug, mean=mean, std=std)

    def loader(data: tuple[Tensor, Tensor], train_mode: bool) -> TensorLoader:
        return TensorLoader(data[0], data[1], batch_size=opts.batch_size if train_mode else opts.eval_bs,
                            transform=pipeline(train_mode), shuffle=train_mode, seed=opts.seed,
                            rank=opts.rank, world_size=opts.world_size, device=opts.device)

    return DataBundle(train=loader((x, y), True), val=None if val is None else loader(val, False),
                      test=loader(test, False), num_classes=num_classes, in_chans=in_chans,
                      image_size=image_size, name=name, variant=opts.variant, classes=list(classes),
                      mean=mean, std=std)


class FileListDataset(Dataset):
    """``(path, label)`` pairs read with PIL (RGB) and transformed per sample."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: nn.Module | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.samples[i]
        img = read_image(path)
        return (self.transform(img) if self.transform is not None else img), label


def streaming_transform(image_size: tuple[int, int], train: bool, *, variant: str | None, in_chans: int,
                        mean: Sequence[float], std: Sequence[float], augment: bool) -> nn.Module:
    """Per-sample torchvision pipeline: RandomResizedCrop + flip (train) or resize to
    ``size/0.875`` + centre crop (eval); then tensor, channels, variant, normalisation."""
    from torchvision import transforms as T

    if train and augment:
        steps = [T.RandomResizedCrop(image_size, antialias=True), T.RandomHorizontalFlip()]
    else:
        short = round(min(image_size) / 0.875)
        steps = [T.Resize(short, antialias=True), T.CenterCrop(image_size)]
    steps.append(T.ToTensor())
    if in_chans != 3:
        steps.append(ConvertChannels(in_chans))
    if variant is not None:
        steps.append(PerSample(make_variant(variant).train(train)))
    steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


def streaming_bundle(name: str, train: Sequence[tuple[str, int]], test: Sequence[tuple[str, int]], *,
                     num_classes: int, opts: DataOptions, classes: Sequence[str] = (),
                     val: Sequence[tuple[str, int]] | None = None,
                     mean: Sequence[float] = (0.485, 0.456, 0.406),
                     std: Sequence[float] = (0.229, 0.224, 0.225), default_size: int = 224) -> DataBundle:
    """Bundle of image files ``(path, label)``; ``val=None``: split off ``opts.val_fraction``."""
    import os

    _check_classes(opts.num_classes, num_classes, name)
    in_chans = opts.in_chans or 3
    convert_channels(torch.zeros(1, 3, 1, 1), in_chans)
    mean, std = _stats_for(mean, std, in_chans)
    base = _pair(opts.image_size or default_size)
    image_size = make_variant(opts.variant).output_size(base)
    train = list(train)
    if val is None:
        tr, va = split_for_validation([lbl for _, lbl in train], opts)
        val = None if va is None else [train[i] for i in va.tolist()]
        train = [train[i] for i in tr.tolist()]
    else:
        train = train[: opts.limit] if opts.limit is not None else train
        val = val[: opts.eval_limit] if opts.eval_limit is not None else val
    test = list(test)[: opts.eval_limit] if opts.eval_limit is not None else list(test)
    workers = opts.num_workers
    if workers is None:
        workers = min(8, max(1, (os.cpu_count() or 1) - 1))

    def loader(samples: Sequence[tuple[str, int]], train_mode: bool) -> StreamingLoader:
        tf = streaming_transform(base, train_mode, variant=opts.variant, in_chans=in_chans, mean=mean,
                                 std=std, augment=opts.augment)
        return StreamingLoader(FileListDataset(samples, tf),
                               batch_size=opts.batch_size if train_mode else opts.eval_bs,
                               shuffle=train_mode, seed=opts.seed, rank=opts.rank,
                               world_size=opts.world_size, device=opts.device, num_workers=workers)

    return DataBundle(train=loader(train, True), val=None if val is None else loader(val, False),
                      test=loader(test, False), num_classes=num_classes, in_chans=in_chans,
                      image_size=image_size, name=name, variant=opts.variant, classes=list(classes),
                      mean=mean, std=std)
