"""Registry of resizing layers, so models take the layer choice at construction (``pool=``).

A builder receives the stride the human-designed network uses at that place and returns a module
that shrinks a ``(N, C, H, W)`` map by that factor at initialisation::

    make_pool("dynopool", stride=2)             # DynOPool2d(init_scale=0.5)
    make_pool("dynopool", stride=2, init_scale=(0.6, 0.4))
    make_pool("max", stride=2)                  # nn.MaxPool2d(2)

``share_with`` makes the new layer reuse the scale parameter of an existing learnable layer of the
same kind (branches that must agree, e.g. a residual shortcut and its main path).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

from torch import nn

from .base import to_pair
from .dynopool import DynOPool2d

__all__ = ["register_pool", "make_pool", "list_pools", "FIXED_POOLS"]


class PoolBuilder(Protocol):
    def __call__(
        self,
        stride: tuple[int, int],
        init_scale: tuple[float, float] | None,
        channels: int | None,
        share_with: nn.Module | None,
    ) -> nn.Module: ...


_POOLS: dict[str, PoolBuilder] = {}
FIXED_POOLS = ("max", "avg")


def register_pool(name: str) -> Callable[[PoolBuilder], PoolBuilder]:
    """Decorator registering a pool builder under ``name``."""

    def deco(fn: PoolBuilder) -> PoolBuilder:
        if name in _POOLS:
            raise ValueError(f"pool {name!r} is already registered")
        _POOLS[name] = fn
        return fn

    return deco


def list_pools() -> list[str]:
    """Names accepted by :func:`make_pool` (the zoo adds ``"strided"``: resizing by the conv).

    Layer modules register themselves on import; ``poolarch.layers`` imports all of them."""
    return sorted(_POOLS)


def make_pool(
    kind: str,
    stride: int | Sequence[int] = 2,
    *,
    init_scale: float | Sequence[float] | None = None,
    channels: int | None = None,
    share_with: nn.Module | None = None,
) -> nn.Module:
    """Build the resizing layer ``kind`` replacing a ``stride``-``stride`` downsampling.

    Args:
        kind: one of :func:`list_pools`.
        stride: the fixed stride it stands for; learnable layers start at scale ``1/stride``.
        init_scale: overrides the initial scale (learnable kinds only).
        channels: number of channels of the map (needed by some layers, ignored by others).
        share_with: an existing layer of the same kind whose scale is shared.
    """
    if kind not in _POOLS:
        raise ValueError(f"pool must be one of {sorted(_POOLS)}, got {kind!r}")
    stride_pair = tuple(int(s) for s in to_pair(stride, "stride"))
    if any(s < 1 for s in stride_pair):
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    scale_pair = None if init_scale is None else to_pair(init_scale, "init_scale")
    return _POOLS[kind](stride_pair, scale_pair, channels, share_with)  # type: ignore[arg-type]


@register_pool("max")
def _max(stride, init_scale, channels, share_with):
    _reject_scale("max", init_scale, share_with)
    return nn.MaxPool2d(kernel_size=stride, stride=stride)


@register_pool("avg")
def _avg(stride, init_scale, channels, share_with):
    _reject_scale("avg", init_scale, share_with)
    return nn.AvgPool2d(kernel_size=stride, stride=stride)


@register_pool("dynopool")
def _dynopool(stride, init_scale, channels, share_with):
    scale = init_scale if init_scale is not None else (1.0 / stride[0], 1.0 / stride[1])
    return DynOPool2d(init_scale=scale, share_scale_with=share_with)


def _reject_scale(kind: str, init_scale, share_with) -> None:
    if init_scale is not None or share_with is not None:
        raise ValueError(f"pool {kind!r} is fixed: init_scale and share_with are not allowed")
