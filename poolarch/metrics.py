"""Segmentation metrics accumulated over a whole split (not averaged per batch).

The engine sums :func:`confusion_matrix` over every batch of a split (and over DDP ranks); the mean
IoU is computed once from the totals, as the PASCAL VOC benchmark does.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["IGNORE_INDEX", "confusion_matrix", "iou_from_confusion", "mean_iou"]

IGNORE_INDEX = 255  # label of pixels that count nowhere (PASCAL VOC object borders)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``(num_classes, num_classes)`` int64 counts; row = target class, column = predicted class.

    Args:
        pred: predicted labels, any shape, integer.
        target: true labels, same shape; pixels equal to ``ignore_index`` are skipped.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    keep = target != ignore_index
    t = target[keep].long()
    p = pred[keep].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(
            f"target labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}, "
            f"got values in [{int(t.min())}, {int(t.max())}]"
        )
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(matrix: Tensor) -> Tensor:
    """Per-class IoU ``tp / (tp + fp + fn)``; NaN for classes absent from both target and prediction."""
    m = matrix.double()
    tp = m.diagonal()
    union = m.sum(0) + m.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(matrix: Tensor) -> float:
    """Mean IoU in percent over the classes present in target or prediction (NaN if none)."""
    iou = iou_from_confusion(matrix)
    present = ~torch.isnan(iou)
    return float(100.0 * iou[present].mean()) if present.any() else float("nan")
