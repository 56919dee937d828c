"""Tasks: what the engine optimises and reports, independent of the method.

A task provides the loss of a batch and a metric accumulated over a whole split. Accumulators keep
their state in one tensor, so the engine can sum it across DDP ranks before computing the metric.

* ``classification``: cross-entropy, top-1 accuracy (%);
* ``segmentation``: cross-entropy ignoring label 255, mIoU (%) from the confusion matrix of the
  whole split (not an average of per-batch IoUs; :func:`poolarch.metrics.confusion_matrix` and
  :func:`poolarch.metrics.mean_iou`); logits are resized bilinearly to the mask size. Labels other
  than 255 outside ``[0, num_classes)`` raise ``ValueError``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._registry import Registry
from ..metrics import IGNORE_INDEX, confusion_matrix, mean_iou

__all__ = [
    "Task",
    "TASKS",
    "ClassificationTask",
    "SegmentationTask",
    "MetricAccumulator",
    "create_task",
    "list_tasks",
    "confusion_matrix",
    "mean_iou",
]



class MetricAccumulator:
    """Sums a state tensor over batches; :meth:`compute` turns it into the metric."""

    def __init__(self, state: Tensor, compute: Callable[[Tensor], float], update: Callable[[Tensor, Tensor], Tensor]):
        self.state = state
        self._compute = compute
        self._update = update

    def update(self, output: Tensor, target: Tensor) -> None:
        self.state += self._update(output.detach(), target).to(self.state)

    def compute(self) -> float:
        return self._compute(self.state)


class Task:
    """Interface: ``loss(output, target)`` and ``accumulator(num_classes)``; ``metric`` names it."""

    name = "task"
    metric = "metric"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def accumulator(self, num_classes: int) -> MetricAccumulator:
        raise NotImplementedError


class ClassificationTask(Task):
    name = "classification"
    metric = "top1"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.float(), target)

    def accumulator(self, num_classes: int) -> MetricAccumulator:
        def update(output: Tensor, target: Tensor) -> Tensor:
            correct = (output.argmax(dim=1) == target).sum()
            return torch.stack([correct.double(), torch.tensor(float(target.numel()), dtype=torch.float64)])

        def compute(state: Tensor) -> float:
            return float(100.0 * state[0] / state[1]) if state[1] > 0 else float("nan")

        return MetricAccumulator(torch.zeros(2, dtype=torch.float64), compute, update)


class SegmentationTask(Task):
    name = "segmentation"
    metric = "miou"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        output = _resize_logits(output, target)
        return F.cross_entropy(output.float(), target, ignore_index=IGNORE_INDEX)

    def accumulator(self, num_classes: int) -> MetricAccumulator:
        def update(output: Tensor, target: Tensor) -> Tensor:
            prediction = _resize_logits(output, target).argmax(dim=1)
            return confusion_matrix(prediction, target, num_classes, ignore_index=IGNORE_INDEX).double()

        return MetricAccumulator(torch.zeros(num_classes, num_classes, dtype=torch.float64), mean_iou, update)


def _resize_logits(output: Tensor, target: Tensor) -> Tensor:
    if output.shape[-2:] != target.shape[-2:]:
        output = F.interpolate(output.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    return output


TASKS: Registry[type[Task]] = Registry("task")
TASKS.register("classification", ClassificationTask)
TASKS.register("segmentation", SegmentationTask)


def list_tasks() -> list[str]:
    """Names accepted by :func:`create_task`."""
    return TASKS.names()


def create_task(name: str) -> Task:
    """The task registered as ``name``."""
    return TASKS.get(name)()
