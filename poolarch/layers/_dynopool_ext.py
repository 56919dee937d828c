"""Dispatch to a fused DynOPool kernel when one is available (placeholder: none yet)."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor


def fused_dynopool(x: Tensor, surrogate: Tensor, sizes: Sequence[int], aggregation: str) -> Tensor | None:
    """Fused forward/backward for ``x``; ``None`` means: use the reference path."""
    return None
