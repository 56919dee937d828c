"""Shape Adaptor: a learnable resizing module (Liu et al., ECCV 2020).

Two branches resize the input by fixed ratios ``r1 < r2`` (default: 2x2 max-pooling, ``r1 = 0.5``,
and the identity, ``r2 = 1``). Both are resized with bilinear interpolation to the *mixed* size and
mixed by ``sigmoid(alpha)``::

    s(alpha) = r1 + (r2 - r1) * sigmoid(alpha)
    out_size = max(round(in_size * s(alpha)), 1)
    y = (1 - sigmoid(alpha)) * resize(branch_r1(x), out_size) + sigmoid(alpha) * resize(branch_r2(x), out_size)

``alpha`` is one scalar per layer: the module resizes both axes by the same ratio. As in the paper,
``alpha`` is trained through the mixing weight; the output size is piecewise constant in ``alpha``
(its straight-through surrogate ``in_size * s(alpha)`` is exposed for ``ComplexityLoss``).

Memory bound (as in the paper): when the continuous final feature size exceeds a limit, every
adaptor's ratio is multiplied by the same ``penalty p < 1`` so the product meets the limit; the
mixing weight becomes ``(p s - r1) / (r2 - r1) = p sigmoid(alpha) + r1 (p - 1) / (r2 - r1)``.
See :func:`apply_memory_bound`. Automatic initialisation: :func:`init_shape_adaptors`.

Choices (documented): the output size is rounded to nearest (the authors' code floors the running
product of ratios); resizing uses ``align_corners=False`` by default, which keeps the pixel centres
of the two branches aligned (the authors' code uses ``True``; pass ``align_corners=True`` for it).
Ratios below 1 must be ``1/k`` (max-pooling with kernel and stride ``k``); a ratio ``>= 1`` is the
identity branch (the final bilinear resize does any upsampling).
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import LearnableResize, check_positive_finite, learnable_resizers, shape_repr, to_pair
from .factory import register_pool

__all__ = [
    "shape_adaptor2d",
    "shape_adaptor_ratio",
    "shape_adaptor_output_size",
    "ShapeAdaptor2d",
    "StaticShapeAdaptor2d",
    "init_shape_adaptors",
    "apply_memory_bound",
    "shape_adaptors",
    "module_macs",
    "BOUNDARY_MARGIN",
]

BOUNDARY_MARGIN = 0.02
"""Initial ``sigmoid(alpha)`` is kept in ``[margin, 1 - margin]`` so ``alpha`` still gets gradient."""


def _check_ratios(r1: float, r2: float) -> None:
    for name, r in (("r1", r1), ("r2", r2)):
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (math.isfinite(r) and r > 0):
            raise ValueError(f"{name} must be a positive finite number, got {r!r}")
        if r < 1 and abs(1.0 / r - round(1.0 / r)) > 1e-9:
            raise ValueError(f"{name} below 1 must be 1/k for an integer k (max-pooling by k), got {r!r}")
    if not r1 < r2:
        raise ValueError(f"r1 must be smaller than r2, got r1={r1!r}, r2={r2!r}")


def _check_input(x: Tensor) -> None:
    """``TypeError``/``ValueError`` unless ``x`` is a 4-d tensor (TorchScript compiles it: no f-strings)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            "input must have 4 dimensions (N, C, H, W) for ShapeAdaptor2d, got shape " + shape_repr(x.shape)
        )


def shape_adaptor_ratio(alpha: Tensor, r1: float = 0.5, r2: float = 1.0, penalty: float = 1.0) -> Tensor:
    """``penalty * (r1 + (r2 - r1) * sigmoid(alpha))`` (differentiable, same shape as ``alpha``)."""
    return penalty * (r1 + (r2 - r1) * torch.sigmoid(alpha))


def shape_adaptor_output_size(
    in_size: Sequence[int], alpha: Tensor, r1: float = 0.5, r2: float = 1.0, penalty: float = 1.0
) -> tuple[Tensor, tuple[int, ...]]:
    """``(surrogate, sizes)``: integer ``sizes = max(round(in_size * s), 1)`` and a float tensor
    equal to them whose gradient is that of the continuous ``in_size * s(alpha)``."""
    ratio = shape_adaptor_ratio(alpha.reshape(-1)[0], r1, r2, penalty)
    in_t = torch.tensor([float(v) for v in in_size], dtype=ratio.dtype, device=ratio.device)
    continuous = torch.clamp(in_t * ratio, min=1.0)
    rounded = torch.floor(continuous.detach() + 0.5)
    sizes = tuple(int(v) for v in rounded.tolist())
    return rounded + (continuous - continuous.detach()), sizes


