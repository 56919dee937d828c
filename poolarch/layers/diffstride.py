"""DiffStride: spectral pooling with learnable strides (Riad et al., ICLR 2022).

The layer takes the 2-D DFT of its input, multiplies it by a separable *adaptive-span* mask
(Sukhbaatar et al., 2019) around the low-frequency window of half-size ``T = H / (2 S_h)`` rows
and ``W / (2 S_w)`` columns, crops, and transforms back. Along one axis, for the signed integer
frequency ``k`` (``torch.fft.fftfreq`` convention)::

    mask(k) = clamp((R + T - |k|) / R, 0, 1)          # 1 inside the window, a ramp of width R outside

``R`` is the smoothness (paper: 4). The strides receive their gradient through the ramp
(``d mask / d S = -H / (2 R S^2)`` on the ramp, 0 elsewhere).

Two crops (``crop=``):

* ``"window"`` (default): the output has the window size ``round(H / S)`` (at least 2, at most
  ``H``), so ``scale = 1/S`` exactly as for the other learnable resizers. Every kept frequency
  ``k`` is placed at ``k mod H_out``: the output is the *masked, band-limited signal sampled on the
  ``H_out`` grid* (sample ``a`` sits at input position ``a * H / H_out``). Frequencies inside the
  window pass unchanged; the ramp band (``T < |k| < T + R``) is attenuated by the mask and folds
  into the window -- this is how its content, and therefore the stride gradient, reaches the output.
* ``"support"``: the authors' crop -- the output is ``2 ceil(T + R)`` long (capped at ``H``; e.g.
  24 for ``H = 32, S = 2, R = 4``, and 40x24 for a 64x64 map with strides ``(2, 4)``, the authors'
  own test), so every frequency where the mask is non-zero (``|k| < T + R``) is kept without
  folding, at the price of larger maps than ``H / S``. (``R = 0``: ``2 floor(T) + 1``.)

Stride clamp (the authors', on every call): each stride is raised to ``S >= H / (H - R)`` for the
axis length ``H`` of the input at hand (when ``H > R``; e.g. ``H = 16, S = 1.2`` gives 4/3), so the
ramp never lies entirely outside the spectrum and the stride keeps a gradient. The raised value is
used straight-through: the gradient, taken at the raised value, reaches the stride unchanged, as
with the authors' in-place assignment. ``clamp_stride=False`` keeps only ``S >= 1`` (then ``S = 1`` is the identity).

Intended differences from the authors' TensorFlow layer (symmetric mask, normalisation, the
``1 + softplus`` parameterisation, the Nyquist bin, the clamp not written back, the ``"window"``
crop): ``docs/differences.md``.

Two implementations of the same separable linear map (``impl=``): ``"fft"`` follows the recipe
literally (``fft2``, gather and mask the kept bins, place them, ``ifft2``); ``"dense"`` (default)
applies, per axis, the real ``H_out x H`` matrix ``L[a, n] = (1/H) sum_k mask(k) cos(2 pi k (a/H_out
- n/H))`` that those steps compose to -- two GEMMs, faster on CNN-sized maps (see
``benchmarks/bench_baselines.py``); they agree to float rounding.

Cost (for :func:`poolarch.complexity.count_macs`, see :func:`diffstride_macs`): ``"fft"`` counts a
complex FFT of ``n`` points as ``5 n log2(n) / 2`` MACs (the radix-2 estimate of ``5 n log2 n``
real FLOPs, halved) plus the masking/placement products; ``"dense"`` counts its two matrix products.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import LearnableResize, check_nonempty, check_positive_finite, shape_repr, to_pair
from .factory import register_pool

__all__ = [
    "diffstride2d",
    "diffstride_output_size",
    "diffstride_macs",
    "clamp_stride",
    "min_stride",
    "kept_bins",
    "module_macs",
    "adaptive_span_mask",
    "DiffStride2d",
    "StaticDiffStride2d",
    "CROPS",
    "IMPLS",
]

CROPS = ("window", "support")
IMPLS = ("dense", "fft")


def _check_crop(crop: str) -> None:
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")


def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def _check_smoothness(smoothness: float) -> None:
    if isinstance(smoothness, bool) or not isinstance(smoothness, (int, float)) or not (
        math.isfinite(smoothness) and smoothness >= 0
    ):
        raise ValueError(f"smoothness must be a finite number >= 0, got {smoothness!r}")


def _check_input(x: Tensor) -> None:
    """``TypeError``/``ValueError`` unless ``x`` is a 4-d float tensor (TorchScript compiles it: no f-strings)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError("input must have 4 dimensions (N, C, H, W) for DiffStride2d, got shape " + shape_repr(x.shape))
    if not x.is_floating_point():
        raise TypeError("input must be a floating-point tensor, got " + str(x.dtype))
    check_nonempty(x, "DiffStride2d")


