"""Hitting a GMACs budget: adapt lambda during training, then pin the architecture.

Jang et al. 2023 (appendix D) controls the model size only indirectly through lambda. ``GmacsBudget``
turns the target into a feedback loop, in two phases over ``total_steps`` optimiser steps:

1. **Control** (all but the last ``final_fraction`` of the steps): after every step, a
   proportional-integral controller on the error ``e = log(GMACs / target)`` updates the signed
   multiplier of the GMACs loss ``lambda = u / GMACs`` (logged as ``budget_multiplier``: unlike
   the user's ``lambda`` it can be negative) by ``u += k_i * e + k_p * (e - e_prev)`` (clipped per step). More MACs
   than wanted raise lambda; fewer lower it, below zero if needed (then the loss rewards MACs and
   the scales grow back). The integral gain is per whole run, so the loop settles in the same share
   of any run length.
2. **Final phase**: the exact GMACs of the network (``count_macs``) are measured; if they miss
   the target by more than half the tolerance, every learnable scale is multiplied by one common
   factor found by bisection (GMACs grow monotonically with the scales), through the resizers'
   :meth:`~poolarch.layers.LearnableResize.rescale_`, so that the network lands on the target. When
   the integer sizes make every common factor step over the target by more than half the tolerance
   (small maps), single axes of single layers are then moved greedily, one pixel at a time, towards
   it. The architecture parameters are then frozen (learning rate 0) and
   the weights train on for the rest of the run, so the final model's GMACs equal the pinned value.

``GmacsBudget.history`` (lambda, GMACs) and the projection factor are logged per epoch.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from ..layers.base import LearnableResize, learnable_resizers

__all__ = ["GmacsBudget", "distinct_resizers", "project_to_budget", "reachable_gmacs", "check_reachable"]

#: scale that puts every DynOPool layer at its minimum output size (``min_size``)
_TINY_SCALE = 1e-6


def distinct_resizers(model: nn.Module) -> list[LearnableResize]:
    """The learnable resizers of ``model``, one per set of architecture parameters: of layers that
    share their scale (a residual path and its shortcut) only the first, so that an in-place
    update of the scale (:meth:`~LearnableResize.rescale_`) is applied once."""
    seen: set[int] = set()
    out = []
    for _, module in learnable_resizers(model):
        ids = {id(p) for p in module.arch_parameters()}
        if ids and ids <= seen:
            continue
        seen |= ids
        out.append(module)
    return out


@torch.no_grad()
def project_to_budget(
    model: nn.Module,
    measure_gmacs: Callable[[], float],
    target: float,
    tolerance: float,
    max_log_factor: float = 3.0,
    iterations: int = 30,
    max_scale: float | None = None,
) -> tuple[float, float]:
    """Multiply every learnable scale ``r`` by ``exp(-c)`` (DynOPool: every ``alpha = 1/r`` by
    ``exp(c)``), with ``c`` found by bisection so that ``measure_gmacs()`` is as close to
    ``target`` as the integer sizes allow. Resizers that cannot be rescaled raise ``ValueError``.
    With ``max_scale`` every scale is clamped to ``r <= max_scale`` after the rescale (the
    training cap holds for the projected architecture too).

    When every common factor leaves the GMACs more than ``tolerance / 2`` off (the integer sizes
    step over the target), single axes are then moved towards it (:func:`_refine_axes`).

    Returns ``(factor, gmacs)``: ``exp(c)``, the common factor applied to every inverse scale
    ``1/r``, and the GMACs after projection.
    """
    resizers = distinct_resizers(model)
    if not resizers:
        raise ValueError("target_gmacs needs DynOPool layers (pool='dynopool'): no scale to adjust")
    original = [[p.detach().clone() for p in m.arch_parameters()] for m in resizers]

    def evaluate(c: float) -> float:
        for module, params in zip(resizers, original):
            for p, p0 in zip(module.arch_parameters(), params):
                p.copy_(p0)
            module.rescale_(math.exp(-c))
            if max_scale is not None:
                module.clamp_scale_(max_scale)
        return measure_gmacs()

    best_c, best_g = 0.0, evaluate(0.0)
    low, high = -max_log_factor, max_log_factor
    for _ in range(iterations):
        if abs(best_g / target - 1.0) <= tolerance / 4:
            break
        mid = 0.5 * (low + high)
        g = evaluate(mid)
        if abs(g / target - 1.0) < abs(best_g / target - 1.0):
            best_c, best_g = mid, g
        if g > target:  # too many MACs: smaller scales (larger alpha)
            low = mid
        else:
            high = mid
    evaluate(best_c)
    if abs(best_g / target - 1.0) > tolerance / 2:  # the integer sizes step past the target
        best_g = _refine_axes(resizers, measure_gmacs, target, tolerance, max_scale)
    return math.exp(best_c), best_g


@torch.no_grad()
def _refine_axes(resizers: list[LearnableResize], measure_gmacs: Callable[[], float], target: float,
                 tolerance: float, max_scale: float | None, rounds: int = 8, steps: int = 12,
                 step: float = 1.03) -> float:
    """Greedy per-axis refinement after the common rescale, for networks whose GMACs under one
    common factor jump over the target (small maps: one pixel of every map at once is several %).
    Each round tries, for every resizer and spatial axis, the nearest scale ``r * step**(+-k)``
    (``k <= steps``) in each direction that changes the GMACs, and keeps the single move that brings
    them closest to the target; it stops within ``tolerance / 4`` or when no move helps. Returns the
    GMACs of the architecture it leaves in place."""
    best = measure_gmacs()
    for _ in range(rounds):
        if abs(best / target - 1.0) <= tolerance / 4:
            break
        best_move: tuple[LearnableResize, list[float], float] | None = None
        for module in resizers:
            base = [float(v) for v in torch.as_tensor(module.scale).reshape(-1)]
            for axis in range(len(base)):
                for sign in (1, -1):
                    for k in range(1, steps + 1):
                        trial = list(base)
                        trial[axis] = base[axis] * step ** (sign * k)
                        if max_scale is not None:
                            trial[axis] = min(trial[axis], max_scale)
                        module.set_scale(trial)
                        g = measure_gmacs()
                        if g != best:  # the first scale that moves a map by a pixel
                            break
                    if abs(g / target - 1.0) < abs((best_move[2] if best_move else best) / target - 1.0):
                        best_move = (module, trial, g)
                module.set_scale(base)
        if best_move is None:
            break
        module, scales, best = best_move
        module.set_scale(scales)
    return best


@torch.no_grad()
def reachable_gmacs(model: nn.Module, measure_gmacs: Callable[[], float], max_scale: float | None,
                    stop_above: float | None = None, step: float = 1.25) -> tuple[float, float]:
    """``(smallest, largest)`` GMACs the learnable scales of ``model`` can give: every scale at its
    minimum (each layer at its ``min_size``) and every scale at ``max_scale`` (``inf`` without a
    cap). The parameters are restored afterwards.

    The largest is reached by growing every scale by ``step`` per measurement (clamped to the cap),
    so no forward pass is much larger than needed: with ``stop_above`` the climb stops at the first
    architecture with at least that many GMACs and returns its GMACs as ``largest`` (a lower bound:
    the target is reachable, the cap need not be measured)."""
    resizers = distinct_resizers(model)
    original = [[p.detach().clone() for p in m.arch_parameters()] for m in resizers]

    def restore() -> None:
        for module, params in zip(resizers, original):
            for p, p0 in zip(module.arch_parameters(), params):
                p.copy_(p0)

    try:
        for module in resizers:
            module.set_scale([_TINY_SCALE] * module.ndim)
        low = measure_gmacs()
        restore()
        if max_scale is None:
            return low, math.inf
        smallest = min(float(torch.as_tensor(m.scale).min()) for m in resizers)
        factor = 1.0
        while True:
            restore()
            for module in resizers:
                module.rescale_(factor)
                module.clamp_scale_(max_scale)
            high = measure_gmacs()
            if (stop_above is not None and high >= stop_above) or smallest * factor >= max_scale:
                return low, high
            factor = min(factor * step, max_scale / smallest)
    finally:
        restore()


def check_reachable(target: float, low: float, high: float, tolerance: float, max_scale: float | None) -> None:
    """``ValueError`` naming the reachable range unless some GMACs in ``[low, high]`` lie within
    ``tolerance`` of ``target``."""
    if target * (1 + tolerance) >= low and target * (1 - tolerance) <= high:
        return
    cap = f"max_scale {max_scale:g}" if max_scale is not None else "no cap"
    raise ValueError(f"target_gmacs {target:g} is out of reach: the model's learnable scales give {low:.6g} to "
                     f"{high:.6g} GMACs per image (every scale between the layers' minimum size and {cap}); "
                     f"choose a target in that range")


class GmacsBudget:
    """Lambda controller + final projection; see the module docstring.

    The controller works on a *signed* lambda ``lambda = u / GMACs_now``: the penalty
    ``lambda * GMACs`` then has the value ``u`` and the gradient ``u * d log(GMACs)``, of the size of
    a cross-entropy loss for ``|u| ~ 1`` whatever the network's current size (a fixed lambda would
    make a reward for MACs grow with the MACs and run away). Above the target ``u`` grows
    (penalise MACs); below it ``u`` may turn negative, which rewards MACs and lets the scales grow
    back -- a non-negative lambda could only stop shrinking, never undo it.

    Args:
        target: GMACs per image to land on.
        total_steps: optimiser steps of the whole run.
        tolerance: relative tolerance of the final GMACs (0.05 = within 5%).
        initial_lambda: starting lambda (the config's lambda; 0 starts neutral).
        final_fraction: share of the steps spent with the architecture pinned.
        k_i, k_p: integral gain (per whole run) and proportional gain of ``u`` on ``log(GMACs/target)``.
        max_step: largest change of ``u`` in one step.
        max_scale: cap on every scale, also after the final projection (``None``: no cap).
    """

    def __init__(
        self,
        target: float,
        total_steps: int,
        tolerance: float = 0.05,
        initial_lambda: float = 0.0,
        final_fraction: float = 0.1,
        k_i: float = 20.0,
        k_p: float = 2.0,
        max_step: float = 0.05,
        max_scale: float | None = None,
    ) -> None:
        if target <= 0:
            raise ValueError(f"target_gmacs must be > 0, got {target}")
        self.target = float(target)
        self.total_steps = int(total_steps)
        self.tolerance = float(tolerance)
        self.final_start = self.total_steps - max(1, round(final_fraction * self.total_steps))
        self.k_i = k_i / max(1, self.total_steps)
        self.k_p = k_p
        self.max_step = max_step
        self.max_scale = max_scale
        self.gmacs = self.target
        self.u = float(initial_lambda) * self.target
        self.prev_error: float | None = None
        self.frozen = False
        self.projection_factor: float | None = None

    @property
    def lambda_(self) -> float:
        return self.u / self.gmacs

    def update(self, gmacs: float) -> float:
        """Controller step after an optimiser step with the network at ``gmacs``; returns lambda."""
        if self.frozen:
            return self.lambda_
        self.gmacs = max(gmacs, 1e-12)
        error = math.log(self.gmacs / self.target)
        delta = self.k_i * error + (0.0 if self.prev_error is None else self.k_p * (error - self.prev_error))
        self.u += max(-self.max_step, min(self.max_step, delta))
        self.prev_error = error
        return self.lambda_

    def should_freeze(self, step: int) -> bool:
        """True when optimiser step ``step`` (0-based, about to run) starts the final phase."""
        return not self.frozen and step >= self.final_start

    def freeze(self, model: nn.Module, measure_gmacs: Callable[[], float]) -> float:
        """Project the architecture onto the target if needed and pin it; returns the GMACs."""
        gmacs = measure_gmacs()
        if abs(gmacs / self.target - 1.0) > self.tolerance / 2:
            self.projection_factor, gmacs = project_to_budget(model, measure_gmacs, self.target, self.tolerance,
                                                                  max_scale=self.max_scale)
        else:
            self.projection_factor = 1.0
        self.frozen = True
        return gmacs

    def state_dict(self) -> dict[str, Any]:
        return {"u": self.u, "gmacs": self.gmacs, "prev_error": self.prev_error, "frozen": self.frozen,
                "projection_factor": self.projection_factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.u = state["u"]
        self.gmacs = state["gmacs"]
        self.prev_error = state["prev_error"]
        self.frozen = state["frozen"]
        self.projection_factor = state["projection_factor"]

