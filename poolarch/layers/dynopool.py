"""DynOPool: dynamically optimised pooling (Jang et al., CVPR 2023, Sec. 4.1).

The layer divides its input into an ``H_out x W_out`` grid with ``H_out = round(max(H_in * r_h, 1.5))``,
samples 4 bilinear query points at +-1/4 cell around every cell centre and aggregates them with
``max`` (or ``avg``). The scale is trained as ``alpha = 1/r`` (Eq. 6); the rounding uses a
straight-through estimator (Eq. 3-4), and the gradient reaches ``alpha`` through the query positions.

Implementation: the query points of all cells form one regular ``2H_out x 2W_out`` lattice whose
points are exactly the pixel centres of an ``align_corners=False`` resize to that size. So the layer
is ``pool2x2(interpolate(x, size=2*out))`` -- separable, no sampling grid -- and at ``r = 0.5`` on
even sizes it *is* ``MaxPool2d(2)``. The gradient with respect to the lattice coordinates is
attached by :class:`_LatticeGrad`, an identity in the forward pass. That reference path serves 1,
2 and 3 spatial axes; 1-d and 3-d layers run it.

2-d layers run one ``torch.library`` custom op, ``poolarch::dynopool2d`` (:mod:`._dynopool_op`), so
``torch.compile`` traces them without a graph break: on CPU the fused C++ kernel
(:mod:`._dynopool_ext`), elsewhere -- or with ``POOLARCH_DISABLE_EXT=1`` -- the fast pure-PyTorch path
(:mod:`._dynopool_torch`: two small interpolation matmuls and one 2x2 max). In eager mode the layers
call the same backend with the op's formula without the op's Python dispatch: the kernel through one
C++ autograd node, the PyTorch path through one Python autograd function
(:func:`._dynopool_op.forward_eager`: same results bit for bit, a fraction of the per-call cost).
Where the kernel runs, the output size and its straight-through surrogate come from the same C++ call
(:func:`._dynopool_op.layer_forward_eager`).

Scale gradient at kinks (every path): where a lattice point lies exactly on a pixel centre, the slope
is the mean of the two one-sided slopes (the gradient averaged over an infinitesimal jitter of the
scale), decided exactly on integers; see :mod:`._dynopool_torch`.
"""
from __future__ import annotations

import functools
import math
import struct
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _dynopool_torch
from .base import LearnableResize, check_nonempty, check_positive_finite, shape_repr, to_tuple

__all__ = [
    "dynopool",
    "dynopool1d",
    "dynopool2d",
    "dynopool3d",
    "dynopool_output_size",
    "DynOPool1d",
    "DynOPool2d",
    "DynOPool3d",
    "StaticResizePool",
    "AGGREGATIONS",
]