def adaptive_span_mask(freqs: Tensor, half_window: Tensor, smoothness: float) -> Tensor:
    """``clamp((R + T - |k|) / R, 0, 1)`` for signed integer frequencies ``freqs``.

    ``half_window`` is ``T`` (scalar tensor, differentiable); ``smoothness = 0`` gives the hard
    window ``|k| <= T`` (no gradient)."""
    distance = freqs.abs().to(half_window.dtype)
    if smoothness == 0:
        return (distance <= half_window.detach()).to(half_window.dtype)
    return torch.clamp((smoothness + half_window - distance) / smoothness, 0.0, 1.0)


def _axis_sizes(in_len: int, stride: float, smoothness: float, crop: str) -> tuple[int, float]:
    """``(out_len, continuous_out_len)`` along one axis for a stride value (a float)."""
    half_window = in_len / (2.0 * stride)
    if crop == "window":
        continuous = min(max(in_len / stride, 2.0), float(in_len))
        out_len = int(math.floor(in_len / stride + 0.5))
    else:
        continuous = min(2.0 * (half_window + smoothness), float(in_len))
        out_len = 2 * math.ceil(half_window + smoothness) if smoothness > 0 else 2 * math.floor(half_window) + 1
    out_len = max(min(out_len, in_len), min(2, in_len))
    return out_len, max(continuous, float(min(2, in_len)))


def min_stride(in_len: int, smoothness: float) -> float:
    """The authors' lower bound ``H / (H - R)`` of the stride along an axis of length ``H``
    (1 when ``H <= R``, where every stride keeps the whole spectrum)."""
    return in_len / (in_len - smoothness) if in_len > smoothness else 1.0


def clamp_stride(stride: Tensor, in_size: Sequence[int], smoothness: float) -> Tensor:
    """``max(S, H / (H - R))`` per axis, straight-through: the value is raised, the gradient passes
    unchanged (the authors' per-call clamp). ``stride``: ``(S_h, S_w)``; ``in_size``: ``(H, W)``."""
    return _clamp_hw(stride, int(in_size[0]), int(in_size[1]), float(smoothness))


def _clamp_hw(stride: Tensor, h: int, w: int, smoothness: float) -> Tensor:
    """:func:`clamp_stride` for an ``h x w`` input (TorchScript-able: the frozen layer's path)."""
    low = torch.tensor([min_stride(h, smoothness), min_stride(w, smoothness)], dtype=stride.dtype, device=stride.device)
    return stride + (torch.maximum(stride, low) - stride).detach()


_clamp = clamp_stride  # the functions below take a ``clamp_stride`` flag


def _check_stride(stride: Tensor) -> None:
    values = stride.detach().double().cpu().reshape(-1).tolist()
    if len(values) != 2:
        raise ValueError(f"stride must have 2 elements (S_h, S_w), got {len(values)}")
    if not all(math.isfinite(v) and v >= 1.0 for v in values):
        raise ValueError(f"stride must be finite and >= 1, got {tuple(values)}")


