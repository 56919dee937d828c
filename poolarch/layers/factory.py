"""The ``pool`` vocabulary and the registry of resizing layers, so models take the layer choice at
construction (``pool=``).

What ``pool`` may name (this module is the one place these words are defined):

* a **learnable** kind -- a registered layer with a trainable scale (:func:`learnable_pools`:
  ``"dynopool"``, ``"shape_adaptor"``, ``"diffstride"``);
* a **fixed** kind -- a parameter-free pooling layer (:data:`FIXED_POOLS`: ``"max"``, ``"avg"``);
* :data:`STRIDED` (``"strided"``) -- no resizing layer: the convolution itself strides;
* :data:`HUMAN` (``"human"``) -- the architecture as its authors built it (each model family's
  docstring says which of the above that is, e.g. max-pooling for VGG, strided convs for ResNet).

:func:`make_pool` builds the registered kinds (learnable and fixed). A builder receives the stride
the human-designed network uses at that place and returns a module that shrinks a
``(N, C, H, W)`` map by that factor at initialisation::

    make_pool("dynopool", stride=2)             # DynOPool2d(init_scale=0.5)
    make_pool("dynopool", stride=2, init_scale=(0.6, 0.4))
    make_pool("max", stride=2)                  # nn.MaxPool2d(2)

``share_with`` makes the new layer reuse the scale parameter of an existing learnable layer of the
same kind (branches that must agree, e.g. a residual shortcut and its main path).

A kind may also have a *residual form* (:func:`make_residual_pool`, registered with
:func:`register_residual_pool`): one module ``forward(shortcut, main)`` that replaces the sum of a
downsampling residual block, mixing the block's strided shortcut (the ``1/stride`` branch) with its
main path run at stride 1 -- Shape Adaptor's ResNets (Liu et al. 2020). Zoo residual blocks and
:func:`poolarch.convert` use it instead of two resizers sharing a scale when the kind has one.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

from torch import nn

from .._registry import Registry
from .base import to_pair
from .dynopool import DynOPool2d

__all__ = [
    "POOLS",
    "FIXED_POOLS",
    "STRIDED",
    "HUMAN",
    "register_pool",
    "make_pool",
    "list_pools",
    "learnable_pools",
    "pool_choices",
    "check_pool",
    "resolve_pool",
    "register_residual_pool",
    "make_residual_pool",
    "has_residual_form",
]


class PoolBuilder(Protocol):
    def __call__(
        self,
        stride: tuple[int, int],
        init_scale: tuple[float, float] | None,
        channels: int | None,
        share_with: nn.Module | None,
    ) -> nn.Module: ...


class ResidualPoolBuilder(Protocol):
    def __call__(self, stride: tuple[int, int], init_scale: tuple[float, float] | None) -> nn.Module: ...


POOLS: Registry[PoolBuilder] = Registry("pool")
RESIDUAL_POOLS: Registry[ResidualPoolBuilder] = Registry("residual pool")
FIXED_POOLS = ("max", "avg")  # parameter-free pooling layers
STRIDED = "strided"  # no resizing layer: the convolution itself strides
HUMAN = "human"  # the architecture as its authors built it (per family: one of the words above)


def register_pool(name: str) -> Callable[[PoolBuilder], PoolBuilder]:
    """Decorator registering a pool builder under ``name``."""
    return POOLS.register(name)  # type: ignore[return-value]


def register_residual_pool(name: str) -> Callable[[ResidualPoolBuilder], ResidualPoolBuilder]:
    """Decorator registering the residual form of the pool kind ``name`` (see the module doc)."""
    return RESIDUAL_POOLS.register(name)  # type: ignore[return-value]


def has_residual_form(kind: str) -> bool:
    """Whether :func:`make_residual_pool` builds a residual form of ``kind``."""
    return kind in RESIDUAL_POOLS


def make_residual_pool(
    kind: str, stride: int | Sequence[int] = 2, *, init_scale: float | Sequence[float] | None = None
) -> nn.Module:
    """The residual form of ``kind`` for a block downsampling by ``stride``: a module
    ``forward(shortcut, main) -> Tensor`` replacing ``main + shortcut``, where ``shortcut`` is the
    block's strided shortcut (``1/stride`` of the input size) and ``main`` its main path at stride 1.
    It starts at scale ``1/stride`` (or ``init_scale``). ``ValueError`` when ``kind`` has none
    (:func:`has_residual_form`)."""
    if kind not in RESIDUAL_POOLS:
        raise ValueError(f"pool {kind!r} has no residual form; kinds with one: {RESIDUAL_POOLS.names()}")
    stride_pair = tuple(int(s) for s in to_pair(stride, "stride"))
    if any(s < 1 for s in stride_pair):
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    scale_pair = None if init_scale is None else to_pair(init_scale, "init_scale")
    return RESIDUAL_POOLS.get(kind)(stride_pair, scale_pair)  # type: ignore[arg-type]


def list_pools() -> list[str]:
    """Kinds :func:`make_pool` builds (fixed and learnable; models also accept ``"strided"`` and
    ``"human"``, see :func:`pool_choices`).

    Layer modules register themselves on import; ``poolarch.layers`` imports all of them."""
    return POOLS.names()


def learnable_pools() -> list[str]:
    """Registered kinds with a trainable scale (every registered kind that is not fixed)."""
    return [k for k in POOLS.names() if k not in FIXED_POOLS]


def pool_choices() -> list[str]:
    """Every value a model's ``pool=`` accepts: ``"human"``, ``"strided"`` and the registered kinds."""
    return [HUMAN, STRIDED, *POOLS.names()]


def check_pool(pool: str, allowed: Sequence[str] | None = None) -> str:
    """``pool`` if it is in ``allowed`` (default :func:`pool_choices`), else ``ValueError`` naming them."""
    allowed = list(allowed) if allowed is not None else pool_choices()
    if not isinstance(pool, str) or pool not in allowed:
        raise ValueError(f"pool must be one of {allowed}, got {pool!r}")
    return pool


def resolve_pool(pool: str, human: str, allowed: Sequence[str] | None = None) -> str:
    """The concrete kind ``pool`` stands for in a family whose authors resize with ``human``:
    ``human`` for ``"human"``, ``pool`` itself otherwise. ``pool`` must be ``"human"`` or in
    ``allowed`` (default :func:`pool_choices`); ``ValueError`` naming the allowed values otherwise."""
    allowed = [k for k in (allowed if allowed is not None else pool_choices()) if k != HUMAN]
    check_pool(pool, [HUMAN, *allowed])
    return human if pool == HUMAN else pool


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
    builder = POOLS.get(kind)
    stride_pair = tuple(int(s) for s in to_pair(stride, "stride"))
    if any(s < 1 for s in stride_pair):
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    scale_pair = None if init_scale is None else to_pair(init_scale, "init_scale")
    return builder(stride_pair, scale_pair, channels, share_with)  # type: ignore[arg-type]


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