AGGREGATIONS = ("max", "avg")
_INTERP_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}
_MODES = {"max": 0, "avg": 1}


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def _check_input(x: Tensor, ndim: int) -> None:
    """``TypeError``/``ValueError`` unless ``x`` is a ``(N, C, *spatial)`` tensor with ``ndim``
    spatial axes. TorchScript compiles it (no f-strings), so scripted frozen models check too."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim + 2:
        axes = ", ".join([axis for axis in "DHW"[3 - ndim:]])
        raise ValueError(
            "input must have " + str(ndim + 2) + " dimensions (N, C, " + axes + ") for "
            + str(ndim) + "-d DynOPool, got shape " + shape_repr(x.shape)
        )
    check_nonempty(x, str(ndim) + "-d DynOPool")


def dynopool_output_size(
    in_size: Sequence[int], alpha: Tensor, min_size: float = 1.5
) -> tuple[Tensor, tuple[int, ...]]:
    """Output size of DynOPool for spatial ``in_size`` and ``alpha = 1/r`` (shape ``(ndim,)``).

    Returns ``(surrogate, sizes)``: ``sizes`` are the rounded integer sizes used in the forward
    pass; ``surrogate`` is a float tensor whose *value* equals ``sizes`` and whose *gradient* is that
    of the continuous ``max(in_size / alpha, min_size)`` (straight-through estimator).
    """
    compiling = torch.compiler.is_compiling()
    if not compiling:  # under torch.compile the values are symbolic: no Python-level check
        alpha_values = alpha.detach().tolist()
        check_positive_finite(alpha_values, "alpha")
        fast = _output_size_eager(in_size, alpha, alpha_values, min_size)
        if fast is not None:
            return fast
    in_t = torch.tensor(list(in_size), dtype=alpha.dtype, device=alpha.device)
    continuous = torch.clamp(in_t / alpha, min=min_size)
    detached = continuous.detach()
    rounded = torch.floor(detached + 0.5)
    # value: exactly `rounded` (rounded is 0 or within a factor 2 of continuous, so the difference is
    # exact (Sterbenz) and so is the sum); gradient: that of `continuous`
    surrogate = continuous + (rounded - detached)
    if compiling:
        # Unbacked SymInts (needs torch._dynamo.config.capture_scalar_outputs): the compiled graph
        # stays right when alpha crosses a rounding boundary. They are >= round(min_size) >= 1.
        sizes = tuple(rounded.to(torch.int64).tolist())
        for v in sizes:
            torch._check(v >= max(1, int(math.floor(min_size + 0.5))))
        return surrogate, sizes
    sizes = tuple(int(v) for v in rounded.tolist())
    return surrogate, sizes


_ROUND_TO_DTYPE = {
    torch.float32: lambda v: struct.unpack("f", struct.pack("f", v))[0],
    torch.float64: float,
}
"""Rounding of a Python float (an IEEE double) to the dtypes whose arithmetic Python reproduces
exactly: a +, - or / of two float32 values computed in double and then rounded to float32 is the
correctly rounded float32 result (double rounding is innocuous: 53 >= 2 * 24 + 2 bits)."""


@functools.lru_cache(maxsize=64)
def _in_size_tensor(in_size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``in_size`` as a tensor, cached (never an inference tensor: it is saved for alpha's backward)."""
    with torch.inference_mode(False):
        return torch.tensor(list(in_size), dtype=dtype, device=device)


def _output_size_eager(
    in_size: Sequence[int], alpha: Tensor, alpha_values: Sequence[float], min_size: float
) -> tuple[Tensor, tuple[int, ...]] | None:
    """:func:`dynopool_output_size` in eager mode for float32/float64 ``alpha`` (else ``None``): the
    rounding is done on Python floats that reproduce the tensor arithmetic bit for bit (tested), and
    the graph is ``in_size / alpha (+ clamp only where it binds or touches) + constant``: two autograd
    nodes instead of three and half the tensor ops. Per forward + backward that saves ~0.07 ms (more
    with cold caches after a large kernel), more than the kernel's own time on small maps."""
    to_dtype = _ROUND_TO_DTYPE.get(alpha.dtype)
    if to_dtype is None:
        return None
    try:
        continuous = [to_dtype(length / a) for length, a in zip(in_size, alpha_values)]
        lower = to_dtype(min_size)
        rounded = [math.floor(to_dtype(max(v, lower) + 0.5)) for v in continuous]
    except OverflowError:  # beyond float32's range: the tensor path
        return None
    value = _in_size_tensor(tuple(int(n) for n in in_size), alpha.dtype, alpha.device) / alpha
    if any(v <= lower for v in continuous):  # the clamp binds or touches (its gradient is 1 above it)
        value = torch.clamp(value, min=min_size)
        continuous = [max(v, lower) for v in continuous]
    # rounded - continuous is exact (Sterbenz, as in the tensor path), and so is the sum
    shift = torch.tensor([r - v for r, v in zip(rounded, continuous)], dtype=alpha.dtype, device=alpha.device)
    return value + shift, tuple(rounded)


class _LatticeGrad(torch.autograd.Function):
    """Identity on the resampled lattice ``z``; its backward adds the gradient of the loss with
    respect to the continuous output sizes (through the lattice coordinates)."""

    @staticmethod
    def forward(ctx, z: Tensor, x: Tensor, sizes: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, sizes)
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad_z: Tensor):  # type: ignore[override]
        x, sizes = ctx.saved_tensors
        grad_sizes = None
        if ctx.needs_input_grad[2]:
            grad_sizes = _lattice_size_grad(x, grad_z, sizes)
        return grad_z, None, grad_sizes


