"""Single Path One-Shot with uniform sampling (Guo et al. 2020; Javan et al. 2023 Sec. 2.2, Eq. 1).

Every step trains one configuration drawn uniformly; with several weight sets the weight set is
drawn uniformly too (an unbalanced-free "uniform mixture" ablation). After training every
configuration is evaluated with the supernet's weights.
"""
from __future__ import annotations

from ..base import register_method
from .base import SamplingSearchMethod

__all__ = ["SPOS"]


@register_method("spos")
class SPOS(SamplingSearchMethod):
    """Uniform single-path sampling (see :class:`~poolarch.methods.search.base.SamplingSearchMethod`)."""

    multiple_weight_sets = True  # the "uniform mixture" ablation

    def sample(self) -> tuple[int, int]:
        return int(self.rng.integers(len(self.configs))), int(self.rng.integers(self.num_models))

    def best_weight_set(self, config_index: int) -> int:
        """The weight set with the best moving-average accuracy for this configuration."""
        return int(self.accuracy[config_index].argmax())
