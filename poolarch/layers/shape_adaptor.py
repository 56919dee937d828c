"""Shape Adaptor: a learnable resizing module (Liu et al., ECCV 2020).

Two branches of the input at fixed ratios ``r1 < r2`` (default: 2x2 max-pooling, ``r1 = 0.5``,
and the identity, ``r2 = 1``) are resized with bilinear interpolation to the *mixed* size and
mixed by ``w = sigmoid(alpha)``::

    s(alpha) = r1 + (r2 - r1) * sigmoid(alpha)
    y = (1 - w) * resize(branch_r1(x), size) + w * resize(branch_r2(x), size)

The residual form (the authors' ResNets, :class:`ResidualShapeAdaptor2d`) mixes two *different*
tensors, the downsampling shortcut and the main path, with a factor 2 (so ``w = 1/2`` is the
usual ``f(x) + x``)::

    y = 2 (1 - w) * resize(shortcut(x), size) + 2 w * resize(main(x), size)

``alpha`` is one scalar per layer (both axes by the same ratio), trained through the mixing weight;
the output size is piecewise constant in ``alpha`` (its straight-through surrogate, the continuous
size, is exposed for ``ComplexityLoss``).

Output size (``rounding=``), as in the authors' code, which carries the size along the network:

* ``"local"`` (default; the authors' standard and AutoTL modes): ``size = max(int(c s), 1)`` with
  ``c`` the integer size carried so far -- i.e. every adaptor floors its own input size times ``s``;
* ``"global"`` (the authors' AutoSC mode): the *continuous* product ``c <- c s`` is carried from one
  adaptor to the next and each output is ``max(round(c), 1)`` with Python's ``round`` (halves to
  even). The carried value lives in a :class:`ShapeAdaptorChain` shared by the adaptors of one model
  (:func:`chain_shape_adaptors`, called by :func:`init_shape_adaptors`): it maps every integer size
  an adaptor produced in the current forward pass to the continuous size it stands for, so an
  adaptor whose input is a previous adaptor's output continues that product, an adaptor after a
  fixed resizing layer (or without a chain) starts from its actual input size, and two adaptors on
  the same input (a shortcut sharing ``alpha`` with its main path) agree. A new forward pass is
  recognised by the order of the adaptors' calls (no hook on the model);
* ``"nearest"`` (poolarch's former default): each layer rounds its own ``in_size * s``, halves up.

Memory bound (as in the paper): when the continuous final feature size exceeds a limit, every
adaptor's ratio is multiplied by the same ``penalty p < 1`` so the product meets the limit; the
mixing weight becomes ``(p s - r1) / (r2 - r1) = p sigmoid(alpha) + r1 (p - 1) / (r2 - r1)``.
See :func:`apply_memory_bound`. Automatic initialisation: :func:`init_shape_adaptors`.

Ratios below 1 must be ``1/k`` (max-pooling with kernel and stride ``k``); a ratio ``>= 1`` is the
identity branch (the final bilinear resize does any upsampling). Resizing uses
``align_corners=True`` as the authors do (``False`` is available). Intended differences from the
authors' code (sizes per axis on non-square maps, ...): ``docs/differences.md``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import LearnableResize, check_nonempty, check_positive_finite, learnable_resizers, shape_repr, to_pair
from .factory import register_pool, register_residual_pool

__all__ = [
    "shape_adaptor2d",
    "residual_shape_adaptor2d",
    "shape_adaptor_ratio",
    "shape_adaptor_output_size",
    "ShapeAdaptor2d",
    "ResidualShapeAdaptor2d",
    "StaticShapeAdaptor2d",
    "StaticResidualShapeAdaptor2d",
    "ShapeAdaptorChain",
    "chain_shape_adaptors",
    "init_shape_adaptors",
    "apply_memory_bound",
    "shape_adaptors",
    "module_macs",
    "BOUNDARY_MARGIN",
    "ROUNDINGS",
]

BOUNDARY_MARGIN = 0.02
"""Initial ``sigmoid(alpha)`` is kept in ``[margin, 1 - margin]`` so ``alpha`` still gets gradient."""

ROUNDINGS = ("local", "global", "nearest")
"""Output-size rules: the authors' two modes and poolarch's former per-layer rounding (module doc)."""


def _check_ratios(r1: float, r2: float) -> None:
    for name, r in (("r1", r1), ("r2", r2)):
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (math.isfinite(r) and r > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {r!r}")
        if r < 1 and abs(1.0 / r - round(1.0 / r)) > 1e-9:
            raise ValueError(f"{name} below 1 must be 1/k for an integer k (max-pooling by k), got {r!r}")
    if not r1 < r2:
        raise ValueError(f"r1 must be smaller than r2, got r1={r1!r}, r2={r2!r}")


def _check_rounding(rounding: str) -> None:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def _check_penalty(penalty: float) -> None:
    if not (isinstance(penalty, (int, float)) and 0 < penalty <= 1):
        raise ValueError(f"penalty must be in (0, 1], got {penalty!r}")


def _check_input(x: Tensor, name: str = "input") -> None:
    """``TypeError``/``ValueError`` unless ``x`` is a 4-d tensor (TorchScript compiles it: no f-strings)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            name + " must have 4 dimensions (N, C, H, W) for ShapeAdaptor2d, got shape " + shape_repr(x.shape)
        )
    check_nonempty(x, "ShapeAdaptor2d", name)


