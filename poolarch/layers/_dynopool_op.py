"""``poolarch::dynopool2d``: one ``torch.library`` custom op for every 2-d DynOPool backend.

Two operators, both opaque to ``torch.compile`` (it traces them through their fake implementations,
without a graph break):

* ``poolarch::dynopool2d(x, surrogate, out_h, out_w, mode) -> (out, codes)``
* ``poolarch::dynopool2d_backward(grad_out, x, codes, mode, input_grad, size_grad) -> (grad_x, grad_sizes)``

with the autograd formula registered on the first (``register_autograd``). ``surrogate`` is the
straight-through size tensor (value ``== (out_h, out_w)``); it only routes the size gradient, which
reaches ``alpha`` through it.

In eager mode DynOPool layers call the same backends with this op's formula without the op's Python
dispatch (:func:`forward_eager`): one C++ autograd node where the kernel runs, else one Python autograd
function on the PyTorch path.

Backends, chosen per call:

* CPU: the fused C++ kernel (:mod:`._dynopool_ext`) when it is built, enabled (``POOLARCH_DISABLE_EXT``
  unset) and supports the dtype; else the pure-PyTorch path.
* every other device: the pure-PyTorch path (:mod:`._dynopool_torch`). A CUDA/Triton kernel drops in
  as ``dynopool2d.register_kernel("cuda")`` + ``dynopool2d_backward.register_kernel("cuda")``.

``codes`` is whatever the backend saves for its backward: the kernel's int8 winner codes
(``2a + b`` of the winning query point ``(2i+a, 2j+b)``) or the pure-PyTorch path's int64 lattice
indices of ``max_pool2d``, flattened (that path runs NCHW or channels_last depending on the sizes). Its dtype tells the backward which backend made it, so a forward and its
backward always run the same backend (even if ``POOLARCH_DISABLE_EXT`` changes in between).

Output size and fake tensors: the rounded output size depends on the *value* of ``alpha``, so it is
computed outside the op and passed in as the ints ``out_h, out_w`` (see
:func:`poolarch.layers.dynopool.dynopool_output_size`). In eager mode they are Python ints; under
``torch.compile`` they are unbacked SymInts read from ``alpha`` (this needs
``torch._dynamo.config.capture_scalar_outputs = True``), so the compiled graph stays valid when
training moves ``alpha`` across a rounding boundary -- specialising on the current size would
silently keep a stale size, and a data-dependent output shape inside the op would hide the size from
the layers after it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _dynopool_ext, _dynopool_torch

__all__ = [
    "dynopool2d_op",
    "dynopool2d_backward_op",
    "kernel_usable",
    "forward_eager",
    "layer_forward_eager",
    "ran_fused_kernel",
]

_CODES_KERNEL = torch.int8
_CODES_TORCH = torch.int64


def kernel_usable(x: Tensor) -> bool:
    """True when the fused C++ kernel runs for ``x``: a non-empty 4-d CPU tensor of a dtype the kernel
    supports, the extension built and not disabled by ``POOLARCH_DISABLE_EXT``."""
    return (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype in getattr(_dynopool_ext, "_DTYPES", ())
        and x.numel() > 0
        and _dynopool_ext.extension_enabled()
        and _dynopool_ext.extension_available()
    )


def _format(x: Tensor) -> torch.memory_format:
    """channels_last for a channels_last (and not also contiguous) 4-d tensor, else contiguous."""
    return torch.channels_last if _dynopool_torch.is_channels_last(x) else torch.contiguous_format


_TAGS = tuple(getattr(torch.Tag, t) for t in ("needs_exact_strides",) if hasattr(torch.Tag, t))


@torch.library.custom_op("poolarch::dynopool2d", mutates_args=(), tags=_TAGS)
def dynopool2d_op(x: Tensor, surrogate: Tensor, out_h: int, out_w: int, mode: int) -> tuple[Tensor, Tensor]:
    """``x (N,C,H,W) -> (out (N,C,out_h,out_w), codes)``; ``mode`` 0: max, 1: average."""
    return _torch_forward(x, out_h, out_w, mode)


def _torch_forward(x: Tensor, out_h: int, out_w: int, mode: int) -> tuple[Tensor, Tensor]:
    fmt = _format(x)
    out, idx = _dynopool_torch.forward2d(x, (out_h, out_w), mode, need_indices=True)
    return out.contiguous(memory_format=fmt), idx


@dynopool2d_op.register_kernel("cpu")
def _cpu_forward(x: Tensor, surrogate: Tensor, out_h: int, out_w: int, mode: int) -> tuple[Tensor, Tensor]:
    if kernel_usable(x):
        return _dynopool_ext._ops().forward(x, out_h, out_w, mode)
    return _torch_forward(x, out_h, out_w, mode)


@dynopool2d_op.register_fake
def _fake_forward(x: Tensor, surrogate: Tensor, out_h: int, out_w: int, mode: int) -> tuple[Tensor, Tensor]:
    fmt = _format(x)
    kernel = kernel_usable(x)
    codes_dtype = _CODES_KERNEL if kernel else _CODES_TORCH
    out = x.new_empty((x.shape[0], x.shape[1], out_h, out_w)).contiguous(memory_format=fmt)
    if mode == 0 and kernel:
        codes = torch.empty_like(out, dtype=codes_dtype)
    elif mode == 0:  # flat: the PyTorch path picks its internal layout per call
        codes = x.new_empty((x.shape[0] * x.shape[1] * out_h * out_w,), dtype=codes_dtype)
    else:
        codes = x.new_empty((0,), dtype=codes_dtype)
    return out, codes


@torch.library.custom_op("poolarch::dynopool2d_backward", mutates_args=(), tags=_TAGS)
def dynopool2d_backward_op(
    grad_out: Tensor, x: Tensor, codes: Tensor, mode: int, input_grad: bool, size_grad: bool
) -> tuple[Tensor, Tensor]:
    """``(grad_x, grad_sizes)``: ``grad_sizes`` float64 ``(2,)``; ``grad_x`` empty unless ``input_grad``."""
    if codes.dtype == _CODES_KERNEL:
        grad_x, grad_sizes = _dynopool_ext._ops().backward(grad_out, x, codes, mode, input_grad, size_grad)
        if not input_grad:
            grad_x = x.new_empty((0,))
        return grad_x, grad_sizes
    return _torch_backward(grad_out, x, codes, mode, input_grad, size_grad)


def _torch_backward(
    grad_out: Tensor, x: Tensor, codes: Tensor, mode: int, input_grad: bool, size_grad: bool
) -> tuple[Tensor, Tensor]:
    grad_x, grad_sizes = _dynopool_torch.backward2d(grad_out, x, codes, mode, input_grad, size_grad)
    if input_grad:
        grad_x = grad_x.contiguous(memory_format=_format(x))
    return grad_x, grad_sizes


@dynopool2d_backward_op.register_fake
def _fake_backward(grad_out, x, codes, mode, input_grad, size_grad):
    grad_x = torch.empty_like(x) if input_grad else x.new_empty((0,))
    return grad_x, x.new_empty((2,), dtype=torch.float64)


def _setup_context(ctx, inputs, output) -> None:
    x, surrogate, _, _, mode = inputs
    _, codes = output
    ctx.save_for_backward(x, codes)
    # The int8/int64 codes output has no gradient: do not let autograd materialise (allocate and
    # zero-fill) a gradient tensor of its size on every backward.
    ctx.set_materialize_grads(False)
    ctx.mode = mode
    ctx.surrogate_dtype = surrogate.dtype


def _backward(ctx, grad_out: Tensor, grad_codes):
    return _grads(ctx, grad_out, dynopool2d_backward_op)


def _grads(ctx, grad_out: Tensor | None, backward) -> tuple:
    """The op's autograd formula (gradients to ``x`` and the size surrogate) with the saved state of
    :func:`_setup_context`, the backend's gradients computed by ``backward``."""
    x, codes = ctx.saved_tensors
    need_x, need_size = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if grad_out is None or not (need_x or need_size):
        return None, None, None, None, None
    grad_x, grad_sizes = backward(grad_out, x, codes, ctx.mode, need_x, need_size)
    return (
        grad_x if need_x else None,
        grad_sizes.to(ctx.surrogate_dtype) if need_size else None,
        None,
        None,
        None,
    )