def _branch(x: Tensor, ratio: float) -> Tensor:
    if ratio >= 1:
        return x
    k = int(round(1.0 / ratio))
    if min(x.shape[2:]) < k:
        raise ValueError(
            "input spatial size " + shape_repr(x.shape[2:]) + " is smaller than the pooling kernel " + str(k)
            + " of ratio " + str(ratio)
        )
    return F.max_pool2d(x, k)


def _resize(x: Tensor, size: List[int], align_corners: bool) -> Tensor:
    if list(x.shape[2:]) == list(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _mix(x: Tensor, weight: Tensor, size: List[int], r1: float, r2: float, align_corners: bool) -> Tensor:
    """``(1 - weight) * resize(branch_r1(x)) + weight * resize(branch_r2(x))`` at ``size``
    (TorchScript-able: the frozen layer's path too)."""
    low = _resize(_branch(x, r1), size, align_corners)
    high = _resize(_branch(x, r2), size, align_corners)
    return (1 - weight) * low + weight * high


def shape_adaptor2d(
    x: Tensor,
    alpha: Tensor,
    r1: float = 0.5,
    r2: float = 1.0,
    penalty: float = 1.0,
    align_corners: bool = False,
) -> Tensor:
    """Shape Adaptor on ``(N, C, H, W)``.

    Args:
        x: input map.
        alpha: the mixing logit, one element.
        r1, r2: ratios of the two branches, ``r1 < r2``.
        penalty: memory-bound factor ``p`` multiplying the ratio (1 = no bound).
        align_corners: of the bilinear resizes.

    Returns:
        ``(N, C, max(round(H s), 1), max(round(W s), 1))``.
    """
    _check_input(x)
    _check_ratios(r1, r2)
    if not isinstance(alpha, Tensor) or alpha.numel() != 1:
        raise TypeError(f"alpha must be a one-element torch.Tensor, got {alpha!r}")
    if not (isinstance(penalty, (int, float)) and 0 < penalty <= 1):
        raise ValueError(f"penalty must be in (0, 1], got {penalty!r}")
    _, sizes = shape_adaptor_output_size(x.shape[2:], alpha, r1, r2, penalty)
    weight = _mixing_weight(alpha.reshape(()), r1, r2, penalty).to(x.dtype)
    return _mix(x, weight, sizes, r1, r2, align_corners)


def _mixing_weight(alpha: Tensor, r1: float, r2: float, penalty: float) -> Tensor:
    """``(p s(alpha) - r1) / (r2 - r1)``, i.e. ``sigmoid(alpha)`` without a memory bound."""
    sig = torch.sigmoid(alpha)
    if penalty == 1.0:
        return sig
    return sig * penalty + r1 / (r2 - r1) * (penalty - 1.0)


def _ratio_to_alpha(ratio: float, r1: float, r2: float, margin: float = BOUNDARY_MARGIN) -> float:
    """The logit ``alpha`` with ``s(alpha) = ratio``, ``sigmoid(alpha)`` kept ``margin`` inside (0, 1)."""
    sig = (ratio - r1) / (r2 - r1)
    sig = min(max(sig, margin), 1.0 - margin)
    return math.log(sig / (1.0 - sig))


class ShapeAdaptor2d(LearnableResize):
    """Learnable-ratio resizing on ``(N, C, H, W)``; see :func:`shape_adaptor2d`.

    Args:
        init_ratio: initial ``s(alpha)`` in ``[r1, r2]`` (moved ``BOUNDARY_MARGIN`` inside).
        r1, r2: branch ratios (default max-pool 2 and identity).
        align_corners: of the bilinear resizes.
        share_with: an existing :class:`ShapeAdaptor2d` whose ``alpha`` is reused.

    Attributes:
        alpha: the trained logit, shape ``(1,)``.
        penalty: memory-bound factor set by :func:`apply_memory_bound` (1 = none).
    """

    ndim = 2

    def __init__(
        self,
        init_ratio: float = 0.75,
        r1: float = 0.5,
        r2: float = 1.0,
        align_corners: bool = False,
        share_with: "ShapeAdaptor2d | None" = None,
    ) -> None:
        super().__init__()
        _check_ratios(r1, r2)
        self.r1, self.r2 = float(r1), float(r2)
        self.align_corners = bool(align_corners)
        self.penalty = 1.0
        if share_with is not None:
            if not isinstance(share_with, ShapeAdaptor2d):
                raise TypeError(f"share_with must be a ShapeAdaptor2d, got {type(share_with).__name__}")
            if (share_with.r1, share_with.r2) != (self.r1, self.r2):
                raise ValueError("share_with must use the same ratios r1, r2")
            self.alpha = share_with.alpha
        else:
            if isinstance(init_ratio, bool) or not isinstance(init_ratio, (int, float)) or not (
                r1 <= init_ratio <= r2
            ):
                raise ValueError(f"init_ratio must be a number in [r1, r2] = [{r1}, {r2}], got {init_ratio!r}")
            self.alpha = nn.Parameter(torch.tensor([_ratio_to_alpha(float(init_ratio), r1, r2)]))

    @property
    def ratio(self) -> Tensor:
        """``p * s(alpha)``, a 0-d differentiable tensor."""
        return shape_adaptor_ratio(self.alpha.reshape(()), self.r1, self.r2, self.penalty)

    @property
    def scale(self) -> Tensor:
        """The ratio on both axes, shape ``(2,)``."""
        return self.ratio.expand(2)

    def set_scale(self, scale: Sequence[float]) -> None:
        """``scale``: the ratio, one value or the same value for both axes, in ``p * [r1, r2]``."""
        ratios = to_pair(tuple(float(v) for v in scale) if isinstance(scale, Sequence) else float(scale), "scale")
        low, high = self.penalty * self.r1, self.penalty * self.r2
        if abs(ratios[0] - ratios[1]) > 1e-9 or not (low <= ratios[0] <= high):
            raise ValueError(f"scale must be one ratio in [{low:g}, {high:g}] for both axes, got {ratios}")
        # exact inverse (no initialisation margin), away from the sigmoid's infinities
        alpha = _ratio_to_alpha(ratios[0] / self.penalty, self.r1, self.r2, margin=1e-12)
        with torch.no_grad():
            self.alpha.fill_(alpha)

    def clamp_scale_(self, max_scale: float) -> None:
        """Bound the ratio ``p * s(alpha) <= max_scale`` by clamping the logit ``alpha`` from above
        (the logit is not an inverse scale: it is never clamped from below). A no-op when
        ``max_scale >= p * r2``, which holds for every ``max_scale >= 1`` with the default ratios."""
        check_positive_finite((float(max_scale),), "max_scale")
        low, high = self.penalty * self.r1, self.penalty * self.r2
        if max_scale >= high:
            return
        if max_scale <= low:
            raise ValueError(f"max_scale must be > p * r1 = {low:g} for a ShapeAdaptor2d, got {max_scale}")
        with torch.no_grad():
            self.alpha.clamp_(max=_ratio_to_alpha(max_scale / self.penalty, self.r1, self.r2, margin=1e-12))

    def output_size(self, in_size: Sequence[int]) -> tuple[int, ...]:
        return shape_adaptor_output_size(in_size, self.alpha.detach(), self.r1, self.r2, self.penalty)[1]

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x)
        surrogate, sizes = shape_adaptor_output_size(x.shape[2:], self.alpha, self.r1, self.r2, self.penalty)
        self.last_in_size = (int(x.shape[2]), int(x.shape[3]))
        self.last_out_size = sizes
        self.last_size_surrogate = surrogate
        weight = _mixing_weight(self.alpha.reshape(()), self.r1, self.r2, self.penalty).to(x.dtype)
        return _mix(x, weight, sizes, self.r1, self.r2, self.align_corners)

    def to_static(self) -> "StaticShapeAdaptor2d":
        if self.last_out_size is None:
            raise RuntimeError("the output size is not known yet: run a forward pass first, or freeze(model, example_input=x)")
        weight = float(_mixing_weight(self.alpha.detach().reshape(()), self.r1, self.r2, self.penalty))
        return StaticShapeAdaptor2d(self.last_out_size, weight, self.r1, self.r2, self.align_corners)

    def extra_repr(self) -> str:
        text = f"ratio={float(self.ratio.detach()):.3f}, r1={self.r1:g}, r2={self.r2:g}"
        if self.penalty != 1.0:
            text += f", penalty={self.penalty:.3f}"
        if self.last_in_size is not None:
            text += f", last={self.last_in_size}->{self.last_out_size}"
        return text


