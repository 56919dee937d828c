"""What a training method contributes to the one training engine (:mod:`poolarch.train.engine`).

The engine owns the loop: data, optimiser steps, schedules, AMP, DDP, checkpoints, metrics. A
*method* only says what is specific to it:

* :meth:`Method.setup` -- called once with the model and an example batch, before the optimiser is
  built (e.g. ``ComplexityLoss`` measures the initial MACs here);
* :meth:`Method.param_groups` -- the optimiser's parameter groups (default: weights with weight
  decay at ``lr``; architecture parameters without weight decay at ``scale_lr``);
* :meth:`Method.forward` -- the training forward pass (default ``model(x)``; a supernet samples a
  path here);
* :meth:`Method.extra_losses` -- terms added to the task loss after the forward pass (default: the
  complexity loss ``lambda * GMACs`` when the model has learnable resizers and ``lambda > 0``);
* :meth:`Method.eval_forward` -- the evaluation forward pass (default ``model(x)``);
* :meth:`Method.val_step` -- optional update on a validation batch, interleaved with every
  training step (bilevel methods: multi-resolution mixing weights, supernet bookkeeping);
* :meth:`Method.epoch_end` -- extra per-epoch metrics to log (e.g. learned sizes);
* :meth:`Method.state_dict` / :meth:`Method.load_state_dict` -- method state for ``--resume``.

Methods register by name with :func:`register_method`; ``poolarch train --method NAME`` builds
them with :func:`create_method`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..layers.base import architecture_parameters

__all__ = ["Method", "register_method", "create_method", "list_methods", "split_parameters"]


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(weights, arch)``: trainable parameters of ``model`` split into network weights and
    architecture parameters (scales, mixing weights); each parameter appears once."""
    arch = [p for p in architecture_parameters(model) if p.requires_grad]
    arch_ids = {id(p) for p in arch}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in arch_ids]
    return weights, arch


class Method:
    """Default method: plain supervised training; learnable resizers (if any) are trained jointly
    with the weights, their complexity penalised by ``lambda_`` (paper 000, Eq. 8).

    Args:
        lr: learning rate of the weights.
        scale_lr: learning rate of the architecture parameters (paper 000 Table B: lr(alpha)).
        weight_decay: weight decay of the weights (never applied to architecture parameters).
        lambda_: coefficient of the complexity loss (GMACs); 0 disables it.
        local_complexity: the paper's local variant of the complexity gradient.
        epochs: length of the run (the engine passes it), for methods with schedules.
    """

    name = "plain"
    #: True for methods whose training forward leaves some parameters unused (single-path
    #: supernets, alternating updates); the engine then builds DDP with ``find_unused_parameters``.
    ddp_find_unused_parameters = False

    def __init__(
        self,
        lr: float = 0.1,
        scale_lr: float = 0.01,
        weight_decay: float = 5e-4,
        lambda_: float = 0.0,
        local_complexity: bool = False,
        epochs: int | None = None,
    ) -> None:
        if lambda_ < 0:
            raise ValueError(f"lambda must be >= 0, got {lambda_}")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise ValueError(f"epochs must be an int >= 1 or None, got {epochs!r}")
        self.epochs = epochs
        self.lr = lr
        self.scale_lr = scale_lr
        self.weight_decay = weight_decay
        self.lambda_ = lambda_
        self.local_complexity = local_complexity
        self.complexity = None  # poolarch.complexity.ComplexityLoss, set in setup()

    # -- hooks -----------------------------------------------------------------------------
    def setup(self, model: nn.Module, example_input: Tensor) -> None:
        """Called once before the optimiser is built; ``example_input`` is one input batch."""
        from ..complexity import ComplexityLoss
        from ..layers.base import learnable_resizers

        if learnable_resizers(model):
            self.complexity = ComplexityLoss(model, example_input, local=self.local_complexity)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        weights, arch = split_parameters(model)
        groups = [{"params": weights, "lr": self.lr, "weight_decay": self.weight_decay, "name": "weights"}]
        if arch:
            groups.append({"params": arch, "lr": self.scale_lr, "weight_decay": 0.0, "name": "arch"})
        return groups

    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return model(inputs)

    def eval_forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """Forward pass for evaluation (model in eval mode, no grad); default ``model(x)``. A
        supernet evaluates a fixed configuration here."""
        return model(inputs)

    def current_gmacs(self) -> float | None:
        """GMACs per image of the network as of the last forward pass (``None`` without learnable
        resizers); used by the engine's ``--target-gmacs`` controller."""
        if self.complexity is None:
            return None
        with torch.no_grad():
            return float(self.complexity())

    def extra_losses(self, model: nn.Module) -> dict[str, Tensor]:
        """Loss terms added to the task loss, by name (logged separately). Called right after
        :meth:`forward`, so layers' last sizes are those of this batch."""
        if self.complexity is None or self.lambda_ == 0:
            return {}
        return {"gmacs": self.lambda_ * self.complexity()}

    def val_step(self, model: nn.Module, inputs: Tensor, targets: Tensor, task_loss: Callable[[Tensor, Tensor], Tensor]) -> None:
        """Optional update on one validation batch after every training step (default: none)."""

    @property
    def uses_val_step(self) -> bool:
        return type(self).val_step is not Method.val_step

    def epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Extra metrics for this epoch's row (scalars) or the run's architecture record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"lambda_": self.lambda_}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.lambda_ = float(state.get("lambda_", self.lambda_))


_METHODS: dict[str, Callable[..., Method]] = {"plain": Method}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def create_method(name: str, **kwargs: Any) -> Method:
    if name not in _METHODS:
        raise ValueError(f"method must be one of {list_methods()}, got {name!r}")
    return _METHODS[name](**kwargs)