def _lattice_size_grad(x: Tensor, grad_z: Tensor, sizes: Tensor) -> Tensor:
    """d loss / d (continuous output size) for every spatial axis, shape ``(ndim,)``.

    Lattice point ``k`` of axis ``d`` sits at source coordinate
    ``u_k = (k + 1/2) * L_in / (2 s) - 1/2`` (``s`` the continuous output size), so
    ``du_k/ds = -(k + 1/2) L_in / (2 s^2)``; ``dz/du_k`` is the difference of the two taps of the
    input resampled along every other axis (the mean of both sides at a kink). Both are the rows of
    the axis matrix ``D`` of :func:`._dynopool_torch.axis_matrices`, applied along axis ``d``.
    """
    ndim = x.dim() - 2
    in_size = x.shape[2:]
    lattice = grad_z.shape[2:]
    mode = _INTERP_MODE[ndim]
    grads = []
    for d in range(ndim):
        other = list(lattice)
        other[d] = in_size[d]
        if tuple(other) == tuple(in_size):
            along_others = x
        else:
            along_others = F.interpolate(x, size=tuple(other), mode=mode, align_corners=False)
        D = _dynopool_torch.axis_matrices(in_size[d], lattice[d] // 2, torch.float64, x.device)[2]
        slope = torch.matmul(D, along_others.double().movedim(2 + d, -1).unsqueeze(-1)).squeeze(-1)
        grads.append((grad_z.double().movedim(2 + d, -1) * slope).sum())
    return torch.stack(grads).to(sizes.dtype)


def dynopool(
    x: Tensor,
    alpha: Tensor,
    aggregation: str = "max",
    min_size: float = 1.5,
) -> Tensor:
    """DynOPool over the trailing ``ndim = alpha.numel()`` spatial axes of ``x``.

    Args:
        x: ``(N, C, *spatial)`` input, ``len(spatial) == alpha.numel()``.
        alpha: inverse scales ``1/r`` per spatial axis, shape ``(ndim,)``; positive and finite.
        aggregation: ``"max"`` (paper) or ``"avg"`` over the 4 (2^ndim) query points of a cell.
        min_size: lower bound of the continuous output size before rounding (paper: 1.5, so every
            output axis has at least 2 cells).

    Returns:
        ``(N, C, *out)`` with ``out = round(max(spatial / alpha, min_size))``.
    """
    _check_aggregation(aggregation)
    if not isinstance(alpha, Tensor):
        raise TypeError(f"alpha must be a torch.Tensor, got {type(alpha).__name__}")
    ndim = alpha.numel()
    if ndim not in _INTERP_MODE:
        raise ValueError(f"alpha must have 1, 2 or 3 elements (one per spatial axis), got {ndim}")
    _check_input(x, ndim)
    return _forward(x, alpha.reshape(-1), aggregation, min_size)[0]


def _forward(x: Tensor, alpha: Tensor, aggregation: str, min_size: float) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """``(out, surrogate, sizes)`` of DynOPool on a checked ``x`` with ``alpha`` of shape ``(ndim,)``:
    :func:`dynopool_output_size`, then :func:`_dispatch`; 2-d in eager mode where the kernel runs, both
    in one C++ call (:func:`._dynopool_op.layer_forward_eager`, same results bit for bit)."""
    if x.dim() == 4:
        from . import _dynopool_op  # local import: it imports the extension module

        fused = _dynopool_op.layer_forward_eager(x, alpha, min_size, _MODES[aggregation])
        if fused is not None:
            out, surrogate = fused
            return out, surrogate, (out.shape[2], out.shape[3])
    surrogate, sizes = dynopool_output_size(x.shape[2:], alpha, min_size)
    return _dispatch(x, surrogate, sizes, aggregation), surrogate, sizes


def _dispatch(x: Tensor, surrogate: Tensor, sizes: Sequence[int], aggregation: str) -> Tensor:
    """2-d: the custom op ``poolarch::dynopool2d`` (in eager mode the same backend and formula without
    the op's dispatch, :func:`._dynopool_op.forward_eager`); 1-d/3-d: the reference path."""
    if x.dim() == 4:
        from . import _dynopool_op  # local import: it imports the extension module

        mode = _MODES[aggregation]
        out = _dynopool_op.forward_eager(x, surrogate, sizes[0], sizes[1], mode)
        if out is None:
            out = _dynopool_op.dynopool2d_op(x, surrogate, sizes[0], sizes[1], mode)[0]
        return out
    return _resample_and_pool(x, surrogate, sizes, aggregation)


def _lattice_resize(x: Tensor, sizes: List[int]) -> Tensor:
    """Resize the spatial axes of ``x`` to the query lattice ``2 * sizes`` (TorchScript-able)."""
    ndim = x.dim() - 2
    lattice = [2 * s for s in sizes]
    if list(x.shape[2:]) == lattice:
        return x
    mode = "linear" if ndim == 1 else ("bilinear" if ndim == 2 else "trilinear")
    return F.interpolate(x, size=lattice, mode=mode, align_corners=False)


def _pool_cells(z: Tensor, aggregation: str) -> Tensor:
    """Max/avg over the ``2^ndim`` query points of every lattice cell (TorchScript-able)."""
    ndim = z.dim() - 2
    if aggregation == "max":
        if ndim == 1:
            return F.max_pool1d(z, 2)
        if ndim == 2:
            return F.max_pool2d(z, 2)
        return F.max_pool3d(z, 2)
    if ndim == 1:
        return F.avg_pool1d(z, 2)
    if ndim == 2:
        return F.avg_pool2d(z, 2)
    return F.avg_pool3d(z, 2)


def _resample_and_pool(x: Tensor, surrogate: Tensor | None, sizes: Sequence[int], aggregation: str) -> Tensor:
    """Reference path: lattice resize (``2 * sizes``) then ``2^ndim`` max/avg pooling."""
    z = _lattice_resize(x, [int(s) for s in sizes])
    if surrogate is not None and surrogate.requires_grad:
        z = _LatticeGrad.apply(z, x, surrogate)
    return _pool_cells(z, aggregation)


def dynopool1d(x: Tensor, alpha: Tensor, aggregation: str = "max", min_size: float = 1.5) -> Tensor:
    """DynOPool on ``(N, C, L)``; ``alpha`` shape ``(1,)``."""
    return dynopool(x, alpha.reshape(1), aggregation, min_size)


def dynopool2d(x: Tensor, alpha: Tensor, aggregation: str = "max", min_size: float = 1.5) -> Tensor:
    """DynOPool on ``(N, C, H, W)``; ``alpha = (1/r_h, 1/r_w)`` shape ``(2,)``."""
    return dynopool(x, alpha.reshape(2), aggregation, min_size)


def dynopool3d(x: Tensor, alpha: Tensor, aggregation: str = "max", min_size: float = 1.5) -> Tensor:
    """DynOPool on ``(N, C, D, H, W)``; ``alpha`` shape ``(3,)``."""
    return dynopool(x, alpha.reshape(3), aggregation, min_size)


class _DynOPoolNd(LearnableResize):
    """Learnable-scale pooling; see :func:`dynopool`. Subclasses fix ``ndim``.

    ``init_scale`` may be any positive finite scale (``r > 1`` upsamples): the layer itself has no
    cap. Training caps it: :class:`poolarch.train.TrainConfig` refuses ``init_scales`` above its
    ``max_scale`` (default 2.0), and the ``dynopool`` method clamps every scale to ``max_scale``
    after each step (:meth:`clamp_scale_`).
    """

    def __init__(
        self,
        init_scale: float | Sequence[float] = 0.5,
        aggregation: str = "max",
        min_size: float = 1.5,
        share_scale_with: "_DynOPoolNd | None" = None,
    ) -> None:
        super().__init__()
        _check_aggregation(aggregation)
        if not (isinstance(min_size, (int, float)) and min_size > 0):
            raise ValueError(f"min_size must be a number > 0, got {min_size!r}")
        self.aggregation = aggregation
        self.min_size = float(min_size)
        if share_scale_with is not None:
            if not isinstance(share_scale_with, _DynOPoolNd) or share_scale_with.ndim != self.ndim:
                raise TypeError(
                    f"share_scale_with must be a DynOPool{self.ndim}d, got {type(share_scale_with).__name__}"
                )
            self.alpha = share_scale_with.alpha
        else:
            scales = to_tuple(init_scale, self.ndim, "init_scale")
            check_positive_finite(scales, "init_scale")
            self.alpha = nn.Parameter(torch.tensor([1.0 / s for s in scales]))

    @property
    def scale(self) -> Tensor:
        """``r = 1 / alpha`` per spatial axis, shape ``(ndim,)``."""
        return 1.0 / self.alpha

    def set_scale(self, scale: Sequence[float]) -> None:
        scales = to_tuple(tuple(float(v) for v in scale), self.ndim, "scale")
        check_positive_finite(scales, "scale")
        with torch.no_grad():
            self.alpha.copy_(torch.tensor([1.0 / s for s in scales], dtype=self.alpha.dtype))

    def clamp_scale_(self, max_scale: float) -> None:
        """``alpha >= 1 / max_scale`` in place (``r = 1/alpha <= max_scale``, and ``alpha`` stays positive)."""
        check_positive_finite((float(max_scale),), "max_scale")
        with torch.no_grad():
            self.alpha.clamp_(min=1.0 / max_scale)

    def rescale_(self, factor: float) -> None:
        """``r <- factor * r``, i.e. ``alpha <- alpha / factor``, in place."""
        check_positive_finite((float(factor),), "factor")
        with torch.no_grad():
            self.alpha.div_(factor)

    def output_size(self, in_size: Sequence[int]) -> tuple[int, ...]:
        return dynopool_output_size(in_size, self.alpha.detach(), self.min_size)[1]

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.ndim)
        out, surrogate, sizes = _forward(x, self.alpha, self.aggregation, self.min_size)
        self.last_in_size = tuple(x.shape[2:])
        self.last_out_size = sizes
        self.last_size_surrogate = surrogate
        return out

    def to_static(self) -> "StaticResizePool":
        if self.last_out_size is None:
            raise RuntimeError("the output size is not known yet: run a forward pass first, or freeze(model, example_input=x)")
        return StaticResizePool(self.last_out_size, self.aggregation)

    def extra_repr(self) -> str:
        r = ", ".join(f"{v:.3f}" for v in self.scale.detach().tolist())
        text = f"scale=({r}), aggregation={self.aggregation}"
        if self.last_in_size is not None:
            text += f", last={self.last_in_size}->{self.last_out_size}"
        return text