class StaticShapeAdaptor2d(nn.Module):
    """A frozen :class:`ShapeAdaptor2d`: fixed output size and mixing weight, no parameters."""

    def __init__(
        self, out_size: Sequence[int], weight: float, r1: float = 0.5, r2: float = 1.0, align_corners: bool = False
    ) -> None:
        super().__init__()
        _check_ratios(r1, r2)
        self.out_size = tuple(int(s) for s in out_size)
        if len(self.out_size) != 2 or not all(s >= 1 for s in self.out_size):
            raise ValueError(f"out_size must be 2 positive ints, got {out_size!r}")
        if not math.isfinite(weight):
            raise ValueError(f"weight must be finite, got {weight!r}")
        self.register_buffer("weight", torch.tensor(float(weight)))  # follows .to(dtype/device)
        self.r1, self.r2 = float(r1), float(r2)
        self.align_corners = bool(align_corners)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x)
        return _mix(x, self.weight, [s for s in self.out_size], self.r1, self.r2, self.align_corners)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, weight={float(self.weight):.4f}, r1={self.r1:g}, r2={self.r2:g}"


def module_macs(module: nn.Module, inputs: tuple, output: Tensor) -> int:
    """MACs of one :class:`ShapeAdaptor2d` / :class:`StaticShapeAdaptor2d` call: two bilinear
    resizes to the output size (4 taps each per output element, charged even when a resize is
    skipped because the sizes already match, so the count depends on the architecture only); the
    max-pooling and the mixing are not MACs (poolarch's convention for pooling and element-wise ops).
    """
    return 8 * output.numel()


