"""Base classes of the pooling-configuration search methods (Balanced Mixture of SuperNets and
its baselines) on the common engine.

:class:`SearchMethod` states, as class attributes, what a search needs around the training loop
-- which supernet (:attr:`~SearchMethod.supernet`), whether it trains several weight sets and
whether the epochs scale with their number -- and owns what it leaves in the run directory
(:meth:`~SearchMethod.write_artifacts`: ``ranking.csv``, ``topk.yaml``, ``search.yaml``, and what a
subclass adds). After training, :meth:`~SearchMethod.proxy_scores` and
:meth:`~SearchMethod.best_weight_set` rank the configurations.

A :class:`SamplingSearchMethod` runs a single path per step: :meth:`forward` samples a
configuration ``c`` and a weight set ``m`` and runs that path; :meth:`val_step` measures the
path's accuracy on one validation mini-batch (batch statistics, running statistics untouched) and
updates the moving average ``a[c, m]`` (Balanced Mixture, Eq. 2) and the visit counts. Subclasses
only define :meth:`sample` (and, optionally, extra bookkeeping in :meth:`record`). Training
progress (for temperature schedules and warm-ups) is ``step / total_steps``, the run's length
given to :meth:`setup` in a :class:`~poolarch.methods.RunInfo`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...checkpoint import atomic_write_csv, atomic_write_text
from ...complexity import unwrap_model
from ...distributed import mean_over_ranks
from ...models.space import Config
from ..base import Method, RunInfo, split_parameters
from .mixture import moving_average_update

__all__ = ["SearchMethod", "SamplingSearchMethod", "batch_statistics", "check_search_model", "write_ranking"]


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


def write_ranking(ranking_path: Any, topk_path: Any, rows: list[dict[str, Any]], *, top_k: int = 5,
                  info: dict[str, Any] | None = None) -> None:
    """``ranking.csv`` (all rows) and ``topk.yaml`` (the ``top_k`` best evaluated rows + ``info``)."""
    atomic_write_csv(ranking_path, rows)  # None (not evaluated) -> empty cell
    top = [{"config": [int(v) for v in r["config"].split("-")], "accuracy": r["accuracy"],
            "weight_set": r["weight_set"]} for r in rows if r["accuracy"] is not None][:top_k]
    atomic_write_text(topk_path, yaml.safe_dump({**(info or {}), "top": top}, sort_keys=False,
                                                default_flow_style=None))


class SearchMethod(Method):
    """Base of the search methods: trains a supernet, then ranks every configuration of its space.

    Args: ``lr``, ``weight_decay`` of the supernet weights (the engine's optimiser; architecture
    parameters, if any, are the method's own business).
    """

    #: the model searched is ``<backbone>_<supernet>`` (:mod:`poolarch.models.supernet`, ``relaxed``)
    supernet: ClassVar[str] = "supernet"
    #: whether the method trains several weight sets (``num_models > 1``)
    multiple_weight_sets: ClassVar[bool] = False
    #: ``num_models`` when the caller does not choose
    default_num_models: ClassVar[int] = 1
    #: whether the epochs of a search are per weight set (multiplied by ``num_models``)
    epochs_per_weight_set: ClassVar[bool] = False

    def __init__(self, lr: float = 0.1, weight_decay: float = 5e-4, scale_lr: float = 0.01) -> None:
        super().__init__(lr=lr, scale_lr=scale_lr, weight_decay=weight_decay)
        self.configs: list[Config] = []

    @classmethod
    def search_args(cls, num_models: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(model_args, method_args)`` of a search with ``num_models`` weight sets."""
        return ({"num_weight_sets": num_models} if num_models != 1 else {}), {}

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Only the supernet weights."""
        weights, _ = split_parameters(model)
        return [{"params": weights, "lr": self.lr, "weight_decay": self.weight_decay, "name": "weights"}]

    # -- results -----------------------------------------------------------------------------
    def best_weight_set(self, config_index: int) -> int:
        """The weight set used to evaluate a configuration after the search (default 0)."""
        return 0

    def proxy_scores(self) -> np.ndarray:
        """Per-configuration score available without evaluation (``eval_top``), shape ``(C,)``."""
        raise NotImplementedError

    def visit_counts(self) -> np.ndarray | None:
        """Training steps spent on each configuration, shape ``(C,)`` (``None``: not a sampling method)."""
        return None

    def found_config(self) -> Config:
        """The configuration the method itself would pick (default: best proxy score)."""
        return self.configs[int(np.argmax(self.proxy_scores()))]

    def search_info(self, model: nn.Module) -> dict[str, Any]:
        """Extra entries of ``topk.yaml`` / ``search.yaml`` (default none)."""
        return {}

    def write_artifacts(self, run: Any, model: nn.Module, rows: list[dict[str, Any]], info: dict[str, Any], *,
                        top_k: int = 5) -> None:
        """Write the search's files into the run directory ``run`` (a :class:`poolarch.train.RunDir`):
        ``ranking.csv`` and ``topk.yaml`` (:func:`write_ranking`) and ``search.yaml`` (``info``
        and the best evaluated row). Subclasses add their own files."""
        write_ranking(run.ranking, run.topk, rows, top_k=top_k, info=info)
        best = next((r for r in rows if r["accuracy"] is not None), None)
        atomic_write_text(run.search, yaml.safe_dump({**info, "best": best}, sort_keys=False,
                                                     default_flow_style=None))


class SamplingSearchMethod(SearchMethod):
    """Base of the single-path search methods.

    Args:
        lr, weight_decay: as :class:`SearchMethod`.
        beta: smoothing of the moving average ``a[c, m]`` (Eq. 2), in ``[0, 1)``.
        seed: seed of the sampler (independent of the engine's RNG).
        val_batch_norm: batch norm on the validation mini-batch: ``"batch"`` (default: batch
            statistics, running statistics untouched -- the running statistics of a weight set mix
            all configurations) or ``"running"`` (eval mode: cheaper, biased estimate).
    """

    ddp_find_unused_parameters = True  # each step trains one weight set of the supernet (set in setup)

    def __init__(self, lr: float = 0.1, weight_decay: float = 5e-4, beta: float = 0.9, seed: int = 0,
                 val_batch_norm: str = "batch", **kwargs: Any) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, **kwargs)
        if not 0.0 <= float(beta) < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if val_batch_norm not in ("batch", "running"):
            raise ValueError(f"val_batch_norm must be one of ['batch', 'running'], got {val_batch_norm!r}")
        self.val_batch_norm = val_batch_norm
        self.total_steps: int | None = None
        self.beta = float(beta)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.step = 0
        self.num_models = 1
        self.accuracy: np.ndarray | None = None  # a[c, m], moving average of validation accuracy
        self.visits: np.ndarray | None = None  # training steps per (c, m)
        self.last: tuple[int, int] | None = None
        self._pending_state: Mapping[str, Any] | None = None

    # -- model -------------------------------------------------------------------------------
    def setup(self, model: nn.Module, example_input: Tensor, run: RunInfo | None = None) -> None:
        super().setup(model, example_input, run)
        check_search_model(model)
        self.bind(model.space.configs, model.num_weight_sets, run)
        # every path of one weight set uses all of its parameters (pooling has none): DDP needs the
        # slower unused-parameter search only when a step leaves the other weight sets untouched
        self.ddp_find_unused_parameters = model.num_weight_sets > 1

    def bind(self, configs: list[Config], num_models: int, run: RunInfo | None = None) -> None:
        """Size the bookkeeping for ``configs`` x ``num_models`` and take the run's length
        (called by :meth:`setup`; directly, without a model, in tests and benchmarks)."""
        self.configs = list(configs)
        self.num_models = int(num_models)
        self.total_steps = None if run is None else run.total_steps
        self.accuracy = np.zeros((len(self.configs), self.num_models))
        self.visits = np.zeros((len(self.configs), self.num_models), dtype=np.int64)
        if self._pending_state is not None:
            self._restore(self._pending_state)
            self._pending_state = None

    # -- schedule ----------------------------------------------------------------------------
    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1] (0 when the run's length is unknown)."""
        if self.total_steps is None:
            return 0.0
        return min(self.step / self.total_steps, 1.0)

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
            raise RuntimeError("call setup(model, example_input, run) (or bind) before sampling")
        if self.step == 0 and self.needs_schedule and self.total_steps is None:
            raise ValueError(
                f"method {self.name!r} needs the training length for its schedule: pass "
                "run=RunInfo(epochs, steps_per_epoch) to setup (or bind); the engine does"
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
    def proxy_scores(self) -> np.ndarray:
        """``a[c, m*]``: the moving-average accuracy with the weight set used for evaluation."""
        return np.array([self.accuracy[c, self.best_weight_set(c)] for c in range(len(self.configs))])

    def visit_counts(self) -> np.ndarray | None:
        return None if self.visits is None else self.visits.sum(axis=1)

    def epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        return {"search_progress": self.progress, "search_found": "-".join(map(str, self.found_config()))}

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "step": self.step,
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
        if state.get("accuracy") is not None:
            accuracy = np.asarray(state["accuracy"], dtype=np.float64)
            if accuracy.shape != self.accuracy.shape:
                raise ValueError(f"state accuracy has shape {accuracy.shape}, expected {self.accuracy.shape}")
            self.accuracy = accuracy
            self.visits = np.asarray(state["visits"], dtype=np.int64)
        self.last = tuple(state["last"]) if state.get("last") is not None else None