def diffstride_output_size(
    in_size: Sequence[int], stride: Tensor, smoothness: float = 4.0, crop: str = "window",
    clamp_stride: bool = True,
) -> tuple[Tensor, tuple[int, int]]:
    """Output size of DiffStride for spatial ``in_size = (H, W)`` and strides ``(S_h, S_w)``
    (raised to ``H / (H - R)`` first unless ``clamp_stride=False``).

    Returns ``(surrogate, sizes)``: the integer ``sizes`` of the forward pass, and a float tensor
    whose value equals ``sizes`` and whose gradient is that of the continuous size (``H / S`` for
    ``crop="window"``, ``H / S + 2R`` for ``"support"``; straight-through rounding).
    """
    _check_crop(crop)
    _check_stride(stride)
    stride = stride.reshape(-1)
    if clamp_stride:
        stride = _clamp(stride, in_size, smoothness)
    values = stride.detach().double().cpu().tolist()
    sizes, parts = [], []
    for d in range(2):
        out_len, _ = _axis_sizes(int(in_size[d]), values[d], smoothness, crop)
        n = float(in_size[d])
        if crop == "window":
            cont = n / stride[d]
        else:
            cont = n / stride[d] + 2.0 * smoothness
        cont = torch.clamp(cont, min=min(2.0, n), max=n)
        parts.append(float(out_len) + (cont - cont.detach()))
        sizes.append(out_len)
    return torch.stack(parts), (sizes[0], sizes[1])


