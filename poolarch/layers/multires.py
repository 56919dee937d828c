"""Multi-resolution block (the multi-resolution-block paper (WACV submission 832), Eq. 4-5; Javan et al. 2023 appendix C uses it as its DARTS baseline).

One convolution block ``B`` is applied with the **same filters** at ``R`` resolutions: branch
``r`` (``r = 0 .. R-1``) pools the input by ``2**r`` (max or average, ``ceil_mode`` so every size
works), applies ``B``, upsamples the result back to the input size (nearest or bilinear) and
weighs it by ``w_r = softmax(alpha / T)_r``; the branches are summed::

    M(h) = sum_r w_r * U_{2^r}(B(S_{2^r}(h)))

The block keeps the resolution of its input: following the paper, a multi-resolution network runs
at full resolution throughout and "pooling" only exists inside the pooled branches (the
resolution never changes between layers). Since the branch at level ``r`` costs ``4**-r`` of the
full-resolution one, the block costs at most ``1 + 1/4 + 1/16 + ... < 4/3`` of ``B`` alone.

Mixing modes: ``"learned"`` (``alpha`` is a parameter, initialised uniform, returned by
:meth:`MultiResBlock.arch_parameters` so :func:`poolarch.layers.architecture_parameters` finds it)
and ``"uniform"`` (fixed equal weights: the paper's *scale invariant* baseline).

Pruning: :meth:`MultiResBlock.prune` deactivates resolutions whose weight is below a threshold;
:meth:`MultiResBlock.keep_only` keeps one. Inactive branches are not computed and the remaining
weights are **renormalised** (softmax over the active logits only), so a pruned block is exactly the
block made of its kept branches with weights ``w_r / sum_kept w``.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import check_choice
from .factory import FIXED_POOLS
from .base import check_nonempty

__all__ = [
    "multi_resolution",
    "mixing_weights",
    "pyramid",
    "add_upsampled",
    "downsample",
    "upsample",
    "MultiResBlock",
    "POOL_MODES",
    "UPSAMPLE_MODES",
    "MIXING_MODES",
]

POOL_MODES = FIXED_POOLS  # the branches pool with a fixed kind
UPSAMPLE_MODES = ("nearest", "bilinear")
MIXING_MODES = ("learned", "uniform")


def downsample(x: Tensor, level: int, pool: str = "max") -> Tensor:
    """Pool ``(N, C, H, W)`` by ``2**level`` (``ceil_mode``: output ``ceil(H / 2**level)``)."""
    if level == 0:
        return x
    k = 2**level
    if pool == "max":
        return F.max_pool2d(x, k, k, ceil_mode=True)
    return F.avg_pool2d(x, k, k, ceil_mode=True)


def upsample(x: Tensor, size: Sequence[int], mode: str = "nearest") -> Tensor:
    """Resize ``(N, C, h, w)`` to spatial ``size`` (no-op when already there)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def mixing_weights(logits: Tensor, active: Tensor, temperature: float = 1.0) -> Tensor:
    """``softmax(logits / T)`` over the ``active`` entries (bool mask, shape ``(R,)``); inactive
    entries get weight 0. Shape ``(R,)``."""
    masked = (logits / temperature).masked_fill(~active, float("-inf"))
    return torch.softmax(masked, dim=0)


def pyramid(x: Tensor, levels: Sequence[int], pool: str = "max") -> dict[int, Tensor]:
    """``{level: x pooled by 2**level}`` for the requested levels. Each level is pooled from the
    previous (finer) one, which reads less memory and equals pooling ``x`` by ``2**level`` at once
    for max pooling, and for average pooling when the sizes divide exactly (otherwise -- partial
    ``ceil_mode`` windows -- ``x`` is pooled directly)."""
    out: dict[int, Tensor] = {}
    current, current_level = x, 0
    for level in sorted(set(levels)):
        if level == 0:
            out[0] = x
            continue
        exact = pool == "max" or all(s % 2 ** (level - current_level) == 0 for s in current.shape[-2:])
        out[level] = downsample(current, level - current_level, pool) if exact else downsample(x, level, pool)
        current, current_level = out[level], level
    return out