def _check_alpha(alpha: Tensor) -> None:
    if not isinstance(alpha, Tensor) or alpha.numel() != 1:
        raise TypeError(f"alpha must be a one-element torch.Tensor, got {alpha!r}")


def shape_adaptor_ratio(alpha: Tensor, r1: float = 0.5, r2: float = 1.0, penalty: float = 1.0) -> Tensor:
    """``penalty * (r1 + (r2 - r1) * sigmoid(alpha))`` (differentiable, same shape as ``alpha``)."""
    return penalty * (r1 + (r2 - r1) * torch.sigmoid(alpha))


def _mixing_weight(alpha: Tensor, r1: float, r2: float, penalty: float) -> Tensor:
    """``(p s(alpha) - r1) / (r2 - r1)``, i.e. ``sigmoid(alpha)`` without a memory bound."""
    sig = torch.sigmoid(alpha)
    if penalty == 1.0:
        return sig
    return sig * penalty + r1 / (r2 - r1) * (penalty - 1.0)


def _round_sizes(
    carried: Sequence[float], ratio: float, rounding: str
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``(sizes, carried_out)`` for the carried sizes ``c`` (one per axis) and the ratio ``s``
    (a Python float, as the authors' ``.item()``): local ``c <- int(c s)``, size ``max(c, 1)``;
    global ``c <- c s``, size ``max(round(c), 1)`` (halves to even); nearest ``floor(c s + 1/2)``."""
    sizes, out = [], []
    for c in carried:
        if rounding == "local":
            c = float(int(c * ratio))
            n = int(c)
        elif rounding == "global":
            c = c * ratio
            n = round(c)
        else:
            c = c * ratio
            n = int(math.floor(c + 0.5))
        sizes.append(max(n, 1))
        out.append(c)
    return tuple(sizes), tuple(out)


def _sizes(
    in_size: Sequence[int], alpha: Tensor, r1: float, r2: float, penalty: float, rounding: str,
    carried: Sequence[float] | None,
) -> tuple[Tensor, tuple[int, ...], tuple[float, ...]]:
    """``(surrogate, sizes, carried_out)``; ``carried`` defaults to ``in_size``."""
    weight = _mixing_weight(alpha.reshape(-1)[0], r1, r2, penalty)
    ratio_value = (r2 - r1) * float(weight.detach()) + r1  # the authors' s_alpha (penalty included)
    carried_in = tuple(float(v) for v in (in_size if carried is None else carried))
    sizes, carried_out = _round_sizes(carried_in, ratio_value, rounding)
    ratio = r1 + (r2 - r1) * weight  # = p s(alpha), differentiable
    continuous = torch.tensor(carried_in, dtype=ratio.dtype, device=ratio.device) * ratio
    surrogate = torch.tensor([float(s) for s in sizes], dtype=ratio.dtype, device=ratio.device)
    return surrogate + (continuous - continuous.detach()), sizes, carried_out


def shape_adaptor_output_size(
    in_size: Sequence[int],
    alpha: Tensor,
    r1: float = 0.5,
    r2: float = 1.0,
    penalty: float = 1.0,
    rounding: str = "local",
    carried: Sequence[float] | None = None,
) -> tuple[Tensor, tuple[int, ...]]:
    """``(surrogate, sizes)``: the integer output ``sizes`` of the size rule ``rounding`` (module
    doc) and a float tensor equal to them whose gradient is that of the continuous ``c * s(alpha)``.

    ``carried``: the carried size ``c`` per axis (a previous adaptor's continuous size in the
    ``"global"`` rule); default ``in_size``."""
    _check_rounding(rounding)
    surrogate, sizes, _ = _sizes(in_size, alpha, r1, r2, penalty, rounding, carried)
    return surrogate, sizes


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
        return x  # bilinear resizing to the same size is the identity (either align_corners)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _mix_pair(low: Tensor, high: Tensor, weight: Tensor, size: List[int], align_corners: bool, factor: float) -> Tensor:
    """``factor (1 - weight) resize(low) + factor weight resize(high)`` at ``size`` (TorchScript-able)."""
    low = _resize(low, size, align_corners)
    high = _resize(high, size, align_corners)
    if factor == 1.0:
        return (1 - weight) * low + weight * high
    return factor * (1 - weight) * low + factor * weight * high


def _mix(x: Tensor, weight: Tensor, size: List[int], r1: float, r2: float, align_corners: bool) -> Tensor:
    """The single-input form: the two branches are max-pooled / identity copies of ``x``."""
    return _mix_pair(_branch(x, r1), _branch(x, r2), weight, size, align_corners, 1.0)


def _pair_in_size(main: Tensor, r2: float) -> tuple[int, int]:
    """The size rule's input size of the residual form: ``main`` is the ``r2`` branch."""
    return (int(round(main.shape[2] / r2)), int(round(main.shape[3] / r2)))


def shape_adaptor2d(
    x: Tensor,
    alpha: Tensor,
    r1: float = 0.5,
    r2: float = 1.0,
    penalty: float = 1.0,
    align_corners: bool = True,
    rounding: str = "local",
) -> Tensor:
    """Shape Adaptor on ``(N, C, H, W)`` (one layer, no carried size: see :class:`ShapeAdaptorChain`).

    Args:
        x: input map.
        alpha: the mixing logit, one element.
        r1, r2: ratios of the two branches, ``r1 < r2``.
        penalty: memory-bound factor ``p`` multiplying the ratio (1 = no bound).
        align_corners: of the bilinear resizes (authors: ``True``).
        rounding: ``"local"`` (``int``), ``"global"`` (Python ``round``) or ``"nearest"`` (halves up).

    Returns:
        ``(N, C, H', W')`` with ``H' = max(int(H s), 1)`` for ``"local"``.
    """
    _check_input(x)
    _check_ratios(r1, r2)
    _check_alpha(alpha)
    _check_penalty(penalty)
    _check_rounding(rounding)
    _, sizes = shape_adaptor_output_size(x.shape[2:], alpha, r1, r2, penalty, rounding)
    weight = _mixing_weight(alpha.reshape(()), r1, r2, penalty).to(x.dtype)
    return _mix(x, weight, list(sizes), r1, r2, align_corners)


def residual_shape_adaptor2d(
    shortcut: Tensor,
    main: Tensor,
    alpha: Tensor,
    r1: float = 0.5,
    r2: float = 1.0,
    penalty: float = 1.0,
    align_corners: bool = True,
    rounding: str = "local",
    factor: float = 2.0,
) -> Tensor:
    """The residual form ``factor ((1 - w) resize(shortcut) + w resize(main))``.

    Args:
        shortcut: the ``r1`` branch, e.g. a stride-2 1x1 conv + BN of the block input ``(N, C, H/2, W/2)``.
        main: the ``r2`` branch, the block's main path at ``r2`` times the block input ``(N, C, H, W)``.
        factor: 2 in the authors' ResNets (``w = 1/2`` is ``f(x) + x``).
        Others: as :func:`shape_adaptor2d`; the size rule's input size is ``main``'s size ``/ r2``.

    Returns:
        ``(N, C, H', W')``.
    """
    _check_input(shortcut, "shortcut")
    _check_input(main, "main")
    _check_ratios(r1, r2)
    _check_alpha(alpha)
    _check_penalty(penalty)
    _check_rounding(rounding)
    _, sizes = shape_adaptor_output_size(_pair_in_size(main, r2), alpha, r1, r2, penalty, rounding)
    weight = _mixing_weight(alpha.reshape(()), r1, r2, penalty).to(main.dtype)
    return _mix_pair(shortcut, main, weight, list(sizes), align_corners, float(factor))


def _ratio_to_alpha(ratio: float, r1: float, r2: float, margin: float = BOUNDARY_MARGIN) -> float:
    """The logit ``alpha`` with ``s(alpha) = ratio``, ``sigmoid(alpha)`` kept ``margin`` inside (0, 1)."""
    sig = (ratio - r1) / (r2 - r1)
    sig = min(max(sig, margin), 1.0 - margin)
    return math.log(sig / (1.0 - sig))


class ShapeAdaptorChain:
    """The sizes carried along one forward pass (the authors' ``ShapeAdaptor.current_dim``), shared
    by the adaptors of one model: a map from each integer size an adaptor produced in the current
    pass to the continuous size it rounds (per axis). Set up by :func:`chain_shape_adaptors`.

    A new pass is recognised without hooks on the model (which TorchScript could not compile): each
    adaptor takes a position in the order of its first call; a call at a position not after the
    previous call's starts a new pass and clears the map. (An adaptor module called twice in one
    pass therefore restarts the product -- from its actual input size, as an unchained layer.)
    """

    def __init__(self) -> None:
        self.sizes: Dict[Tuple[int, ...], Tuple[float, ...]] = {}
        self.positions = 0  # positions handed out
        self.last = -1  # position of the previous call

    def reset(self) -> None:
        """Forget the carried sizes (the next call starts a pass)."""
        self.sizes.clear()
        self.last = -1

    def enter(self, module: "ShapeAdaptor2d") -> None:
        """Called by each adaptor at the start of its forward pass."""
        if module.chain_position is None:
            module.chain_position = self.positions
            self.positions += 1
        if module.chain_position <= self.last:
            self.sizes.clear()
        self.last = module.chain_position

    def carried(self, in_size: Sequence[int]) -> tuple[float, ...]:
        """The continuous size an input of integer size ``in_size`` stands for (itself if no
        adaptor produced it in this pass)."""
        key = tuple(int(v) for v in in_size)
        return self.sizes.get(key, tuple(float(v) for v in key))

    def record(self, out_size: Sequence[int], carried: Sequence[float]) -> None:
        self.sizes[tuple(int(v) for v in out_size)] = tuple(float(v) for v in carried)

    def __repr__(self) -> str:
        return f"ShapeAdaptorChain(sizes={self.sizes}, positions={self.positions})"


class ShapeAdaptor2d(LearnableResize):
    """Learnable-ratio resizing on ``(N, C, H, W)``; see :func:`shape_adaptor2d`.

    Args:
        init_ratio: initial ``s(alpha)`` in ``[r1, r2]`` (moved ``BOUNDARY_MARGIN`` inside).
        r1, r2: branch ratios (default max-pool 2 and identity).
        align_corners: of the bilinear resizes (authors: ``True``).
        share_with: an existing :class:`ShapeAdaptor2d` whose ``alpha`` is reused.
        rounding: output-size rule, ``"local"`` (default), ``"global"`` or ``"nearest"`` (module doc).

    Attributes:
        alpha: the trained logit, shape ``(1,)``.
        penalty: memory-bound factor set by :func:`apply_memory_bound` (1 = none).
        chain: the :class:`ShapeAdaptorChain` carrying sizes between adaptors (``None``: this
            layer starts from its own input size), set by :func:`chain_shape_adaptors`.
    """

    ndim = 2

    def __init__(
        self,
        init_ratio: float = 0.75,
        r1: float = 0.5,
        r2: float = 1.0,
        align_corners: bool = True,
        share_with: "ShapeAdaptor2d | None" = None,
        rounding: str = "local",
    ) -> None:
        super().__init__()
        _check_ratios(r1, r2)
        _check_rounding(rounding)
        self.r1, self.r2 = float(r1), float(r2)
        self.align_corners = bool(align_corners)
        self.rounding = rounding
        self.penalty = 1.0
        self.chain: ShapeAdaptorChain | None = None
        self.chain_position: int | None = None
        if share_with is not None:
            if not isinstance(share_with, ShapeAdaptor2d):
                raise TypeError(f"share_with must be a ShapeAdaptor2d, got {type(share_with).__name__}")
            if (share_with.r1, share_with.r2) != (self.r1, self.r2):
                raise ValueError("share_with must use the same ratios r1, r2")
            if share_with.rounding != rounding:
                raise ValueError(f"share_with must use the same rounding, got {rounding!r} and {share_with.rounding!r}")
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
        """The output size for an input of ``in_size`` that no adaptor produced (no carried size)."""
        return shape_adaptor_output_size(
            in_size, self.alpha.detach(), self.r1, self.r2, self.penalty, self.rounding
        )[1]

    def _call_sizes(self, in_size: tuple[int, int]) -> tuple[int, ...]:
        """Output sizes of this call (reading and updating the chain), recorded as ``last_*``."""
        use_chain = self.chain is not None and self.rounding != "nearest"
        if use_chain:
            self.chain.enter(self)
        carried = self.chain.carried(in_size) if use_chain else None
        surrogate, sizes, carried_out = _sizes(
            in_size, self.alpha, self.r1, self.r2, self.penalty, self.rounding, carried
        )
        if use_chain:
            self.chain.record(sizes, carried_out)
        self.last_in_size = in_size
        self.last_out_size = sizes
        self.last_size_surrogate = surrogate
        return sizes

    def _weight(self, dtype: torch.dtype) -> Tensor:
        return _mixing_weight(self.alpha.reshape(()), self.r1, self.r2, self.penalty).to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x)
        sizes = self._call_sizes((int(x.shape[2]), int(x.shape[3])))
        return _mix(x, self._weight(x.dtype), list(sizes), self.r1, self.r2, self.align_corners)

    def _static_weight(self) -> float:
        if self.last_out_size is None:
            raise RuntimeError("the output size is not known yet: run a forward pass first, or freeze(model, example_input=x)")
        return float(_mixing_weight(self.alpha.detach().reshape(()), self.r1, self.r2, self.penalty))

    def _in_alpha_dtype(self, static: "StaticShapeAdaptor2d", weight: float) -> "StaticShapeAdaptor2d":
        """The static weight in ``alpha``'s dtype (a float64 model stays float64 when frozen)."""
        static.weight = torch.tensor(weight, dtype=self.alpha.dtype, device=self.alpha.device)
        return static

    def to_static(self) -> "StaticShapeAdaptor2d":
        weight = self._static_weight()
        return self._in_alpha_dtype(
            StaticShapeAdaptor2d(self.last_out_size, weight, self.r1, self.r2, self.align_corners), weight)

    def extra_repr(self) -> str:
        text = f"ratio={float(self.ratio.detach()):.3f}, r1={self.r1:g}, r2={self.r2:g}, rounding={self.rounding}"
        if not self.align_corners:
            text += ", align_corners=False"
        if self.penalty != 1.0:
            text += f", penalty={self.penalty:.3f}"
        if self.last_in_size is not None:
            text += f", last={self.last_in_size}->{self.last_out_size}"
        return text


class ResidualShapeAdaptor2d(ShapeAdaptor2d):
    """The authors' residual Shape Adaptor: ``forward(shortcut, main)`` returns
    ``factor ((1 - w) resize(shortcut) + w resize(main))``, see :func:`residual_shape_adaptor2d`.

    In a residual block it replaces ``main + shortcut`` of a downsampling block: ``shortcut`` is
    the ``r1`` branch (e.g. 1x1 conv with stride 2 + BN), ``main`` the ``r2`` branch (the block's
    convolutions at stride 1). Arguments as :class:`ShapeAdaptor2d`, plus ``factor`` (authors: 2).
    """

    def __init__(
        self,
        init_ratio: float = 0.75,
        r1: float = 0.5,
        r2: float = 1.0,
        align_corners: bool = True,
        share_with: "ShapeAdaptor2d | None" = None,
        rounding: str = "local",
        factor: float = 2.0,
    ) -> None:
        super().__init__(init_ratio, r1, r2, align_corners, share_with, rounding)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"factor must be a finite number > 0, got {factor!r}")
        self.factor = float(factor)

    def forward(self, shortcut: Tensor, main: Tensor) -> Tensor:  # type: ignore[override]
        _check_input(shortcut, "shortcut")
        _check_input(main, "main")
        sizes = self._call_sizes(_pair_in_size(main, self.r2))
        return _mix_pair(shortcut, main, self._weight(main.dtype), list(sizes), self.align_corners, self.factor)

    def to_static(self) -> "StaticResidualShapeAdaptor2d":
        weight = self._static_weight()
        return self._in_alpha_dtype(StaticResidualShapeAdaptor2d(
            self.last_out_size, weight, self.r1, self.r2, self.align_corners, self.factor), weight)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", factor={self.factor:g}"


