"""Loaders: an in-memory uint8 tensor loader (small datasets, batched augmentation on the target
device) and a streaming loader (large image folders, a torch DataLoader with workers).

Both are re-iterable, ``len()`` = batches per epoch on this rank, yield ``(x, y)`` with ``x``
float32 normalised ``(N, C, H, W)`` and ``y`` int64 ``(N,)`` on ``device``, and share the sharding:

* ``set_epoch(e)``: the order (and, in memory, the augmentation) of an epoch depends only on
  ``(seed, epoch, rank)``, so a resumed run sees the same batches as an uninterrupted one;
* DDP: rank ``r`` of ``w`` takes the strided slice ``perm[r::w]``. Training loaders (``pad=True``)
  first wrap the permutation around to a multiple of ``w`` (as ``DistributedSampler`` does) so all
  ranks run the same number of steps; evaluation loaders (``pad=False``) see every sample exactly
  once overall (rank sizes differ by at most one sample -- sum the counts, don't average per rank);
* a final training batch of a single sample is folded into the previous batch (BatchNorm cannot
  train on one sample); nothing is dropped.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["shard_indices", "batch_bounds", "TensorLoader", "StreamingLoader", "ShardBatchSampler"]


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (deterministic, no Python hash randomisation)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def shard_indices(n: int, *, epoch: int = 0, seed: int = 0, shuffle: bool = True, rank: int = 0,
                  world_size: int = 1, pad: bool = True) -> Tensor:
    """Indices of ``range(n)`` this rank visits in ``epoch`` (int64, in visiting order)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if shuffle:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch)))
    else:
        perm = torch.arange(n)
    if pad and world_size > 1 and n % world_size:
        total = math.ceil(n / world_size) * world_size
        perm = perm.repeat(math.ceil(total / n))[:total]
    return perm[rank::world_size]


def batch_bounds(m: int, batch_size: int, fold_singleton: bool) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(m)`` in batches of ``batch_size``; a last batch of
    one sample is merged into the previous one when ``fold_singleton``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bounds = [(s, min(s + batch_size, m)) for s in range(0, m, batch_size)]
    if fold_singleton and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2] = (bounds[-2][0], m)
        bounds.pop()
    return bounds


class _ShardedLoader:
    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, rank: int,
                 world_size: int, pad: bool, device: str | torch.device) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset_size = n
        self.batch_size = batch_size
        self.shuffle, self.seed, self.rank, self.world_size, self.pad = shuffle, seed, rank, world_size, pad
        self.device = torch.device(device)
        self.epoch = 0
        shard_indices(0, rank=rank, world_size=world_size)  # validates rank / world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling / augmentation of ``epoch`` (call before iterating)."""
        self.epoch = int(epoch)

    def indices(self) -> Tensor:
        """The sample indices this rank visits in the current epoch."""
        return shard_indices(self.dataset_size, epoch=self.epoch, seed=self.seed, shuffle=self.shuffle,
                             rank=self.rank, world_size=self.world_size, pad=self.pad)

    @property
    def num_samples(self) -> int:
        """Samples this rank visits per epoch."""
        if self.pad and self.world_size > 1:
            return math.ceil(self.dataset_size / self.world_size)
        return len(range(self.rank, self.dataset_size, self.world_size))

    def _bounds(self) -> list[tuple[int, int]]:
        return batch_bounds(self.num_samples, self.batch_size, fold_singleton=self.shuffle)

    def __len__(self) -> int:
        return len(self._bounds())


class TensorLoader(_ShardedLoader):
    """Batches of an in-memory uint8 image tensor, transformed on ``device``.

    Args:
        images: uint8 ``(N, C, H, W)`` (moved to ``device`` once).
        labels: int ``(N,)``.
        transform: ``f(x_float01, generator) -> x`` applied to each batch (variant, augmentation,
            normalisation); ``generator`` is a CPU generator seeded by ``(seed, epoch, rank)``.
        shuffle: reshuffle each epoch (training); also enables singleton folding.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, batch_size: int,
                 transform: Callable[[Tensor, torch.Generator], Tensor], shuffle: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, pad: bool | None = None,
                 device: str | torch.device = "cpu") -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        super().__init__(images.shape[0], batch_size, shuffle=shuffle, seed=seed, rank=rank,
                         world_size=world_size, pad=shuffle if pad is None else pad, device=device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.long)
        self.transform = transform

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        idx = self.indices().to(self.device)
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, self.rank, 1))
        for start, stop in self._bounds():
            b = idx[start:stop]
            x = self.images[b].float().div_(255)
            yield self.transform(x, g), self.labels[b]

    def __repr__(self) -> str:
        return (f"TensorLoader(n={self.dataset_size}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, rank={self.rank}/{self.world_size}, device={self.device})")


class ShardBatchSampler(Sampler[list[int]]):
    """Batch sampler of a :class:`StreamingLoader` (same order and batching as TensorLoader)."""

    def __init__(self, loader: _ShardedLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[list[int]]:
        idx = self.loader.indices().tolist()
        for start, stop in self.loader._bounds():
            yield idx[start:stop]

    def __len__(self) -> int:
        return len(self.loader)


class StreamingLoader(_ShardedLoader):
    """Batches of a map-style dataset of ``(image_tensor, label)`` read by DataLoader workers.

    Workers are started per epoch with seeds derived from ``(seed, epoch, rank)``, so per-sample
    random transforms are reproducible for a given ``num_workers``; with ``num_workers=0`` they
    draw from torch's global RNG (seeded by the engine).
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pad: bool | None = None,
                 device: str | torch.device = "cpu", num_workers: int = 0) -> None:
        super().__init__(len(dataset), batch_size, shuffle=shuffle, seed=seed, rank=rank,
                         world_size=world_size, pad=shuffle if pad is None else pad, device=device)
        self.dataset = dataset
        self.num_workers = num_workers
        self._generator = torch.Generator()
        self._loader = DataLoader(dataset, batch_sampler=ShardBatchSampler(self), num_workers=num_workers,
                                  pin_memory=self.device.type == "cuda", generator=self._generator)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self._generator.manual_seed(_mix(self.seed, self.epoch, self.rank, 2))
        for x, y in self._loader:
            yield (x.to(self.device, non_blocking=True),
                   torch.as_tensor(y, dtype=torch.long).to(self.device, non_blocking=True))

    def __repr__(self) -> str:
        return (f"StreamingLoader(n={self.dataset_size}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, rank={self.rank}/{self.world_size}, "
                f"num_workers={self.num_workers}, device={self.device})")


def subset_list(items: Sequence, idx: Tensor) -> list:
    """``[items[i] for i in idx]``."""
    return [items[i] for i in idx.tolist()]
