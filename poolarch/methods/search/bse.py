"""Boltzmann softmax exploration (Javan et al. 2023, app. C, Eq. 7).

``p(c) = softmax(kappa * a_c)`` with ``a_c`` the moving-average validation accuracy of
configuration ``c`` and ``kappa`` the inverse temperature, increased linearly from
``inv_temp_start`` (1) to ``inv_temp_end`` over the run; optionally uniform sampling during the
first ``warmup`` fraction of training ("+ Unif. Smp." in Table 2).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..base import register_method
from .base import SamplingSearchMethod
from .mixture import linear_schedule

__all__ = ["BoltzmannExploration"]


@register_method("bse")
class BoltzmannExploration(SamplingSearchMethod):
    """Args (besides :class:`SamplingSearchMethod`'s): ``inv_temp_start``, ``inv_temp_end``,
    ``warmup`` (fraction of training with uniform sampling, in [0, 1])."""

    def __init__(self, inv_temp_start: float = 1.0, inv_temp_end: float = 100.0, warmup: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= warmup <= 1.0:
            raise ValueError(f"warmup must be a fraction in [0, 1], got {warmup}")
        if inv_temp_start < 0 or inv_temp_end < 0:
            raise ValueError(f"inv_temp_start and inv_temp_end must be >= 0, got {inv_temp_start}, {inv_temp_end}")
        self.inv_temp_start = float(inv_temp_start)
        self.inv_temp_end = float(inv_temp_end)
        self.warmup = float(warmup)

    @property
    def needs_schedule(self) -> bool:
        return True

    @property
    def inverse_temperature(self) -> float:
        return linear_schedule(self.inv_temp_start, self.inv_temp_end, self.progress)

    def probabilities(self) -> np.ndarray:
        """``p(c)`` (C,): uniform during warm-up, else ``softmax(kappa * a_c)``."""
        if self.progress < self.warmup:
            return np.full(len(self.configs), 1.0 / len(self.configs))
        logits = self.inverse_temperature * self.accuracy[:, 0]
        logits = logits - logits.max()
        weights = np.exp(logits)
        return weights / weights.sum()

    def sample(self) -> tuple[int, int]:
        p = self.probabilities()
        c = int(np.searchsorted(np.cumsum(p), self.rng.random(), side="right"))
        return min(c, len(self.configs) - 1), 0