def shape_adaptors(model: nn.Module) -> list[ShapeAdaptor2d]:
    """The shape adaptors of ``model`` in order, one per distinct ``alpha`` (shared ones once)."""
    seen: set[int] = set()
    out = []
    for _, module in learnable_resizers(model):
        if isinstance(module, ShapeAdaptor2d) and id(module.alpha) not in seen:
            seen.add(id(module.alpha))
            out.append(module)
    return out


def _size_pair(value: int | Sequence[int], name: str) -> tuple[float, float]:
    pair = to_pair(value, name)
    if not all(math.isfinite(v) and v > 0 for v in pair):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def init_shape_adaptors(
    model: nn.Module,
    input_size: int | Sequence[int],
    target_size: int | Sequence[int],
    fixed_reduction: float = 1.0,
) -> float:
    """The paper's automatic initialisation: set every adaptor to the same ratio ``s`` with
    ``input_size * fixed_reduction * s^n = target_size`` (``n`` distinct adaptors; shared ones
    count once). ``fixed_reduction`` accounts for non-learnable downsampling in the model (e.g.
    0.25 for two stride-2 layers). A ratio outside ``[r1, r2]`` is clipped (as in the paper).

    Returns the ratio ``s`` requested (before clipping). Sizes may be ints or ``(H, W)`` pairs;
    the per-axis ratios are averaged (adaptors are symmetric)."""
    adaptors = shape_adaptors(model)
    if not adaptors:
        raise ValueError("model has no ShapeAdaptor2d layers to initialise")
    if not (isinstance(fixed_reduction, (int, float)) and fixed_reduction > 0):
        raise ValueError(f"fixed_reduction must be a positive number, got {fixed_reduction!r}")
    inp, tgt = _size_pair(input_size, "input_size"), _size_pair(target_size, "target_size")
    total = sum(t / (i * fixed_reduction) for t, i in zip(tgt, inp)) / 2.0
    ratio = total ** (1.0 / len(adaptors))
    with torch.no_grad():
        for m in adaptors:
            m.alpha.fill_(_ratio_to_alpha(ratio, m.r1, m.r2))
    return ratio


def apply_memory_bound(model: nn.Module, input_size: int | Sequence[int], limit: float | None) -> float:
    """The paper's memory bound: if ``input_size * prod_i s_i(alpha_i)`` (largest axis, no penalty)
    exceeds ``limit``, set every adaptor's ``penalty`` to ``(limit / that)^(1/n)`` so the final
    size meets the limit; otherwise (or ``limit=None``) reset the penalties to 1. Returns the
    penalty. Assumes the adaptors are chained (each resizes the previous one's output)."""
    adaptors = shape_adaptors(model)
    if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
        raise ValueError(f"limit must be a positive number or None, got {limit!r}")
    penalty = 1.0
    if adaptors and limit is not None:
        product = 1.0
        for m in adaptors:
            product *= float(shape_adaptor_ratio(m.alpha.detach().reshape(()), m.r1, m.r2))
        final = max(_size_pair(input_size, "input_size")) * product
        if final > limit:
            penalty = (limit / final) ** (1.0 / len(adaptors))
    for _, module in learnable_resizers(model):
        if isinstance(module, ShapeAdaptor2d):
            module.penalty = penalty
    return penalty


@register_pool("shape_adaptor")
def _shape_adaptor(stride, init_scale, channels, share_with):
    if share_with is not None:
        return ShapeAdaptor2d(share_with=share_with)
    ratio = (1.0 / stride[0], 1.0 / stride[1]) if init_scale is None else init_scale
    if abs(ratio[0] - ratio[1]) > 1e-12:
        raise ValueError(f"shape_adaptor resizes both axes by one ratio: init_scale must be square, got {ratio}")
    r1 = min(0.5, ratio[0])
    r1 = 1.0 / math.ceil(1.0 / r1 - 1e-9)  # max-pooling branch by an integer factor
    return ShapeAdaptor2d(init_ratio=ratio[0], r1=r1, r2=1.0)
