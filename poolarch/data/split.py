"""Deterministic train/validation splits (the search methods need a validation stream)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["split_train_val", "SPLIT_SEED"]

SPLIT_SEED = 0
"""Seed of the held-out splits made by :func:`poolarch.data.load_data`: the validation set does not
change with the training seed, so runs with different seeds are evaluated on the same images."""


def _n_val(val_fraction: float, n: int) -> int:
    k = math.floor(val_fraction * n + 0.5)
    return max(k, 1) if (val_fraction > 0 and n >= 2) else k


def split_train_val(
    targets: Sequence[int] | Tensor | int,
    val_fraction: float,
    *,
    seed: int = SPLIT_SEED,
    stratified: bool = True,
) -> tuple[Tensor, Tensor]:
    """Split ``range(N)`` into disjoint ``(train_idx, val_idx)`` (int64, each in random order).

    Args:
        targets: class labels (length N), or N itself (then the split is not stratified).
        val_fraction: fraction of each class (or of all samples) put in validation, in ``[0, 1)``.
        seed: the split depends only on this seed and the targets.
        stratified: take ``round(val_fraction * n_c)`` samples of each class ``c``.

    Rounding is half-up, and a positive fraction holds out at least one sample of every class
    (or group) with two or more samples, so tiny datasets still get a validation stream.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if isinstance(targets, int):
        labels = None
        n = targets
    else:
        labels = torch.as_tensor(targets, dtype=torch.long).flatten()
        n = labels.numel()
    if n < 0:
        raise ValueError(f"targets must be a non-negative size or a label sequence, got {targets}")
    g = torch.Generator().manual_seed(int(seed))
    if labels is None or not stratified:
        perm = torch.randperm(n, generator=g)
        n_val = _n_val(val_fraction, n)
        return perm[n_val:], perm[:n_val]
    train_parts, val_parts = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        n_val = _n_val(val_fraction, idx.numel())
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    train = torch.cat(train_parts) if train_parts else torch.zeros(0, dtype=torch.long)
    val = torch.cat(val_parts) if val_parts else torch.zeros(0, dtype=torch.long)
    # mix the classes: consumers (limit=, in-order eval) take prefixes
    train = train[torch.randperm(train.numel(), generator=g)]
    val = val[torch.randperm(val.numel(), generator=g)]
    return train, val