class StaticShapeAdaptor2d(nn.Module):
    """A frozen :class:`ShapeAdaptor2d`: fixed output size and mixing weight, no parameters."""

    def __init__(
        self, out_size: Sequence[int], weight: float, r1: float = 0.5, r2: float = 1.0, align_corners: bool = True
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


class StaticResidualShapeAdaptor2d(StaticShapeAdaptor2d):
    """A frozen :class:`ResidualShapeAdaptor2d`: ``forward(shortcut, main)``, no parameters."""

    def __init__(
        self, out_size: Sequence[int], weight: float, r1: float = 0.5, r2: float = 1.0, align_corners: bool = True,
        factor: float = 2.0,
    ) -> None:
        super().__init__(out_size, weight, r1, r2, align_corners)
        self.factor = float(factor)

    def forward(self, shortcut: Tensor, main: Tensor) -> Tensor:  # type: ignore[override]
        _check_input(shortcut, "shortcut")
        _check_input(main, "main")
        return _mix_pair(shortcut, main, self.weight, [s for s in self.out_size], self.align_corners, self.factor)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", factor={self.factor:g}"


def module_macs(module: nn.Module, inputs: tuple, output: Tensor) -> int:
    """MACs of one Shape Adaptor call (single-input or residual form, learnable or frozen): two
    bilinear resizes to the output size (4 taps each per output element, charged even when a resize
    is skipped because the sizes already match, so the count depends on the architecture only); the
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


def chain_shape_adaptors(model: nn.Module, rounding: str | None = None) -> ShapeAdaptorChain:
    """Give every :class:`ShapeAdaptor2d` of ``model`` one shared :class:`ShapeAdaptorChain`
    (idempotent: a second call keeps the chain the adaptors already share). With ``rounding`` also
    set every adaptor's size rule (e.g. ``"global"`` for the authors' AutoSC). Returns the chain.

    Nothing is attached to ``model`` itself: the adaptors recognise a new forward pass (see
    :class:`ShapeAdaptorChain`), so the model can still be frozen, scripted and exported."""
    if rounding is not None:
        _check_rounding(rounding)
    adaptors = [m for m in model.modules() if isinstance(m, ShapeAdaptor2d)]
    chains = {id(m.chain): m.chain for m in adaptors if m.chain is not None}
    chain = next(iter(chains.values())) if len(chains) == 1 and all(m.chain is not None for m in adaptors) else None
    if chain is None:
        chain = ShapeAdaptorChain()
        for m in adaptors:
            m.chain_position = None
    chain.reset()
    for module in adaptors:
        module.chain = chain
        if rounding is not None:
            module.rounding = rounding
    return chain


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
    Also chains the adaptors (:func:`chain_shape_adaptors`).

    Returns the ratio ``s`` requested (before clipping). Sizes may be ints or ``(H, W)`` pairs;
    the per-axis ratios are averaged (adaptors are symmetric)."""
    adaptors = shape_adaptors(model)
    if not adaptors:
        raise ValueError("model has no ShapeAdaptor2d layers to initialise")
    if not (isinstance(fixed_reduction, (int, float)) and fixed_reduction > 0):
        raise ValueError(f"fixed_reduction must be a number > 0, got {fixed_reduction!r}")
    inp, tgt = _size_pair(input_size, "input_size"), _size_pair(target_size, "target_size")
    total = sum(t / (i * fixed_reduction) for t, i in zip(tgt, inp)) / 2.0
    ratio = total ** (1.0 / len(adaptors))
    with torch.no_grad():
        for m in adaptors:
            m.alpha.fill_(_ratio_to_alpha(ratio, m.r1, m.r2))
    chain_shape_adaptors(model)
    return ratio


