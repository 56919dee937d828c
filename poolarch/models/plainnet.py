"""The 10-layer, 64-channel Conv-ReLU-BN network of the multi-resolution-block paper (WACV submission 832) ("CNNs without pooling or fixed
filter sizes", Sec. 4.2), with configurable pooling positions.

``pool="human"`` (the default) is ``"max"``: the paper's "predefined pooling" baseline halves the
map with 2x2 max-pooling after the chosen layers (as its multi-resolution blocks pool with max).
"""
from __future__ import annotations

from typing import Sequence

from ..layers.factory import HUMAN
from .registry import register_model
from .vgg import ConvStageNet

__all__ = ["plainnet10", "plain_stages"]


def plain_stages(depth: int, channels: int, pool_after: Sequence[int]) -> list[list[int]]:
    """Group ``depth`` layers of ``channels`` into stages split after the 1-based layers ``pool_after``."""
    cuts = sorted(int(p) for p in pool_after)
    if len(set(cuts)) != len(cuts) or any(not 1 <= p < depth for p in cuts):
        raise ValueError(f"pool_after must be distinct layer indices in [1, {depth - 1}], got {tuple(pool_after)}")
    bounds = [0, *cuts, depth]
    return [[channels] * (bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)]


@register_model("plainnet10", input_size=32)
def plainnet10(
    num_classes: int = 10,
    pool: str = HUMAN,
    in_chans: int = 3,
    init_scales=None,
    pool_after: Sequence[int] = (3, 6, 8),
    channels: int = 64,
    depth: int = 10,
):
    """``depth`` Conv(3x3)-ReLU-BN layers of ``channels``; a resizing after each layer in ``pool_after``
    (default: maps 32-16-8-4 for layers 1-3, 4-6, 7-8, 9-10), GAP + FC."""
    stages = plain_stages(depth, channels, pool_after)
    return ConvStageNet(stages, num_classes, pool, in_chans, init_scales, order="conv-relu-bn", human="max")
