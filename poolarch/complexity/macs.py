"""Multiply-accumulate (MAC) counts of any ``nn.Module`` for one input image.

Built on :class:`torch.utils.flop_counter.FlopCounterMode` (``MACs = FLOPs / 2``), which counts
convolutions, linear layers, matmuls and attention. Formulas are added here for the ops it does not
count, and each counted op falls in one *category*:

============  ==============================================================  ===============
category      ops and cost (MACs per output element, unless stated)            in ``total``?
============  ==============================================================  ===============
``matmul``    conv, linear, (b)mm, attention -- FlopCounterMode's own formulas  yes
``resize``    interpolate/upsample: nearest 0 (a gather), (bi/tri)linear          yes
              ``2**ndim`` (one MAC per tap), bicubic ``4**ndim``; antialiased
              resizes widen the taps by the downsampling factor; ``grid_sample``
              likewise (bilinear 4, bicubic 16, nearest 0 in 2-d);
              learnable resizers through :func:`register_macs` (DynOPool below)
``norm``      batch/layer/group/instance norm: 1 (the affine transform)       no
``pool``      max/avg pooling: kernel size; adaptive pooling and spatial      no
              ``mean``: one per input element
============  ==============================================================  ===============

Activations and other element-wise ops (ReLU, add, multiply) cost 0. ``total`` is ``matmul`` +
``resize``: the convolution/linear MACs are what papers (and torchvision's model cards) report,
and the resampling of learnable resizers is what the DynOPool paper (000, Table C) adds to them;
``norm`` and ``pool`` are reported in :attr:`MacCount.by_category` and
:attr:`MacCount.per_module_by_category` only.

DynOPool (any ``ndim``): per output element and channel, ``2**ndim`` lattice points each
bilinearly sampled from ``2**ndim`` taps, then aggregated over the ``2**ndim`` points:
``2**ndim * (2**ndim + 1)`` MACs -- 20 in 2-d. The same cost is charged when the layer is frozen
(:class:`~poolarch.layers.StaticResizePool`) and whether or not the resample is skipped (r = 0.5
on even sizes), so the count is a function of the architecture only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ._trace import CallRecord, ModuleCallTracer, evaluation, first_tensor, unwrap_model

__all__ = [
    "format_gmacs",
    "MacCount",
    "count_macs",
    "current_gmacs",
    "register_macs",
    "macs_formula",
    "trace_macs",
    "make_example_input",
    "TOTAL_CATEGORIES",
    "CATEGORIES",
]

CATEGORIES = ("matmul", "resize", "norm", "pool")
TOTAL_CATEGORIES = ("matmul", "resize")

MacsFn = Callable[[nn.Module, tuple[Any, ...], Any], int]
_MODULE_FORMULAS: dict[type, tuple[MacsFn, str, bool]] = {}


# -- module formulas ---------------------------------------------------------------------------
def register_macs(
    module_type: type, *, category: str = "resize", include_inner: bool = False
) -> Callable[[MacsFn], MacsFn]:
    """Decorator registering ``fn(module, inputs, output) -> MACs`` (per call, for the batch it
    sees; counting runs one image) for ``module_type`` and its subclasses.

    By default the formula is the module's whole cost: ops run inside it are not counted
    (``include_inner=False``); with ``include_inner=True`` the formula is added to them.
    ``category`` must be one of :data:`CATEGORIES`.
    """
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")

    def deco(fn: MacsFn) -> MacsFn:
        if not callable(fn):
            raise TypeError(f"register_macs expects a callable, got {fn!r}")
        _MODULE_FORMULAS[module_type] = (fn, category, include_inner)
        return fn

    return deco


def macs_formula(module: nn.Module) -> tuple[MacsFn, str, bool] | None:
    """The registered formula for ``module``'s type (nearest registered base class), or ``None``."""
    for cls in type(module).__mro__:
        if cls in _MODULE_FORMULAS:
            return _MODULE_FORMULAS[cls]
    return None