def apply_memory_bound(model: nn.Module, input_size: int | Sequence[int], limit: float | None) -> float:
    """The paper's memory bound: if ``input_size * prod_i s_i(alpha_i)`` (largest axis, no penalty)
    exceeds ``limit``, set every adaptor's ``penalty`` to ``(limit / that)^(1/n)`` so the final
    size meets the limit; otherwise (or ``limit=None``) reset the penalties to 1. Returns the
    penalty. Assumes the adaptors are chained (each resizes the previous one's output)."""
    adaptors = shape_adaptors(model)
    if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
        raise ValueError(f"limit must be a number > 0 or None, got {limit!r}")
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
        return ShapeAdaptor2d(r1=share_with.r1, r2=share_with.r2, align_corners=share_with.align_corners,
                              share_with=share_with, rounding=share_with.rounding)
    ratio = (1.0 / stride[0], 1.0 / stride[1]) if init_scale is None else init_scale
    if abs(ratio[0] - ratio[1]) > 1e-12:
        raise ValueError(f"shape_adaptor resizes both axes by one ratio: init_scale must be square, got {ratio}")
    r1 = min(0.5, ratio[0])
    r1 = 1.0 / math.ceil(1.0 / r1 - 1e-9)  # max-pooling branch by an integer factor
    return ShapeAdaptor2d(init_ratio=ratio[0], r1=r1, r2=1.0)


