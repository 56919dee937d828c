"""Compute accounting: MAC counts, the differentiable complexity loss (Jang et al. 2023 Eq. 7) and the
feature-map sizes learned by resizing layers.

* :func:`count_macs` / :class:`MacCount` / :func:`register_macs` / :func:`current_gmacs` /
  :func:`format_gmacs` (significant digits) --
  :mod:`poolarch.complexity.macs` (what is counted, and the DynOPool formula, is documented there);
* :class:`ComplexityLoss` -- :mod:`poolarch.complexity.loss`;
* :func:`feature_map_sizes` / :func:`format_sizes` -- :mod:`poolarch.complexity.sizes`;
* :func:`unwrap_model` -- the module inside a ``DistributedDataParallel``/``DataParallel`` wrapper.
"""
from .loss import ComplexityLoss
from .macs import CATEGORIES, TOTAL_CATEGORIES, MacCount, count_macs, current_gmacs, format_gmacs, register_macs
from ._trace import unwrap_model
from .sizes import feature_map_sizes, format_sizes

__all__ = [
    "CATEGORIES",
    "TOTAL_CATEGORIES",
    "ComplexityLoss",
    "MacCount",
    "count_macs",
    "current_gmacs",
    "feature_map_sizes",
    "format_gmacs",
    "format_sizes",
    "register_macs",
    "unwrap_model",
]
