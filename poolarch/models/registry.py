"""Model registry: ``create_model(name, ...)`` builds any registered network by name.

Builders are thin functions registered with :func:`register_model`; other packages (multi-resolution
nets, supernets, HRNets) register theirs the same way.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "ModelBuilder"]

ModelBuilder = Callable[..., nn.Module]
_MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``fn(num_classes, pool, in_chans, init_scales, **kwargs) -> nn.Module``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")

    def deco(fn: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_MODELS)


def create_model(
    name: str,
    num_classes: int = 10,
    pool: str = "max",
    in_chans: int = 3,
    init_scales: Sequence[Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: one of :func:`list_models`.
        num_classes: outputs of the final fully-connected layer.
        pool: resizing layer: ``"max" | "avg" | "strided" | "dynopool"`` or any kind registered in
            :mod:`poolarch.layers.factory` (``"shape_adaptor"``, ``"diffstride"``).
        in_chans: input channels.
        init_scales: optional initial scale per resizing position (learnable pools only).
        **kwargs: model-specific options (e.g. ``width`` for VGG nets).
    """
    if name not in _MODELS:
        raise ValueError(f"name must be one of {list_models()}, got {name!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
    return _MODELS[name](num_classes=num_classes, pool=pool, in_chans=in_chans, init_scales=init_scales, **kwargs)
