"""What a training method contributes to the one training loop (:mod:`poolarch.train.engine`).

The engine owns the loop: data, optimiser steps, schedules, AMP, DDP, checkpoints, metrics. A
*method* says only what is specific to it, through these hooks (all optional):

* :meth:`Method.setup` -- called once with the model, an example input and the run's length
  (:class:`RunInfo`), before the optimiser is built;
* :meth:`Method.param_groups` -- the optimiser's parameter groups (default: weights with weight
  decay at ``lr``; architecture parameters, if any, without weight decay at ``scale_lr``);
* :meth:`Method.lr_scale` -- a factor on the scheduled learning rate of one group (default 1);
* :meth:`Method.forward` -- the training forward pass (default ``model(x)``; a supernet samples a
  path here);
* :meth:`Method.extra_losses` -- terms added to the task loss after the forward pass;
* :meth:`Method.after_step` -- called after every optimiser step (projections, controllers);
* :meth:`Method.val_step` -- an update on a validation batch after every training step, for
  bilevel methods (:attr:`Method.uses_val_step` says whether the engine must provide batches);
* :meth:`Method.eval_forward` -- the evaluation forward pass (default ``model(x)``);
* :meth:`Method.log_values` -- per-epoch values logged right after the architecture columns;
* :meth:`Method.epoch_end` -- called after every epoch; returns extra per-epoch metrics;
* :meth:`Method.state_dict` / :meth:`Method.load_state_dict` -- method state for ``resume``.

The base :class:`Method` does nothing method-specific: it is ordinary supervised training.

Methods register by name in :data:`METHODS` (``@register_method("name")``) and are built from a
run's configuration by :meth:`Method.from_config`: the constructor receives the configuration
fields named in :attr:`Method.config_keys` plus the run's ``method_args``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from torch import Tensor, nn

from .._registry import Registry
from ..layers.base import architecture_parameters

__all__ = ["Method", "RunInfo", "METHODS", "register_method", "create_method", "list_methods",
           "split_parameters"]


@dataclass(frozen=True)
class RunInfo:
    """The length of a run, given once to :meth:`Method.setup`.

    Attributes:
        epochs: epochs of the whole run.
        steps_per_epoch: optimiser steps per epoch.
        world_size: number of processes (DDP ranks) training together.
    """

    epochs: int
    steps_per_epoch: int
    world_size: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "world_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run (``epochs * steps_per_epoch``)."""
        return self.epochs * self.steps_per_epoch


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(weights, arch)``: trainable parameters of ``model`` split into network weights and
    architecture parameters (scales, mixing weights); each parameter appears once."""
    arch = [p for p in architecture_parameters(model) if p.requires_grad]
    arch_ids = {id(p) for p in arch}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in arch_ids]
    return weights, arch


class Method:
    """Ordinary supervised training; every hook is the neutral default (see the module docstring).

    Args:
        lr: learning rate of the weights.
        scale_lr: learning rate of the architecture parameters (if the model has any).
        weight_decay: weight decay of the weights (never applied to architecture parameters).
    """

    #: the registered name (set by :func:`register_method`)
    name: ClassVar[str] = "method"
    #: fields of the run configuration passed to the constructor as keyword arguments
    config_keys: ClassVar[tuple[str, ...]] = ("lr", "scale_lr", "weight_decay")
    #: True for methods whose training forward leaves some parameters unused (single-path
    #: supernets, alternating updates); the engine then builds DDP with ``find_unused_parameters``.
    ddp_find_unused_parameters: bool = False

    def __init__(self, lr: float = 0.1, scale_lr: float = 0.01, weight_decay: float = 5e-4) -> None:
        self.lr = lr
        self.scale_lr = scale_lr
        self.weight_decay = weight_decay
        self.run: RunInfo | None = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: nn.Module) -> type["Method"]:
        """The method class that trains ``model`` under this method's name (default: ``cls``)."""
        return cls

    @classmethod
    def from_config(cls, cfg: Any) -> "Method":
        """Build from a run configuration: the fields :attr:`config_keys` of ``cfg`` plus its
        ``method_args`` (which take precedence). Bad ``method_args`` -> ``ValueError``."""
        kwargs = {key: getattr(cfg, key) for key in cls.config_keys}
        kwargs.update(cfg.method_args)
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ValueError(f"method {cfg.method!r}: bad method_args {sorted(cfg.method_args)}: {e}") from None

    # -- hooks -----------------------------------------------------------------------------
    def setup(self, model: nn.Module, example_input: Tensor, run: RunInfo | None = None) -> None:
        """Called once before the optimiser is built (model in eval mode). ``example_input`` is
        one input batch ``(1, C, H, W)``; ``run`` the run's length (``None`` outside the engine)."""
        self.run = run

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        weights, arch = split_parameters(model)
        groups = [{"params": weights, "lr": self.lr, "weight_decay": self.weight_decay, "name": "weights"}]
        if arch:
            groups.append({"params": arch, "lr": self.scale_lr, "weight_decay": 0.0, "name": "arch"})
        return groups

    def lr_scale(self, group_name: str) -> float:
        """Factor on the scheduled learning rate of the parameter group ``group_name`` (default 1)."""
        return 1.0

    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return model(inputs)

    def eval_forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """Forward pass for evaluation (model in eval mode, no grad); default ``model(x)``. A
        supernet evaluates a fixed configuration here."""
        return model(inputs)

    def extra_losses(self, model: nn.Module) -> dict[str, Tensor]:
        """Loss terms added to the task loss, by name (logged separately as ``loss_<name>``).
        Called right after :meth:`forward`, so layers' last sizes are those of this batch."""
        return {}

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after optimiser step ``step`` (0-based) of the run."""

    def val_step(self, model: nn.Module, inputs: Tensor, targets: Tensor,
                 task_loss: Callable[[Tensor, Tensor], Tensor]) -> None:
        """Optional update on one validation batch after every training step (default: none)."""

    @property
    def uses_val_step(self) -> bool:
        """Whether :meth:`val_step` is overridden (the engine then feeds it validation batches)."""
        return type(self).val_step is not Method.val_step

    def log_values(self) -> dict[str, Any]:
        """Scalars describing the method's state, logged every epoch after the architecture columns."""
        return {}

    def epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Called after epoch ``epoch`` (0-based); extra metrics for its row (scalars)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator registering a :class:`Method` subclass as ``name``."""
    add = METHODS.register(name)

    def deco(cls: type[Method]) -> type[Method]:
        add(cls)
        cls.name = name
        return cls

    return deco


def list_methods() -> list[str]:
    """Names accepted by :func:`create_method`."""
    return METHODS.names()


def create_method(name: str, **kwargs: Any) -> Method:
    """The method registered as ``name``, built with ``kwargs``."""
    return METHODS.get(name)(**kwargs)