dynopool2d_op.register_autograd(_backward, setup_context=_setup_context)


def forward_eager(x: Tensor, surrogate: Tensor, out_h: int, out_w: int, mode: int) -> Tensor | None:
    """``dynopool2d_op(x, surrogate, out_h, out_w, mode)[0]`` in eager mode without the custom op's
    Python dispatch and autograd wrapper (~0.1-0.2 ms per forward + backward, more than the work itself
    on small maps, and on a GPU per call): where the kernel runs for ``x`` (:func:`kernel_usable`), one
    C++ autograd node (``poolarch_dynopool::forward_eager``: the kernel and this op's autograd formula);
    else the PyTorch path as one Python autograd function (:class:`_TorchPathFunction`, any device).
    ``None`` whenever a tracer is active (``torch.compile``, ``torch.jit.trace``, ``torch.export`` see
    the custom op). Same results bit for bit as the custom op (tested).
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    if kernel_usable(x):
        return _dynopool_ext._ops().forward_eager(x, surrogate, out_h, out_w, mode)
    return _TorchPathFunction.apply(x, surrogate, out_h, out_w, mode)


def layer_forward_eager(x: Tensor, alpha: Tensor, min_size: float, mode: int) -> tuple[Tensor, Tensor] | None:
    """``(out, surrogate)`` of a 2-d DynOPool layer in eager mode where the kernel runs for ``x``, from one
    C++ call (``poolarch_dynopool::layer_forward``): the output size and straight-through surrogate of
    :func:`poolarch.layers.dynopool.dynopool_output_size` (the surrogate as one autograd node with the
    same value and gradients bit for bit), then :func:`forward_eager`. Per forward + backward of a
    layer at (1, 64, 4, 4): 288 -> 210 us (``MaxPool2d(2)``: 76 us).

    ``None`` where the caller must run those steps: a tracer is active, the kernel does not run for
    ``x``, ``alpha`` is not two positive finite float32/float64 values in CPU memory (the Python steps
    raise the error), or a size rounds below 1 or beyond the int range.
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or not kernel_usable(x):
        return None
    out, surrogate = _dynopool_ext._ops().layer_forward(x, alpha, min_size, mode)
    return None if out is None else (out, surrogate)


