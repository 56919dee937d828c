"""How zoo models build their resizing layers from ``pool=`` and ``init_scales=``.

Every zoo model has a fixed, ordered list of *resizing positions* (the places where the human
design halves the map). :class:`ResizePlan` hands out, position by position, either nothing
(``pool="strided"``: the convolution strides) or the layer :func:`poolarch.layers.make_pool`
builds, with the per-position initial scale. ``pool="human"`` is replaced by the family's own
choice (``human=``) first. A residual block asks :attr:`ResizePlan.residual` whether the kind has a
residual form (Shape Adaptor) and then takes one :meth:`ResizePlan.make_residual` module instead of
two resizers sharing a scale.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..layers.base import LearnableResize
from ..layers.factory import FIXED_POOLS, STRIDED, has_residual_form, make_pool, make_residual_pool, resolve_pool

__all__ = ["ResizePlan", "STRIDED"]

ScaleSpec = float | Sequence[float] | None


class ResizePlan:
    """Builds the resizing layers of one model, in position order.

    Args:
        pool: ``"human"``, ``"strided"`` or a kind of :func:`poolarch.layers.list_pools`.
        init_scales: ``None`` (every position starts at ``1/stride``), one number (every
            position), or one entry per resizing position: a float, an ``(r_h, r_w)`` pair, or
            ``None`` for the default.
        num_positions: how many resizing positions the model has.
        human: what ``"human"`` means for this family (``"strided"`` or ``"max"``).

    Attributes:
        pool: the concrete kind (never ``"human"``).
    """

    def __init__(self, pool: str, init_scales: Sequence[ScaleSpec] | None, num_positions: int,
                 human: str = STRIDED) -> None:
        self.pool = resolve_pool(pool, human)
        if isinstance(init_scales, (int, float)) and not isinstance(init_scales, bool):
            init_scales = [init_scales] * num_positions  # one number: every position
        if init_scales is not None:
            if isinstance(init_scales, (str, bytes)) or not isinstance(init_scales, Sequence):
                raise TypeError(f"init_scales must be a sequence of {num_positions} scales, got {init_scales!r}")
            if len(init_scales) != num_positions:
                raise ValueError(
                    f"init_scales must have one entry per resizing position ({num_positions}), "
                    f"got {len(init_scales)}"
                )
            if self.pool == STRIDED or self.pool in FIXED_POOLS:
                raise ValueError(f"init_scales needs a learnable pool (e.g. 'dynopool'), got pool={pool!r}")
        self.init_scales = list(init_scales) if init_scales is not None else [None] * num_positions
        self.num_positions = num_positions

    @property
    def strided(self) -> bool:
        """True when the convolutions themselves stride (no separate resizing layer)."""
        return self.pool == STRIDED

    def make(
        self, position: int, stride: int = 2, channels: int | None = None, share_with: nn.Module | None = None
    ) -> nn.Module:
        """The resizing layer at ``position``; ``share_with`` shares the scale of a learnable layer
        (ignored for fixed pools, which have none)."""
        if not 0 <= position < self.num_positions:
            raise ValueError(f"position must be in [0, {self.num_positions}), got {position}")
        if self.strided:
            raise ValueError("pool='strided' has no separate resizing layer")
        if share_with is not None and not isinstance(share_with, LearnableResize):
            share_with = None
        return make_pool(
            self.pool, stride, init_scale=self.init_scales[position], channels=channels, share_with=share_with
        )

    @property
    def residual(self) -> bool:
        """True when the kind has a residual form (:func:`poolarch.layers.make_residual_pool`): a
        downsampling residual block then mixes its strided shortcut and its stride-1 main path with
        one :meth:`make_residual` module."""
        return has_residual_form(self.pool)

    def make_residual(self, position: int, stride: int = 2) -> nn.Module:
        """The residual form of the kind at ``position`` (``forward(shortcut, main)``)."""
        if not 0 <= position < self.num_positions:
            raise ValueError(f"position must be in [0, {self.num_positions}), got {position}")
        return make_residual_pool(self.pool, stride, init_scale=self.init_scales[position])
