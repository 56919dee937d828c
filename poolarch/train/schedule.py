"""Learning-rate schedules as pure functions of the optimiser step.

``lr(step) = base_lr * lr_factor(schedule, step, total_steps, ...)``; the engine applies the
factor to every parameter group before each step, so weights and architecture parameters follow
the same shape of schedule with their own base rates (Jang et al. 2023 Table B: cosine annealing;
appendix A.2: poly with power 0.9 for segmentation).
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["lr_factor"]


def lr_factor(
    schedule: str,
    step: int,
    total_steps: int,
    *,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    power: float = 0.9,
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based) of ``total_steps``.

    * ``cosine``: ``(1 + cos(pi * step / total_steps)) / 2``;
    * ``step``: ``gamma ** (number of milestones <= step)`` (milestones in steps);
    * ``poly``: ``(1 - step / total_steps) ** power``;
    * ``constant``: 1.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    progress = min(max(step, 0), total_steps) / total_steps
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return gamma ** sum(1 for m in milestones if step >= m)
    if schedule == "poly":
        return (1.0 - progress) ** power
    if schedule == "constant":
        return 1.0
    raise ValueError(f"schedule must be one of ['cosine', 'step', 'poly', 'constant'], got {schedule!r}")