class _TorchPathFunction(torch.autograd.Function):
    """The custom op on the PyTorch path (same forward, same autograd formula), eager only."""

    @staticmethod
    def forward(ctx, x: Tensor, surrogate: Tensor, out_h: int, out_w: int, mode: int) -> Tensor:  # type: ignore[override]
        out, codes = _torch_forward(x, out_h, out_w, mode)
        _setup_context(ctx, (x, surrogate, out_h, out_w, mode), (out, codes))
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor | None):  # type: ignore[override]
        # create_graph=True: the custom backward op, whose outputs carry its autograd (an error on a
        # second backward, as on the custom op's own path) instead of differentiating the formula
        return _grads(ctx, grad_out, dynopool2d_backward_op if torch.is_grad_enabled() else _torch_backward)


def ran_fused_kernel(y: Tensor) -> bool:
    """Whether the fused C++ kernel computed the DynOPool output ``y`` (which must carry its autograd
    node): the eager C++ node, or the custom op with the kernel's int8 winner codes saved (the
    PyTorch path saves int64 indices). For tests and benchmarks."""
    node = y.grad_fn
    if node is None:
        return False
    if "DynOPoolFunction" in node.name():
        return True
    return "poolarch_dynopool2d" in type(node).__name__ and any(t.dtype == _CODES_KERNEL for t in node.saved_tensors)
