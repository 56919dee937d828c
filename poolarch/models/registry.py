"""Model registry: ``create_model(name, ...)`` builds any registered network by name.

Builders are thin functions registered with :func:`register_model`; other packages (multi-resolution
nets, supernets, HRNets) register theirs the same way, declaring the input size the network was
designed for (``input_size=32`` for CIFAR nets); :func:`create_model` sets it on the model as
``model.default_input_size`` ``(H, W)``, which :func:`poolarch.train.build.check_input_size` reads
(a model without it, e.g. one a user built: size unknown). ``pool="human"`` (the default) builds each
network as its authors designed it; see :mod:`poolarch.layers.factory` for the ``pool`` vocabulary.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from .._registry import Registry
from .._validate import check_int
from ..layers.factory import HUMAN

__all__ = ["MODELS", "register_model", "create_model", "list_models", "model_input_size", "ModelBuilder"]

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")
_INPUT_SIZES: dict[str, tuple[int, int]] = {}  # registered name -> nominal (H, W)


def register_model(name: str, *,
                   input_size: int | Sequence[int] | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``fn(num_classes, pool, in_chans, init_scales, **kwargs) -> nn.Module``.

    ``input_size``: the input the network was designed for, ``S`` or ``(H, W)`` (32 for CIFAR nets,
    28 for MNIST, 224 for ImageNet); ``None``: unknown."""
    size = None
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(size) != 2:
            raise ValueError(f"input_size must be an int or (H, W), got {input_size!r}")
        size = tuple(check_int(s, "input_size", 1) for s in size)
    add = MODELS.register(name)

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        add(builder)  # type: ignore[operator]
        if size is not None:
            _INPUT_SIZES[name] = size
        return builder

    return decorate


def model_input_size(name: str) -> tuple[int, int] | None:
    """The nominal ``(H, W)`` declared when ``name`` was registered (``None``: not declared);
    ``ValueError`` for an unknown name."""
    MODELS.get(name)
    return _INPUT_SIZES.get(name)


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

    The model carries its nominal input size as ``default_input_size`` (``(H, W)``) when its
    registration declared one (:func:`model_input_size`).
    """
    builder = MODELS.get(name)
    check_int(num_classes, "num_classes", 1)
    check_int(in_chans, "in_chans", 1)
    model = builder(num_classes=num_classes, pool=pool, in_chans=in_chans, init_scales=init_scales, **kwargs)
    if name in _INPUT_SIZES:
        model.default_input_size = _INPUT_SIZES[name]
    return model
