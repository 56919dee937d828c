"""Model registry: ``create_model(name, ...)`` builds any registered network by name.

Builders are thin functions registered with :func:`register_model`; other packages (multi-resolution
nets, supernets, HRNets) register theirs the same way. ``pool="human"`` (the default) builds each
network as its authors designed it; see :mod:`poolarch.layers.factory` for the ``pool`` vocabulary.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from .._registry import Registry
from .._validate import check_int
from ..layers.factory import HUMAN

__all__ = ["MODELS", "register_model", "create_model", "list_models", "ModelBuilder"]

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``fn(num_classes, pool, in_chans, init_scales, **kwargs) -> nn.Module``."""
    return MODELS.register(name)  # type: ignore[return-value]


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return MODELS.names()


def create_model(
    name: str,
    num_classes: int = 10,
    pool: str = HUMAN,
    in_chans: int = 3,
    init_scales: Sequence[Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: one of :func:`list_models`.
        num_classes: outputs of the final fully-connected layer.
        pool: resizing layer (:func:`poolarch.layers.factory.pool_choices`): ``"human"`` (default: the
            network as its authors built it, documented per family), ``"strided"``, ``"max"``,
            ``"avg"``, or a learnable kind (``"dynopool"``, ``"shape_adaptor"``, ``"diffstride"``).
        in_chans: input channels.
        init_scales: optional initial scale per resizing position (learnable pools only).
        **kwargs: model-specific options (e.g. ``width`` for VGG nets).
    """
    builder = MODELS.get(name)
    check_int(num_classes, "num_classes", 1)
    check_int(in_chans, "in_chans", 1)
    return builder(num_classes=num_classes, pool=pool, in_chans=in_chans, init_scales=init_scales, **kwargs)