def add_upsampled(out: Tensor | None, y: Tensor, size: Sequence[int], mode: str = "nearest") -> Tensor:
    """``out + U(y)`` with ``U`` resizing ``y`` to spatial ``size``. For nearest upsampling by an
    integer factor the sum is formed by broadcasting (the upsampled map is never materialised)."""
    h, w = y.shape[-2:]
    H, W = size
    if out is None:
        return upsample(y, size, mode)
    if mode == "nearest" and (h, w) != (H, W) and H % h == 0 and W % w == 0 and out.is_contiguous():
        kh, kw = H // h, W // w
        n, c = out.shape[:2]
        summed = out.view(n, c, h, kh, w, kw) + y.reshape(y.shape[0], y.shape[1], h, 1, w, 1)
        return summed.view(n, c, H, W)
    return out + upsample(y, size, mode)


def multi_resolution(
    x: Tensor,
    branches: Sequence[Callable[[Tensor], Tensor]],
    weights: Tensor,
    levels: Sequence[int] | None = None,
    pool: str = "max",
    upsample_mode: str = "nearest",
) -> Tensor:
    """Eq. 4: ``sum_i weights[i] * U(branches[i](S_{2^levels[i]}(x)))``.

    The weights multiply the (small) branch outputs before upsampling, which is the same thing
    since both upsampling modes are linear.

    Args:
        x: input ``(N, C_in, H, W)``.
        branches: one callable per computed branch (the same module for shared filters).
        weights: ``(len(branches),)`` mixing weights of those branches.
        levels: resolution level of each branch (``x`` pooled by ``2**level``); default ``0, 1, ...``.
        pool: ``"max"`` or ``"avg"``.
        upsample_mode: ``"nearest"`` or ``"bilinear"``.

    Returns:
        ``(N, C_out, H, W)``: every branch is resized to the input's spatial size.
    """
    check_choice(pool, POOL_MODES, "pool")
    check_choice(upsample_mode, UPSAMPLE_MODES, "upsample")
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    levels = list(range(len(branches))) if levels is None else list(levels)
    if len(levels) != len(branches) or weights.shape != (len(branches),):
        raise ValueError(
            f"branches ({len(branches)}), levels ({len(levels)}) and weights {tuple(weights.shape)} must agree"
        )
    if not branches:
        raise ValueError("branches must not be empty")
    size = tuple(x.shape[-2:])
    inputs = pyramid(x, levels, pool)
    out = None
    for branch, level, w in sorted(zip(branches, levels, weights), key=lambda t: t[1]):
        y = branch(inputs[level])
        out = add_upsampled(out, w.to(y.dtype) * y, size, upsample_mode)
    return out