class DynOPool1d(_DynOPoolNd):
    """DynOPool over ``(N, C, L)`` (temporal pooling)."""

    ndim = 1


class DynOPool2d(_DynOPoolNd):
    """DynOPool over ``(N, C, H, W)``. ``init_scale`` 0.5 reproduces ``MaxPool2d(2)`` on even sizes."""

    ndim = 2


class DynOPool3d(_DynOPoolNd):
    """DynOPool over ``(N, C, D, H, W)`` (volumetric pooling)."""

    ndim = 3


@torch.jit.unused
def _fused_static(x: Tensor, sizes: List[int], aggregation: str) -> Optional[Tensor]:
    """2-d eager: the custom op for a fixed output size; ``None`` (the reference path of plain aten
    ops, which exporters know) for 1-d/3-d and under tracing, torch.export, ONNX or torch.compile."""
    if x.dim() != 4 or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    return _dispatch(x, x.new_zeros((2,)), sizes, aggregation)


class StaticResizePool(nn.Module):
    """A frozen DynOPool: resize to the fixed lattice ``2 * out_size`` and pool ``2^ndim`` cells.

    No parameters and no data-dependent shapes, so it exports with ``torch.export``, TorchScript
    (``torch.jit.script``) and ONNX.
    """

    def __init__(self, out_size: Sequence[int], aggregation: str = "max") -> None:
        super().__init__()
        _check_aggregation(aggregation)
        self.out_size = tuple(int(s) for s in out_size)
        if not all(s >= 1 for s in self.out_size):
            raise ValueError(f"out_size must be positive integers, got {out_size!r}")
        self.aggregation = aggregation

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, len(self.out_size))
        sizes = [s for s in self.out_size]
        if not torch.jit.is_scripting():
            fused = _fused_static(x, sizes, self.aggregation)
            if fused is not None:
                return fused
        return _pool_cells(_lattice_resize(x, sizes), self.aggregation)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, aggregation={self.aggregation}"
