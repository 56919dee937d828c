"""The contract every learnable resizing layer in poolarch fulfils.

A *learnable resizer* maps a feature map of spatial size ``in_size`` to one of size
``out_size ~= in_size * scale`` where ``scale`` (``r`` in the DynOPool paper) is learned.
Everything that reasons about learned downsampling -- :class:`poolarch.complexity.ComplexityLoss`,
:func:`poolarch.convert.freeze`, the reports -- talks to resizers only through this interface, so
DynOPool, Shape Adaptor and DiffStride are interchangeable.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch import Tensor, nn

from .._validate import check_positive_finite  # noqa: F401  (re-exported for the layers)

__all__ = ["LearnableResize", "learnable_resizers", "architecture_parameters", "to_pair", "check_nonempty"]


def to_tuple(value: float | Sequence[float], ndim: int, name: str) -> tuple[float, ...]:
    """Broadcast a float or a sequence of ``ndim`` floats to a tuple; raises ``ValueError``/``TypeError``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = (float(value),) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == ndim:
        values = tuple(float(v) for v in value)
    elif isinstance(value, Tensor) and value.numel() in (1, ndim):
        values = tuple(float(v) for v in value.detach().flatten().expand(ndim))
    else:
        raise TypeError(f"{name} must be a float or a sequence of {ndim} floats, got {value!r}")
    return values


def to_pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    return to_tuple(value, 2, name)  # type: ignore[return-value]


def shape_repr(shape: List[int]) -> str:
    """``str(tuple(shape))``, written so TorchScript compiles it (error messages of static layers)."""
    text = ", ".join([str(s) for s in shape])
    if len(shape) == 1:
        text += ","
    return "(" + text + ")"


def check_nonempty(x: Tensor, layer: str, name: str = "input") -> None:
    """``ValueError`` naming the shape when ``x`` (``(N, C, *spatial)``) has no channel or a spatial
    size 0; ``N = 0`` (an empty batch) is allowed and gives an empty output. TorchScript compiles it."""
    if x.dim() < 3:
        return
    empty = x.shape[1] < 1  # the batch axis is never read: exporters keep it dynamic
    for size in x.shape[2:]:
        empty = empty or size < 1
    if empty:
        raise ValueError(
            name + " of " + layer + " has shape " + shape_repr(x.shape) + ": the channels C and every spatial "
            "size must be >= 1 (only the batch N may be 0)"
        )


class LearnableResize(nn.Module):
    """Base class of layers whose output size is learned.

    Subclasses implement :meth:`scale` and record, on every forward call,
    ``last_in_size`` / ``last_out_size`` (tuples of ints, one per spatial axis) and
    ``last_size_surrogate`` (float tensor of the continuous output sizes, carrying gradient to the
    layer's architecture parameters; its value may differ from ``last_out_size`` by the rounding).

    Attributes:
        ndim: number of spatial axes (1, 2 or 3).
    """

    ndim: int = 2

    def __init__(self) -> None:
        super().__init__()
        self.last_in_size: tuple[int, ...] | None = None
        self.last_out_size: tuple[int, ...] | None = None
        self.last_size_surrogate: Tensor | None = None

    def scale(self) -> Tensor:
        """Current continuous scale ``r`` per spatial axis, shape ``(ndim,)``, differentiable."""
        raise NotImplementedError

    def set_scale(self, scale: Sequence[float]) -> None:
        """Set the architecture parameters so that :attr:`scale` equals ``scale`` (one ``r`` per
        axis); :func:`poolarch.apply_architecture` rebuilds learned networks with it."""
        raise NotImplementedError(f"{type(self).__name__} does not define set_scale(scale)")

    def clamp_scale_(self, max_scale: float) -> None:
        """Project the architecture parameters in place so that every scale ``r <= max_scale``
        (called after optimiser steps, so one large gradient cannot blow a map up). Layers whose
        parametrisation bounds the scale below ``max_scale`` leave their parameters alone."""
        raise NotImplementedError(f"{type(self).__name__} does not define clamp_scale_(max_scale)")

    def rescale_(self, factor: float) -> None:
        """Multiply every scale ``r`` by ``factor > 0`` in place (the GMACs budget's projection)."""
        raise NotImplementedError(f"{type(self).__name__} cannot rescale its scale (rescale_)")

    def output_size(self, in_size: Sequence[int]) -> tuple[int, ...]:
        """Integer output size this layer produces for an input of spatial size ``in_size``."""
        raise NotImplementedError

    def to_static(self) -> nn.Module:
        """A parameter-free module that resizes exactly like this layer does now, at the last
        output size (used by :func:`poolarch.freeze`)."""
        raise NotImplementedError

    def arch_parameters(self) -> list[nn.Parameter]:
        """Parameters that define the architecture (trained with the scale learning rate,
        no weight decay). Default: every parameter of the layer."""
        return list(self.parameters())


def learnable_resizers(model: nn.Module) -> list[tuple[str, LearnableResize]]:
    """Every :class:`LearnableResize` in ``model`` in registration order (shared modules once)."""
    seen: set[int] = set()
    out = []
    for name, module in model.named_modules():
        if isinstance(module, LearnableResize) and id(module) not in seen:
            seen.add(id(module))
            out.append((name, module))
    return out


def architecture_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Unique architecture parameters of ``model``: those returned by ``arch_parameters()`` of
    every submodule that defines it (learnable resizers, multi-resolution mixing weights, ...)."""
    seen: set[int] = set()
    params: list[nn.Parameter] = []
    for module in model.modules():
        getter = getattr(module, "arch_parameters", None)
        if not callable(getter):
            continue
        for p in getter():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params