class MultiResBlock(nn.Module):
    """Meta-block ``M`` of the multi-resolution-block paper (WACV submission 832) (Eq. 4-5) around a size-preserving block ``B``.

    Args:
        block: the block ``B`` (maps ``(N, C_in, H, W)`` to ``(N, C_out, H, W)``).
        resolutions: ``R``, number of resolutions (levels ``0 .. R-1``, pooled by ``2**r``).
        pool: ``"max"`` or ``"avg"``, the pooling of the branches.
        upsample: ``"nearest"`` or ``"bilinear"``.
        temperature: ``T > 0`` of the softmax ``softmax(alpha / T)``.
        mixing: ``"learned"`` (``alpha`` is a parameter) or ``"uniform"`` (fixed equal weights).
        share_weights: same filters at every resolution (the multi-resolution-block paper (WACV submission 832)). ``False`` gives each
            resolution its own copy of ``block`` (Javan et al. 2023 Table 1 "not shared").
        same_init: with ``share_weights=False``, copies start identical (``True``, "same init.")
            or are re-initialised with ``reset_parameters`` ("rnd init.").

    Shapes: input ``(N, C_in, H, W)`` -> output ``(N, C_out, H, W)``.
    """

    def __init__(
        self,
        block: nn.Module,
        resolutions: int = 3,
        pool: str = "max",
        upsample: str = "nearest",
        temperature: float = 1.0,
        mixing: str = "learned",
        share_weights: bool = True,
        same_init: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(block, nn.Module):
            raise TypeError(f"block must be an nn.Module, got {type(block).__name__}")
        if isinstance(resolutions, bool) or not isinstance(resolutions, int) or resolutions < 1:
            raise ValueError(f"resolutions must be an int >= 1, got {resolutions!r}")
        check_choice(pool, POOL_MODES, "pool")
        check_choice(upsample, UPSAMPLE_MODES, "upsample")
        check_choice(mixing, MIXING_MODES, "mixing")
        if not (isinstance(temperature, (int, float)) and temperature > 0 and temperature != float("inf")):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.resolutions = resolutions
        self.pool = pool
        self.upsample = upsample
        self.temperature = float(temperature)
        self.mixing = mixing
        self.share_weights = share_weights
        if share_weights:
            self.blocks = nn.ModuleList([block])
        else:
            copies = [block] + [copy.deepcopy(block) for _ in range(resolutions - 1)]
            if not same_init:
                for c in copies[1:]:
                    for m in c.modules():
                        reset = getattr(m, "reset_parameters", None)
                        if callable(reset):
                            reset()
            self.blocks = nn.ModuleList(copies)
        logits = torch.zeros(resolutions)
        if mixing == "learned":
            self.alpha = nn.Parameter(logits)
        else:
            self.register_buffer("alpha", logits)
        self.register_buffer("active", torch.ones(resolutions, dtype=torch.bool))

    # -- architecture ---------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The mixing logits ``alpha`` when learned, else nothing."""
        return [self.alpha] if isinstance(self.alpha, nn.Parameter) else []

    def weights(self) -> Tensor:
        """Mixing weights ``(R,)``: ``softmax(alpha / T)`` over active resolutions, 0 elsewhere."""
        return mixing_weights(self.alpha, self.active, self.temperature)

    def active_levels(self) -> list[int]:
        return [int(i) for i in torch.nonzero(self.active).flatten()]

    def block_at(self, level: int) -> nn.Module:
        """The block applied at resolution ``level``."""
        return self.blocks[0] if self.share_weights else self.blocks[level]

    @torch.no_grad()
    def prune(self, threshold: float) -> list[int]:
        """Deactivate every resolution whose current weight is ``< threshold``; the largest one is
        always kept. Returns the removed levels. Remaining weights renormalise (see module doc)."""
        if not (0.0 <= float(threshold) <= 1.0):
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        w = self.weights()
        keep = (w >= threshold) & self.active
        keep[int(torch.argmax(w))] = True
        removed = [int(i) for i in torch.nonzero(self.active & ~keep).flatten()]
        self.active.copy_(keep)
        return removed

    @torch.no_grad()
    def keep_only(self, level: int | None = None) -> int:
        """Keep one resolution (default: the largest weight). Returns the kept level."""
        if level is None:
            level = int(torch.argmax(self.weights()))
        if not (isinstance(level, int) and 0 <= level < self.resolutions):
            raise ValueError(f"level must be an int in [0, {self.resolutions - 1}], got {level!r}")
        self.active.zero_()
        self.active[level] = True
        return level

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"input of MultiResBlock must be a (N, C, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        check_nonempty(x, "MultiResBlock")
        levels = self.active_levels()
        w = self.weights()[levels]
        return multi_resolution(x, [self.block_at(r) for r in levels], w, levels, self.pool, self.upsample)

    def extra_repr(self) -> str:
        w = ", ".join(f"{v:.3f}" for v in self.weights().detach().tolist())
        return (
            f"resolutions={self.resolutions}, pool={self.pool!r}, upsample={self.upsample!r}, "
            f"mixing={self.mixing!r}, temperature={self.temperature}, shared={self.share_weights}, "
            f"weights=[{w}]"
        )