def _kept_frequencies(in_len: int, stride: Tensor, smoothness: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(freqs, weights)`` of one axis: the signed frequencies where the mask is non-zero (a
    stop-gradient on the support, as in the paper) and ``mask(k)`` for them (differentiable in the
    stride). The Nyquist bin of an even axis appears twice, as ``-H/2`` and ``+H/2``, each with half
    its mask, so the kept spectrum is symmetric and the output real."""
    half = in_len // 2
    freqs = torch.arange(-half, half + 1, device=device)
    half_window = in_len / (2.0 * stride)
    with torch.no_grad():
        keep = adaptive_span_mask(freqs, half_window.detach(), smoothness) > 0
    freqs = freqs[keep]
    weights = adaptive_span_mask(freqs, half_window, smoothness)
    if in_len % 2 == 0:
        weights = torch.where(freqs.abs() == half, 0.5 * weights, weights)
    return freqs, weights


def _fft_axis(in_len: int, out_len: int, stride: Tensor, smoothness: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(bins, A)``: the input DFT bins to gather and the real ``out_len x len(bins)`` matrix
    ``A[j, i] = weight_i * [k_i = j mod out_len]`` that masks them and places them in the output DFT."""
    freqs, weights = _kept_frequencies(in_len, stride, smoothness, device)
    placement = F.one_hot(torch.remainder(freqs, out_len), out_len).t().to(weights.dtype)
    return torch.remainder(freqs, in_len), placement * weights.unsqueeze(0)


def _dense_axis(in_len: int, out_len: int, stride: Tensor, smoothness: float, device: torch.device) -> Tensor:
    """The same operator along one axis as a real ``out_len x in_len`` matrix:
    ``L[a, n] = (1/H) sum_k weight_k cos(2 pi k (a / H_out - n / H))`` (DFT, mask, fold, inverse DFT)."""
    freqs, weights = _kept_frequencies(in_len, stride, smoothness, device)
    a = torch.arange(out_len, device=device, dtype=torch.float64) / out_len
    n = torch.arange(in_len, device=device, dtype=torch.float64) / in_len
    phase = (2 * math.pi) * freqs.to(torch.float64)[:, None, None] * (a[None, :, None] - n[None, None, :])
    basis = torch.cos(phase).to(weights.dtype)
    return torch.einsum("k,kan->an", weights, basis) / in_len


def diffstride2d(
    x: Tensor,
    stride: Tensor,
    smoothness: float = 4.0,
    crop: str = "window",
    out_size: Sequence[int] | None = None,
    impl: str = "dense",
    clamp_stride: bool = True,
) -> Tensor:
    """Spectral pooling of ``(N, C, H, W)`` with (fractional, differentiable) strides.

    Args:
        x: input map, floating point.
        stride: ``(S_h, S_w)``, each ``>= 1``; gradients flow to it through the mask ramp.
        smoothness: ramp width ``R`` in frequency bins (paper: 4); 0 = hard crop.
        crop: ``"window"`` (output ``round(H/S)``) or ``"support"`` (the authors' ``2 ceil(T + R)``).
        out_size: force the output size (used by the frozen layer); ``None`` = from the strides.
        impl: ``"fft"`` (FFT, mask and place the kept bins, inverse FFT) or ``"dense"`` (the same
            separable linear map applied as two real matrix products; faster on CNN-sized maps).
        clamp_stride: raise each stride to ``H / (H - R)`` first (the authors'; straight-through).

    Returns:
        ``(N, C, H_out, W_out)`` with the dtype of ``x``.
    """
    _check_input(x)
    _check_smoothness(smoothness)
    _check_crop(crop)
    _check_impl(impl)
    if not isinstance(stride, Tensor):
        raise TypeError(f"stride must be a torch.Tensor, got {type(stride).__name__}")
    _check_stride(stride)
    stride = stride.reshape(-1)
    if clamp_stride:
        stride = _clamp(stride, x.shape[2:], smoothness)
    _, sizes = diffstride_output_size(x.shape[2:], stride, smoothness, crop, clamp_stride=False)
    if out_size is not None:
        sizes = [int(s) for s in out_size]  # type: ignore[assignment]
        _check_out_size(x, sizes)
    return _diffstride_to_size(x, stride, [sizes[0], sizes[1]], smoothness, impl)


def _check_out_size(x: Tensor, sizes: List[int]) -> None:
    """``ValueError`` unless ``sizes`` are 2 ints in ``[1, input size]`` (TorchScript-able)."""
    if len(sizes) != 2 or not (1 <= sizes[0] <= x.shape[2] and 1 <= sizes[1] <= x.shape[3]):
        raise ValueError("out_size must be 2 ints in [1, input size " + shape_repr(x.shape[2:]) + "], got "
                         + shape_repr(sizes))


def _diffstride_to_size(x: Tensor, stride: Tensor, sizes: List[int], smoothness: float, impl: str) -> Tensor:
    """:func:`diffstride2d` of a checked ``(N, C, H, W)`` input to the output size ``sizes``
    (TorchScript-able: the frozen layer's scripted path)."""
    if stride.dtype != x.dtype:
        stride = stride.to(x.dtype)
    h, w, dev = x.shape[2], x.shape[3], x.device
    if impl == "dense":
        op_h = _dense_axis(h, sizes[0], stride[0], smoothness, dev)
        op_w = _dense_axis(w, sizes[1], stride[1], smoothness, dev)
        y = torch.matmul(x, op_w.t())  # (N, C, H, W_out): one GEMM
        return torch.matmul(y.transpose(2, 3), op_h.t()).transpose(2, 3).contiguous()
    spectrum = torch.fft.fft2(x, norm="forward")
    bins_h, fold_h = _fft_axis(h, sizes[0], stride[0], smoothness, dev)
    bins_w, fold_w = _fft_axis(w, sizes[1], stride[1], smoothness, dev)
    block = spectrum.index_select(2, bins_h).index_select(3, bins_w)
    folded = torch.matmul(torch.matmul(fold_h.to(block.dtype), block), fold_w.t().to(block.dtype))
    return torch.fft.ifft2(folded, norm="forward").real.contiguous()


def diffstride_macs(
    in_size: Sequence[int], out_size: Sequence[int], kept: Sequence[int], maps: int, impl: str = "dense"
) -> int:
    """MACs of one DiffStride call on ``maps = N * C`` maps of size ``in_size = (H, W)``.

    ``impl="dense"``: the two real matrix products, ``H W W_out + W_out H H_out`` per map.
    ``impl="fft"``: the forward DFT of the input and the inverse DFT of the output as complex FFTs
    of ``n = H W`` (resp. ``H_out W_out``) points at ``5 n log2(n) / 2`` MACs each (the radix-2
    estimate of ``5 n log2 n`` real FLOPs, halved), plus the real-by-complex products that mask and
    place the kept ``kept[0] x kept[1]`` block (2 real MACs each:
    ``2 (H_out k_h k_w + H_out k_w W_out)``).
    """
    _check_impl(impl)
    h, w = int(in_size[0]), int(in_size[1])
    ho, wo = int(out_size[0]), int(out_size[1])
    if impl == "dense":
        return maps * (h * w * wo + wo * h * ho)

    def fft(n: int) -> float:
        return 2.5 * n * math.log2(n) if n > 1 else 0.0

    kh, kw = int(kept[0]), int(kept[1])
    fold = 2 * (ho * kh * kw + ho * kw * wo)
    return int(round(maps * (fft(h * w) + fft(ho * wo) + fold)))


def kept_bins(in_size: Sequence[int], stride: Sequence[float], smoothness: float) -> tuple[int, int]:
    """Number of DFT bins per axis where the mask is non-zero (``|k| < H / (2 S) + R``)."""
    out = []
    for n, s in zip(in_size, stride):
        half = int(n) / (2.0 * float(s))
        count = 2 * math.ceil(half + smoothness) - 1 if smoothness > 0 else 2 * math.floor(half) + 1
        out.append(min(int(n), count))
    return out[0], out[1]


def module_macs(module: nn.Module, inputs: tuple, output: Tensor) -> int:
    """:func:`diffstride_macs` of one call of a :class:`DiffStride2d` / :class:`StaticDiffStride2d`
    (the ``fn(module, inputs, output)`` form of :func:`poolarch.complexity.register_macs`)."""
    x = inputs[0]
    stride = module.stride.detach().double().cpu()
    if module.clamp_stride:
        stride = _clamp(stride, x.shape[2:], module.smoothness)
    stride = stride.tolist()
    kept = kept_bins(x.shape[2:], stride, module.smoothness)
    return diffstride_macs(x.shape[2:], output.shape[2:], kept, int(x.shape[0]) * int(x.shape[1]), module.impl)


def _stride_to_raw(stride: float) -> float:
    """Inverse of ``S = 1 + softplus(rho)`` (``S`` slightly above 1 is represented as 1 + 1e-4)."""
    excess = max(stride - 1.0, 1e-4)
    return excess + math.log(-math.expm1(-excess))


class DiffStride2d(LearnableResize):
    """Learnable-stride spectral pooling on ``(N, C, H, W)``; see :func:`diffstride2d`.

    Args:
        init_stride: initial ``(S_h, S_w)`` (float or pair), each ``>= 1`` (paper: 2).
        smoothness: ramp width ``R`` (paper: 4).
        crop: ``"window"`` (output ``round(H / S)``) or ``"support"`` (the reference's crop).
        share_stride_with: an existing :class:`DiffStride2d` whose stride parameter is reused
            (residual main path and shortcut, as in the paper).
        impl: ``"dense"`` (two real matrix products) or ``"fft"``; same result (float rounding).
        clamp_stride: raise the strides to ``H / (H - R)`` of each input (the authors'; default).

    The trained parameter is ``stride_raw = rho`` with ``S = 1 + softplus(rho)``; the strides of the
    last call (after the clamp) are ``last_stride``.
    """

    ndim = 2

    def __init__(
        self,
        init_stride: float | Sequence[float] = 2.0,
        smoothness: float = 4.0,
        crop: str = "window",
        share_stride_with: "DiffStride2d | None" = None,
        impl: str = "dense",
        clamp_stride: bool = True,
    ) -> None:
        super().__init__()
        _check_smoothness(smoothness)
        _check_crop(crop)
        _check_impl(impl)
        self.smoothness = float(smoothness)
        self.crop = crop
        self.impl = impl
        self.clamp_stride = bool(clamp_stride)
        self.last_stride: tuple[float, float] | None = None
        if share_stride_with is not None:
            if not isinstance(share_stride_with, DiffStride2d):
                raise TypeError(
                    f"share_stride_with must be a DiffStride2d, got {type(share_stride_with).__name__}"
                )
            self.stride_raw = share_stride_with.stride_raw
        else:
            strides = to_pair(init_stride, "init_stride")
            check_positive_finite(strides, "init_stride")
            if any(s < 1 for s in strides):
                raise ValueError(f"init_stride must be >= 1, got {strides}")
            self.stride_raw = nn.Parameter(torch.tensor([_stride_to_raw(s) for s in strides]))

    @property
    def stride(self) -> Tensor:
        """Current strides ``(S_h, S_w) = 1 + softplus(rho)``, differentiable, always ``> 1``
        (before the per-input clamp)."""
        return 1.0 + F.softplus(self.stride_raw)

    @property
    def scale(self) -> Tensor:
        """``r = 1 / S`` per axis, shape ``(2,)``."""
        return 1.0 / self.stride

    def set_scale(self, scale: Sequence[float]) -> None:
        """``scale``: ``r = 1 / S`` per axis, in ``(0, 1]``."""
        scales = to_pair(tuple(float(v) for v in scale), "scale")
        check_positive_finite(scales, "scale")
        if any(s > 1 for s in scales):
            raise ValueError(f"scale must be in (0, 1] (stride >= 1), got {scales}")
        with torch.no_grad():
            self.stride_raw.copy_(torch.tensor([_stride_to_raw(1.0 / s) for s in scales], dtype=self.stride_raw.dtype))

    def clamp_scale_(self, max_scale: float) -> None:
        """Bound ``r = 1/S <= max_scale`` by clamping ``stride_raw`` from below; a no-op for
        ``max_scale >= 1`` (the stride is always ``> 1``)."""
        check_positive_finite((float(max_scale),), "max_scale")
        if max_scale >= 1.0:
            return
        with torch.no_grad():
            self.stride_raw.clamp_(min=_stride_to_raw(1.0 / max_scale))

    def output_size(self, in_size: Sequence[int]) -> tuple[int, ...]:
        return diffstride_output_size(
            in_size, self.stride.detach(), self.smoothness, self.crop, self.clamp_stride
        )[1]

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x)
        stride = self.stride
        if self.clamp_stride:
            stride = _clamp(stride, x.shape[2:], self.smoothness)
        surrogate, sizes = diffstride_output_size(x.shape[2:], stride, self.smoothness, self.crop, False)
        self.last_in_size = (int(x.shape[2]), int(x.shape[3]))
        self.last_out_size = sizes
        self.last_size_surrogate = surrogate
        values = stride.detach().tolist()
        self.last_stride = (float(values[0]), float(values[1]))
        return diffstride2d(x, stride, self.smoothness, self.crop, impl=self.impl, clamp_stride=False)

    def to_static(self) -> "StaticDiffStride2d":
        if self.last_out_size is None:
            raise RuntimeError("the output size is not known yet: run a forward pass first, or freeze(model, example_input=x)")
        return StaticDiffStride2d(
            self.last_stride, self.last_out_size, self.smoothness, self.crop, self.impl,
            in_size=self.last_in_size, clamp_stride=self.clamp_stride,
        )

    def extra_repr(self) -> str:
        s = ", ".join(f"{v:.3f}" for v in self.stride.detach().tolist())
        text = f"stride=({s}), smoothness={self.smoothness:g}, crop={self.crop}, impl={self.impl}"
        if not self.clamp_stride:
            text += ", clamp_stride=False"
        if self.last_in_size is not None:
            text += f", last={self.last_in_size}->{self.last_out_size}"
        return text


