"""Segmentation metrics accumulated over a whole split (not averaged per batch).

``ConfusionMatrix`` counts ``(target, prediction)`` pairs over every labelled pixel of a split;
mean IoU is computed once from the totals, as the PASCAL VOC benchmark does. In DDP the matrices
of all ranks are summed (:meth:`ConfusionMatrix.all_reduce`) before the IoU is taken.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["ConfusionMatrix", "confusion_matrix", "iou_from_confusion"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
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


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches of logits or labels."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, output: Tensor, target: Tensor) -> None:
        """``output``: logits ``(N, K, H, W)`` or labels ``(N, H, W)``; ``target``: ``(N, H, W)``."""
        pred = output.argmax(1) if output.dim() == target.dim() + 1 else output
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index).cpu()

    def all_reduce(self) -> None:
        """Sum the matrices of every rank (no-op outside ``torch.distributed``)."""
        if dist.is_available() and dist.is_initialized():
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            m = self.matrix.to(device)
            dist.all_reduce(m)
            self.matrix = m.cpu()

    def miou(self) -> float:
        """Mean IoU over classes present in target or prediction, in [0, 1]."""
        iou = iou_from_confusion(self.matrix)
        present = ~torch.isnan(iou)
        return float(iou[present].mean()) if present.any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.matrix.diagonal().sum()) / total if total else float("nan")
