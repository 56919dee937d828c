"""Method ``"dynopool"``: learnable resizers trained jointly with the weights (Jang et al. 2023).

* The architecture parameters form their own parameter group (``scale_lr``, no weight decay).
* The complexity loss ``lambda * GMACs`` (Eq. 8, :class:`poolarch.complexity.ComplexityLoss`) is
  added to the task loss when ``lambda > 0`` (``local_complexity``: the paper's local variant).
* ``max_scale``: after every optimiser step each resizer projects its parameters so that its
  scale ``r <= max_scale`` (:meth:`~poolarch.layers.LearnableResize.clamp_scale_`; for DynOPool
  ``alpha >= 1/max_scale``, so one large gradient cannot make a scale negative or blow a map up).
* ``target_gmacs``: instead of a fixed ``lambda``, :class:`~poolarch.methods.budget.GmacsBudget`
  adapts a signed multiplier of the GMACs loss (starting at ``lambda``; logged as
  ``budget_multiplier``) after every step and, for the last part of the run, projects the scales onto the
  target and pins them (the ``arch`` group's learning rate is then 0).

The resizers are reached only through the :class:`~poolarch.layers.LearnableResize` interface,
so the method trains any learnable pool (``shape_adaptor`` and ``diffstride`` too, without the
budget, which needs :meth:`~poolarch.layers.LearnableResize.rescale_`).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from ..complexity import ComplexityLoss, current_gmacs
from ..layers.base import learnable_resizers
from .base import Method, RunInfo, register_method
from .budget import GmacsBudget, check_reachable, distinct_resizers, reachable_gmacs

__all__ = ["DynOPoolMethod"]


@register_method("dynopool")
class DynOPoolMethod(Method):
    """Args (besides those of :class:`~poolarch.methods.Method`):
        lambda_: coefficient of the complexity loss (GMACs per image); 0 disables it.
        local_complexity: the paper's local variant of the complexity gradient.
        max_scale: upper bound of every learned scale after each step (``None``: no bound).
        target_gmacs: GMACs per image to land on (``None``: fixed ``lambda_``).
        target_tolerance: relative tolerance of the final GMACs.
    """

    config_keys: ClassVar[tuple[str, ...]] = Method.config_keys + (
        "lambda_", "max_scale", "target_gmacs", "target_tolerance")

    def __init__(self, lr: float = 0.1, scale_lr: float = 0.01, weight_decay: float = 5e-4, lambda_: float = 0.0,
                 local_complexity: bool = False, max_scale: float | None = None, target_gmacs: float | None = None,
                 target_tolerance: float = 0.05) -> None:
        super().__init__(lr=lr, scale_lr=scale_lr, weight_decay=weight_decay)
        if lambda_ < 0:
            raise ValueError(f"lambda must be >= 0, got {lambda_}")
        if max_scale is not None and not max_scale > 0:
            raise ValueError(f"max_scale must be > 0 or None, got {max_scale}")
        self.lambda_ = lambda_
        self.local_complexity = local_complexity
        self.max_scale = max_scale
        self.target_gmacs = target_gmacs
        self.target_tolerance = target_tolerance
        self.complexity: ComplexityLoss | None = None
        self.budget: GmacsBudget | None = None
        self.resizers: list[nn.Module] = []
        self.example: Tensor | None = None

    def setup(self, model: nn.Module, example_input: Tensor, run: RunInfo | None = None) -> None:
        super().setup(model, example_input, run)
        self.example = example_input
        self.resizers = distinct_resizers(model)
        if learnable_resizers(model):
            self.complexity = ComplexityLoss(model, example_input, local=self.local_complexity)
        if self.target_gmacs is None:
            return
        try:
            for resizer in self.resizers:
                resizer.rescale_(1.0)  # a no-op that tells whether the budget can project this layer
        except NotImplementedError:
            pass
        else:
            if self.resizers:
                if run is None:
                    raise ValueError("target_gmacs needs the run's length: pass run=RunInfo(...) to setup")
                low, high = reachable_gmacs(model, lambda: current_gmacs(model, example_input), self.max_scale,
                                            stop_above=self.target_gmacs * (1 - self.target_tolerance))
                check_reachable(self.target_gmacs, low, high, self.target_tolerance, self.max_scale)
                self.budget = GmacsBudget(self.target_gmacs, run.total_steps, self.target_tolerance, self.lambda_,
                                          max_scale=self.max_scale)
                self.lambda_ = self.budget.lambda_
                if self.budget.should_freeze(0):  # a run too short for a control phase
                    self.budget.freeze(model, lambda: current_gmacs(model, example_input))
                return
        kinds = sorted({type(m).__name__ for m in self.resizers}) or ["no learnable resizer"]
        raise ValueError(f"target_gmacs adjusts DynOPool scales: it needs pool 'dynopool'; the model has {kinds}")

    def lr_scale(self, group_name: str) -> float:
        """0 for the architecture group once the budget has pinned the architecture."""
        return 0.0 if group_name == "arch" and self.budget is not None and self.budget.frozen else 1.0

    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return model(inputs)

    def current_gmacs(self) -> float | None:
        """GMACs per image as of the last forward pass (``None`` without learnable resizers)."""
        if self.complexity is None:
            return None
        with torch.no_grad():
            return float(self.complexity())

    def extra_losses(self, model: nn.Module) -> dict[str, Tensor]:
        if self.complexity is None or self.lambda_ == 0:
            return {}
        return {"gmacs": self.lambda_ * self.complexity()}

    def after_step(self, model: nn.Module, step: int) -> None:
        """Clamp the scales to ``max_scale``; update the budget's lambda; at the start of the
        budget's final phase (before step ``step + 1``) project onto the target and pin."""
        if self.max_scale is not None:
            for resizer in self.resizers:
                resizer.clamp_scale_(self.max_scale)
        if self.budget is None:
            return
        self.lambda_ = self.budget.update(self.current_gmacs())
        if self.budget.should_freeze(step + 1):
            self.budget.freeze(model, lambda: current_gmacs(model, self.example))

    def log_values(self) -> dict[str, Any]:
        """``lambda`` (the user's, fixed) or, under a budget, ``budget_multiplier``: the controller's
        signed multiplier of the GMACs loss (negative when it pushes GMACs up), not a lambda >= 0."""
        if self.budget is None:
            return {"lambda": self.lambda_}
        return {"budget_multiplier": self.lambda_, "budget_frozen": self.budget.frozen,
                "budget_projection": self.budget.projection_factor}

    def state_dict(self) -> dict[str, Any]:
        return {"lambda_": self.lambda_, "budget": self.budget.state_dict() if self.budget else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.lambda_ = float(state.get("lambda_", self.lambda_))
        if self.budget is not None and state.get("budget") is not None:
            self.budget.load_state_dict(state["budget"])