def _register_layer_formulas() -> None:
    from ..layers.dynopool import StaticResizePool, _DynOPoolNd

    @register_macs(_DynOPoolNd)
    @register_macs(StaticResizePool)
    def dynopool_macs(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> int:
        ndim = output.dim() - 2
        points = 2**ndim
        return output.numel() * points * (points + 1)

    # Shape Adaptor and DiffStride: formulas documented in their modules.
    from ..layers import diffstride, shape_adaptor

    register_macs(diffstride.DiffStride2d)(diffstride.module_macs)
    register_macs(diffstride.StaticDiffStride2d)(diffstride.module_macs)
    register_macs(shape_adaptor.ShapeAdaptor2d)(shape_adaptor.module_macs)
    register_macs(shape_adaptor.StaticShapeAdaptor2d)(shape_adaptor.module_macs)


# -- aten op formulas (flop counts = 2 * MACs, FlopCounterMode's convention) --------------------
def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def _spatial_ratio(in_shape: Sequence[int], out_shape: Sequence[int], ndim: int) -> list[float]:
    return [max(1.0, int(i) / max(int(o), 1)) for i, o in zip(in_shape[-ndim:], out_shape[-ndim:])]


def _interp(taps_per_axis: float, ndim: int):
    def flops(x_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * _numel(out_shape) * int(round(taps_per_axis**ndim))

    return flops


def _interp_aa(taps_per_axis: float, ndim: int):
    def flops(x_shape, *args, out_shape=None, **kwargs) -> int:
        ratios = _spatial_ratio(x_shape, out_shape, ndim)
        taps = math.prod(math.ceil(taps_per_axis * r) for r in ratios)
        return 2 * _numel(out_shape) * taps

    return flops


def _zero(*args, out_shape=None, **kwargs) -> int:
    return 0


def _grid_sampler(x_shape, grid_shape, interpolation_mode=0, *args, out_shape=None, **kwargs) -> int:
    ndim = len(x_shape) - 2
    taps = {0: 2**ndim, 1: 0, 2: 4**ndim}.get(int(interpolation_mode), 2**ndim)
    return 2 * _numel(out_shape) * taps


def _first_shape(out_shape: Any) -> Sequence[int]:
    """The shape of an op's (first) output: ops like ``native_batch_norm`` return several."""
    if isinstance(out_shape, (tuple, list)) and out_shape and isinstance(out_shape[0], (tuple, list)):
        return out_shape[0]
    return out_shape


def _per_output(*args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(_first_shape(out_shape))


def _pool_window(x_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
    shape = _first_shape(out_shape)
    ndim = len(shape) - 2
    kernel = list(kernel_size) if isinstance(kernel_size, (tuple, list)) else [kernel_size]
    if len(kernel) == 1:
        kernel = kernel * ndim
    return 2 * _numel(shape) * _numel(kernel)


def _per_input(x_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(x_shape)


def _aten_formulas() -> dict[Any, tuple[str, Callable[..., int]]]:
    aten = torch.ops.aten
    table: dict[Any, tuple[str, Callable[..., int]]] = {}

    def add(names: Sequence[str], category: str, fn: Callable[..., int]) -> None:
        for name in names:
            op = getattr(aten, name, None)
            if op is not None:
                table[op] = (category, fn)

    add(["upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
         "_upsample_nearest_exact2d", "_upsample_nearest_exact3d"], "resize", _zero)
    add(["upsample_linear1d"], "resize", _interp(2, 1))
    add(["upsample_bilinear2d"], "resize", _interp(2, 2))
    add(["upsample_trilinear3d"], "resize", _interp(2, 3))
    add(["upsample_bicubic2d"], "resize", _interp(4, 2))
    add(["_upsample_bilinear2d_aa"], "resize", _interp_aa(2, 2))
    add(["_upsample_bicubic2d_aa"], "resize", _interp_aa(4, 2))
    add(["grid_sampler_2d", "grid_sampler_3d", "cudnn_grid_sampler", "_grid_sampler_2d_cpu_fallback"],
        "resize", _grid_sampler)
    add(["native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
         "cudnn_batch_norm", "miopen_batch_norm", "native_layer_norm", "native_group_norm",
         "instance_norm", "_fused_rms_norm", "rms_norm"], "norm", _per_output)
    add(["max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
         "avg_pool1d", "avg_pool2d", "avg_pool3d", "mkldnn_max_pool2d", "mkldnn_max_pool3d"],
        "pool", _pool_window)
    add(["_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool3d",
         "adaptive_max_pool1d", "mean"], "pool", _per_input)
    return table


def _counter(tracer: ModuleCallTracer) -> FlopCounterMode:
    """A FlopCounterMode whose every formula also charges the tracer's innermost module."""
    mapping: dict[Any, Callable[..., int]] = {}

    def charging(category: str, fn: Callable[..., int]) -> Callable[..., int]:
        def counted(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
            flops = int(fn(*args, out_val=out_val, **kwargs))
            out = first_tensor(out_val)
            tracer.add_flops(category, flops, tuple(out.shape[2:]) if out is not None and out.dim() >= 3 else None)
            return flops

        counted._get_raw = True  # type: ignore[attr-defined]  # already takes (args, out_val)
        return counted

    for op, fn in flop_registry.items():  # conv / linear / matmul / attention (already shape-wrapped)
        mapping[op] = charging("matmul", fn)
    for op, (category, fn) in _aten_formulas().items():
        mapping[op] = charging(category, _shape_wrapped(fn))
    return FlopCounterMode(display=False, custom_mapping=mapping)


def _shape_wrapped(fn: Callable[..., int]) -> Callable[..., int]:
    from torch.utils.flop_counter import shape_wrapper

    return shape_wrapper(fn)


# -- public API --------------------------------------------------------------------------------
@dataclass
class MacCount:
    """MACs of a network for one input image.

    Attributes:
        total: MACs in :data:`TOTAL_CATEGORIES` (conv/linear/matmul + resizing), int.
        per_module: module name -> its own (exclusive) MACs counted in ``total``; ``""`` is the
            root module (ops in its own ``forward``). Only modules with MACs appear.
        by_category: category -> MACs, over :data:`CATEGORIES` (``norm``/``pool`` not in ``total``).
        per_module_by_category: module name -> category -> MACs, all categories.
    """

    total: int
    per_module: dict[str, int] = field(default_factory=dict)
    by_category: dict[str, int] = field(default_factory=dict)
    per_module_by_category: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def gmacs(self) -> float:
        """``total`` in GMACs (1e9 MACs)."""
        return self.total / 1e9

    def __str__(self) -> str:
        parts = ", ".join(f"{c}={v / 1e9:.4f}" for c, v in self.by_category.items())
        return f"MacCount(total={self.gmacs:.4f} GMACs; {parts})"


def make_example_input(model: nn.Module, inputs_or_size: Tensor | Sequence[int]) -> Tensor:
    """One-image input for ``model``: the first sample of a tensor, or zeros of a size.

    ``inputs_or_size`` is a tensor ``(N, C, *spatial)``, or a size ``(N, C, H, W)`` / ``(C, H, W)``
    (a 3-tuple always means ``(C, H, W)``; pass a tensor for 1-d models). The tensor is created on
    the device and with the floating dtype of the model's parameters.
    """
    if isinstance(inputs_or_size, Tensor):
        if inputs_or_size.dim() < 2:
            raise ValueError(
                f"inputs_or_size must be a batched tensor (N, C, ...), got shape {tuple(inputs_or_size.shape)}"
            )
        return inputs_or_size[:1]
    if not isinstance(inputs_or_size, (tuple, list, torch.Size)) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in inputs_or_size
    ):
        raise TypeError(
            f"inputs_or_size must be a tensor or a tuple of ints like (1, 3, 224, 224) or (3, 224, 224), "
            f"got {inputs_or_size!r}"
        )
    size = tuple(inputs_or_size)
    if len(size) < 3 or any(s <= 0 for s in size):
        raise ValueError(
            f"inputs_or_size must be (C, H, W) or (N, C, *spatial) with positive entries, got {size}"
        )
    if len(size) == 3:
        size = (1,) + size
    size = (1,) + size[1:]
    device, dtype = torch.device("cpu"), torch.get_default_dtype()
    for tensor in list(model.parameters()) + list(model.buffers()):
        device = tensor.device
        if tensor.is_floating_point():
            dtype = tensor.dtype
            break
    return torch.zeros(size, device=device, dtype=dtype)


def trace_macs(model: nn.Module, example: Tensor) -> list[CallRecord]:
    """Run ``model(example)`` (eval mode, no grad, flags restored) and return every module call
    with its exclusive MACs by category."""
    tracer = ModuleCallTracer(model, module_formula=macs_formula, counting=True)
    with evaluation(model), tracer, _counter(tracer):
        model(example)
    return tracer.records


def count_macs(model: nn.Module, inputs_or_size: Tensor | Sequence[int]) -> MacCount:
    """MACs of ``model`` for one image (see the module docstring for what is counted).

    Args:
        model: any ``nn.Module`` (DDP/DataParallel wrappers are unwrapped); may live on the
            ``meta`` device (then no arithmetic is done), unless a layer needs real values.
        inputs_or_size: an input tensor (only its first sample is run) or a size tuple
            ``(N, C, H, W)`` / ``(C, H, W)``.

    Returns:
        :class:`MacCount`; the model's train/eval flags are unchanged afterwards.
    """
    model = unwrap_model(model)
    example = make_example_input(model, inputs_or_size)
    records = trace_macs(model, example)
    per_module_by_category: dict[str, dict[str, int]] = {}
    by_category = {c: 0 for c in CATEGORIES}
    for record in records:
        if not record.macs:
            continue
        entry = per_module_by_category.setdefault(record.name, {})
        for category, macs in record.macs.items():
            entry[category] = entry.get(category, 0) + macs
            by_category[category] = by_category.get(category, 0) + macs
    per_module = {}
    for name, cats in per_module_by_category.items():
        counted = sum(cats.get(c, 0) for c in TOTAL_CATEGORIES)
        if counted:
            per_module[name] = counted
    total = sum(by_category[c] for c in TOTAL_CATEGORIES)
    return MacCount(total, per_module, by_category, per_module_by_category)


def current_gmacs(model: nn.Module, inputs_or_size: Tensor | Sequence[int]) -> float:
    """GMACs per image of ``model`` as it is now (``count_macs(...).total / 1e9``)."""
    return count_macs(model, inputs_or_size).gmacs


_register_layer_formulas()


def format_gmacs(gmacs: float, digits: int = 4) -> str:
    """GMACs with ``digits`` significant digits in fixed-point notation, so small nets stay
    distinguishable (``0.002581``, ``0.002642``; ``1.310``), never ``0.0026`` for both."""
    value = float(gmacs)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"