@register_residual_pool("shape_adaptor")
def _residual_shape_adaptor(stride, init_scale):
    """The authors' residual form for a block downsampling by ``stride``: the shortcut is the
    ``r1 = 1/stride`` branch (the block's strided 1x1 projection), the main path at stride 1 the
    ``r2 = 1`` branch; initial ratio ``1/stride`` (kept ``BOUNDARY_MARGIN`` inside) or ``init_scale``."""
    if stride[0] != stride[1]:
        raise ValueError(f"the residual shape adaptor resizes both axes by one ratio: stride must be square, got {stride}")
    r1 = 1.0 / stride[0]
    ratio = (r1, r1) if init_scale is None else init_scale
    if abs(ratio[0] - ratio[1]) > 1e-12:
        raise ValueError(f"shape_adaptor resizes both axes by one ratio: init_scale must be square, got {ratio}")
    if r1 >= 1.0:
        raise ValueError(f"the residual shape adaptor needs a downsampling stride > 1, got {stride}")
    if not r1 <= ratio[0] <= 1.0:
        raise ValueError(f"the residual shape adaptor's init_scale must be in [1/stride, 1] = [{r1:g}, 1] (its "
                         f"shortcut is fixed at 1/stride), got {ratio[0]!r}")
    return ResidualShapeAdaptor2d(init_ratio=ratio[0], r1=r1, r2=1.0)
