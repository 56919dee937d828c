"""Shared machinery of the sampling search methods (SPOS, balanced mixture, MCTS-UCB, BSE).

A :class:`SamplingSearchMethod` runs on the common engine: :meth:`forward` samples a configuration
``c`` and a weight set ``m`` and runs that single path; :meth:`val_step` measures the path's
accuracy on one validation mini-batch (batch statistics, running statistics untouched) and updates
the moving average ``a[c, m]`` (paper 003, Eq. 2) and the visit counts. Subclasses only define
:meth:`sample` (and, optionally, extra bookkeeping in :meth:`record`).

Training progress (for temperature schedules and warm-ups) is ``step / total_steps`` when
``total_steps`` is given, else measured in epochs: ``epochs`` is the run's length and the number of
steps per epoch is learned at the end of the first epoch (progress stays at 0 during it).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...complexity import unwrap_model
from ...train.distributed import mean_over_ranks
from ...train.method import Method, split_parameters
from ..mixture import moving_average_update
from ...models.space import Config

__all__ = ["SamplingSearchMethod", "batch_statistics", "check_search_model"]


def check_search_model(model: nn.Module) -> None:
    for attr in ("space", "num_weight_sets", "subnet"):
        if not hasattr(model, attr):
            raise TypeError(
                f"model must be a pooling-search network (e.g. 'resnet20_supernet'), got {type(model).__name__} "
                f"without {attr!r}"
            )


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Batch-norm layers of ``module`` normalise with batch statistics and leave their running
    statistics untouched (for validation mini-batches of a supernet path)."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.training, m.track_running_stats = True, False
    try:
        yield
    finally:
        for m, (training, track) in zip(norms, saved):
            m.training, m.track_running_stats = training, track


def _check_positive_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


class SamplingSearchMethod(Method):
    """Base of the single-path search methods.

    Args:
        lr, weight_decay: as :class:`poolarch.train.method.Method`.
        epochs: training length in epochs (for schedules), or
        total_steps: training length in steps (takes precedence).
        beta: smoothing of the moving average ``a[c, m]`` (Eq. 2), in ``[0, 1)``.
        seed: seed of the sampler (independent of the engine's RNG).
        val_batch_norm: batch norm on the validation mini-batch: ``"batch"`` (default: batch
            statistics, running statistics untouched -- the running statistics of a weight set mix
            all configurations) or ``"running"`` (eval mode: cheaper, biased estimate).
    """

    ddp_find_unused_parameters = True  # each step trains one weight set of the supernet (set in setup)

    def __init__(self, lr: float = 0.1, weight_decay: float = 5e-4, epochs: int | None = None,
                 total_steps: int | None = None, beta: float = 0.9, seed: int = 0, val_batch_norm: str = "batch",
                 **kwargs: Any) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, **kwargs)
        _check_positive_int("epochs", epochs)
        _check_positive_int("total_steps", total_steps)
        if not 0.0 <= float(beta) < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if val_batch_norm not in ("batch", "running"):
            raise ValueError(f"val_batch_norm must be one of ['batch', 'running'], got {val_batch_norm!r}")
        self.val_batch_norm = val_batch_norm
        self.epochs = epochs
        self.total_steps = total_steps
        self.beta = float(beta)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.step = 0
        self.epoch = 0
        self.steps_per_epoch: int | None = None
        self.configs: list[Config] = []
        self.num_models = 1
        self.accuracy: np.ndarray | None = None  # a[c, m], moving average of validation accuracy
        self.visits: np.ndarray | None = None  # training steps per (c, m)
        self.last: tuple[int, int] | None = None
        self._pending_state: Mapping[str, Any] | None = None

    # -- model -------------------------------------------------------------------------------
    def setup(self, model: nn.Module, example_input: Tensor) -> None:
        check_search_model(model)
        self.bind(model.space.configs, model.num_weight_sets)
        # every path of one weight set uses all of its parameters (pooling has none): DDP needs the
        # slower unused-parameter search only when a step leaves the other weight sets untouched
        self.ddp_find_unused_parameters = model.num_weight_sets > 1

    def bind(self, configs: list[Config], num_models: int) -> None:
        """Size the bookkeeping for ``configs`` x ``num_models`` (called by :meth:`setup`)."""
        self.configs = list(configs)
        self.num_models = int(num_models)
        self.accuracy = np.zeros((len(self.configs), self.num_models))
        self.visits = np.zeros((len(self.configs), self.num_models), dtype=np.int64)
        if self._pending_state is not None:
            self._restore(self._pending_state)
            self._pending_state = None

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        weights, _ = split_parameters(model)
        return [{"params": weights, "lr": self.lr, "weight_decay": self.weight_decay, "name": "weights"}]

    def extra_losses(self, model: nn.Module) -> dict[str, Tensor]:
        return {}

    # -- schedule ----------------------------------------------------------------------------
    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        if self.total_steps is not None:
            return min(self.step / self.total_steps, 1.0)
        if self.epochs is not None:
            if self.steps_per_epoch:
                return min(self.step / (self.steps_per_epoch * self.epochs), 1.0)
            return min(self.epoch / self.epochs, 1.0)
        return 0.0

    # -- sampling ----------------------------------------------------------------------------
    @property
    def needs_schedule(self) -> bool:
        """Whether sampling depends on training progress (temperature schedule, warm-up)."""
        return False

    def sample(self) -> tuple[int, int]:
        """``(configuration index, weight set)`` for the next training step."""
        raise NotImplementedError

    def record(self, config_index: int, weight_set: int, accuracy: float) -> None:
        """Bookkeeping after the validation mini-batch of the sampled path (Eq. 2)."""
        moving_average_update(self.accuracy, config_index, weight_set, accuracy, self.beta)

    def next_path(self) -> tuple[Config, int]:
        """Sample the next training path and count it (the engine-free part of :meth:`forward`)."""
        if self.accuracy is None:
            raise RuntimeError("call setup(model, example_input) (or bind) before sampling")
        if self.step == 0 and self.needs_schedule and self.total_steps is None and self.epochs is None:
            raise ValueError(
                f"method {self.name!r} needs the training length for its schedule: pass method_args "
                "total_steps or epochs (poolarch search sets it)"
            )
        c, m = self.sample()
        self.visits[c, m] += 1
        self.step += 1
        self.last = (c, m)
        return self.configs[c], m

    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        if not model.training:
            return model(inputs)
        config, m = self.next_path()
        return model(inputs, config=config, weight_set=m)

    @torch.no_grad()
    def val_step(self, model: nn.Module, inputs: Tensor, targets: Tensor,
                 task_loss: Callable[[Tensor, Tensor], Tensor]) -> None:
        if self.last is None:
            return
        c, m = self.last
        model = unwrap_model(model)  # under DDP the bookkeeping pass runs on the module
        if self.val_batch_norm == "batch":
            with batch_statistics(model.subnet(m)):
                logits = model(inputs, config=self.configs[c], weight_set=m)
        else:
            was_training = model.training
            model.eval()
            logits = model(inputs, config=self.configs[c], weight_set=m)
            model.train(was_training)
        accuracy = (logits.argmax(dim=1) == targets).float().mean().item()
        # under DDP every rank sampled the same (c, m) (same seed, same a); averaging the shards'
        # accuracies keeps a -- hence every later sample -- identical on every rank
        self.record(c, m, mean_over_ranks(accuracy))

    # -- results -----------------------------------------------------------------------------
    def best_weight_set(self, config_index: int) -> int:
        """The weight set used to evaluate a configuration after the search."""
        return 0

    def proxy_scores(self) -> np.ndarray:
        """Per-configuration score available without evaluation (``--eval-top``): ``a[c, m*]``."""
        return np.array([self.accuracy[c, self.best_weight_set(c)] for c in range(len(self.configs))])

    def found_config(self) -> Config:
        """The configuration the method itself would pick (best proxy score)."""
        return self.configs[int(np.argmax(self.proxy_scores()))]

    def epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        if self.steps_per_epoch is None and self.step > 0:
            self.steps_per_epoch = self.step
        self.epoch = epoch + 1
        return {"search_progress": self.progress, "search_found": "-".join(map(str, self.found_config()))}

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "step": self.step,
            "epoch": self.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "accuracy": None if self.accuracy is None else self.accuracy.tolist(),
            "visits": None if self.visits is None else self.visits.tolist(),
            "last": self.last,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.accuracy is None:
            self._pending_state = dict(state)  # restored by bind()
        else:
            self._restore(state)

    def _restore(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.steps_per_epoch = state["steps_per_epoch"]
        if state.get("accuracy") is not None:
            accuracy = np.asarray(state["accuracy"], dtype=np.float64)
            if accuracy.shape != self.accuracy.shape:
                raise ValueError(f"state accuracy has shape {accuracy.shape}, expected {self.accuracy.shape}")
            self.accuracy = accuracy
            self.visits = np.asarray(state["visits"], dtype=np.int64)
        self.last = tuple(state["last"]) if state.get("last") is not None else None