class StaticDiffStride2d(nn.Module):
    """A frozen :class:`DiffStride2d`: fixed strides (a buffer, not a parameter) and output size.

    With ``in_size`` (what :meth:`DiffStride2d.to_static` passes) the layer also holds the two
    resampling matrices for that input size (``(H_out, H)`` and ``(W_out, W)``, the dense form of
    the masked DFT), so a forward pass is two matrix products with no data-dependent shapes: it
    exports with ``torch.export``/ONNX. Other input sizes take the general path (which clamps
    the strides for that size when ``clamp_stride``; the stored ones already are for ``in_size``).
    """

    def __init__(
        self,
        stride: Sequence[float],
        out_size: Sequence[int],
        smoothness: float = 4.0,
        crop: str = "window",
        impl: str = "dense",
        in_size: Sequence[int] | None = None,
        clamp_stride: bool = True,
    ) -> None:
        super().__init__()
        _check_smoothness(smoothness)
        _check_crop(crop)
        _check_impl(impl)
        self.impl = impl
        self.clamp_stride = bool(clamp_stride)
        strides = to_pair(stride, "stride")
        if not all(math.isfinite(s) and s >= 1 for s in strides):
            raise ValueError(f"stride must be finite and >= 1, got {strides}")
        self.out_size = tuple(int(s) for s in out_size)
        if len(self.out_size) != 2 or not all(s >= 1 for s in self.out_size):
            raise ValueError(f"out_size must be 2 positive ints, got {out_size!r}")
        self.smoothness = float(smoothness)
        self.crop = crop
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float64))
        # (0, 0) = unknown input size: the matrices stay empty and every call takes the general path
        self.in_size = (0, 0) if in_size is None else tuple(int(s) for s in in_size)
        if len(self.in_size) != 2 or (in_size is not None and not all(s >= 1 for s in self.in_size)):
            raise ValueError(f"in_size must be 2 positive ints or None, got {in_size!r}")
        op_h, op_w = torch.zeros(0, 0, dtype=torch.float64), torch.zeros(0, 0, dtype=torch.float64)
        if in_size is not None:
            cpu = torch.device("cpu")
            st = _clamp(self.stride, self.in_size, self.smoothness) if self.clamp_stride else self.stride
            op_h = _dense_axis(self.in_size[0], self.out_size[0], st[0], self.smoothness, cpu)
            op_w = _dense_axis(self.in_size[1], self.out_size[1], st[1], self.smoothness, cpu)
        # derived from the strides, so not saved in state_dict
        self.register_buffer("op_h", op_h, persistent=False)
        self.register_buffer("op_w", op_w, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and x.shape[2] == self.in_size[0] and x.shape[3] == self.in_size[1]:
            y = torch.matmul(x, self.op_w.to(x.dtype).t())  # (N, C, H, W_out)
            return torch.matmul(y.transpose(2, 3), self.op_h.to(x.dtype).t()).transpose(2, 3).contiguous()
        if not torch.jit.is_scripting():
            return diffstride2d(
                x, self.stride.to(x.dtype), self.smoothness, self.crop, self.out_size, self.impl, self.clamp_stride
            )
        _check_input(x)
        sizes = [s for s in self.out_size]
        _check_out_size(x, sizes)
        stride = self.stride
        if self.clamp_stride:
            stride = _clamp_hw(stride, x.shape[2], x.shape[3], self.smoothness)
        return _diffstride_to_size(x, stride, sizes, self.smoothness, self.impl)

    def extra_repr(self) -> str:
        s = ", ".join(f"{v:.3f}" for v in self.stride.tolist())
        text = f"stride=({s}), out_size={self.out_size}, smoothness={self.smoothness:g}, crop={self.crop}, impl={self.impl}"
        return text if self.in_size == (0, 0) else text + f", in_size={self.in_size}"


@register_pool("diffstride")
def _diffstride(stride, init_scale, channels, share_with):
    if share_with is not None:
        return DiffStride2d(share_stride_with=share_with)
    strides = (float(stride[0]), float(stride[1])) if init_scale is None else (1.0 / init_scale[0], 1.0 / init_scale[1])
    return DiffStride2d(init_stride=strides)
