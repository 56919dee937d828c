"""Balanced Mixture of SuperNets (Javan et al. 2023, Sec. 2.3, Fig. 2).

``M`` weight sets. Each step: sample ``c`` uniformly, then ``m ~ p(m | c)``, train ``f_c(., w_m)``;
on a validation mini-batch update ``a[c, m]`` (Eq. 2). ``p(c, m) = softmax(a / tau)`` (Eq. 3),
balanced by IPF so that every configuration and every weight set receives the same share of the
training (:func:`poolarch.methods.search.mixture.balance`). ``tau`` decreases linearly from ``tau_start``
(1) to ``tau_end`` (``1 / (100 M)``) over the run. After training configuration ``c`` is evaluated
with ``m* = argmax_m p(m | c)``. The paper trains ``M`` times longer than a single supernet
(:attr:`BalancedMixture.epochs_per_weight_set`: ``poolarch search`` scales the epochs by ``M``).

Besides the ranking, the run directory receives ``p_m_given_c.csv`` and the heat-map
``p_m_given_c.png`` (Fig. 5) when ``M > 1``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch import Tensor, nn

from ...plots import plot_heatmap_panels
from ...models.space import Config, format_config
from ..base import RunInfo, register_method
from .base import SamplingSearchMethod
from .mixture import conditional_model_probabilities, ipf_log, tau_schedule

__all__ = ["BalancedMixture", "plot_model_assignment"]


@register_method("balanced-mixture")
class BalancedMixture(SamplingSearchMethod):
    """Args (besides :class:`SamplingSearchMethod`'s):
        num_models: ``M``; must equal the model's ``num_weight_sets`` (default: take the model's).
        tau_start, tau_end: temperature schedule (default 1 and ``1 / (100 M)``).
        tol: IPF tolerance on ``KL(p(m) || uniform)`` (paper: 1e-4).
        history: snapshots of ``p(m | c)`` kept for the Fig. 5 heat-map (one per epoch).
    """

    multiple_weight_sets = True
    default_num_models = 4
    epochs_per_weight_set = True

    def __init__(self, num_models: int | None = None, tau_start: float = 1.0, tau_end: float | None = None,
                 tol: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_models is not None and (isinstance(num_models, bool) or not isinstance(num_models, int)
                                       or num_models < 1):
            raise ValueError(f"num_models must be a positive int, got {num_models!r}")
        if not tau_start > 0 or (tau_end is not None and not tau_end > 0):
            raise ValueError(f"tau_start and tau_end must be > 0, got {tau_start}, {tau_end}")
        self.requested_models = num_models
        self.tau_start = float(tau_start)
        self.tau_end = tau_end
        self.tol = float(tol)
        self.history: list[list[list[float]]] = []
        self._joint: np.ndarray | None = None
        self._joint_key: tuple[int, float] | None = None
        self._column_offsets: np.ndarray | None = None

    @classmethod
    def search_args(cls, num_models: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"num_weight_sets": num_models}, {"num_models": num_models}

    def setup(self, model: nn.Module, example_input: Tensor, run: RunInfo | None = None) -> None:
        super().setup(model, example_input, run)
        if self.requested_models is not None and self.requested_models != model.num_weight_sets:
            raise ValueError(
                f"num_models ({self.requested_models}) must equal the model's num_weight_sets "
                f"({model.num_weight_sets}); build the model with model_args num_weight_sets={self.requested_models}"
            )

    @property
    def needs_schedule(self) -> bool:
        return True

    @property
    def tau(self) -> float:
        return tau_schedule(self.progress, self.num_models, self.tau_start, self.tau_end)

    def joint(self) -> np.ndarray:
        """Balanced ``p(c, m)`` (C, M) for the current accuracies and temperature."""
        tau = self.tau
        key = (self._version, tau)
        if self._joint is None or self._joint_key != key:
            # Eq. 3 + IPF, warm-started from the previous column offsets (same fixed point)
            self._joint, self._column_offsets = ipf_log(self.accuracy / tau, tol=self.tol,
                                                        column_offsets=self._column_offsets)
            self._joint_key = key
        return self._joint

    _version = 0  # bumped at every accuracy update (cache key of joint())

    def conditional(self) -> np.ndarray:
        """``p(m | c)`` (C, M)."""
        return conditional_model_probabilities(self.joint())

    def sample(self) -> tuple[int, int]:
        c = int(self.rng.integers(len(self.configs)))
        if self.num_models == 1:
            return c, 0
        row = self.conditional()[c]
        m = int(np.searchsorted(np.cumsum(row), self.rng.random() * row.sum(), side="right"))
        return c, min(m, self.num_models - 1)

    def record(self, config_index: int, weight_set: int, accuracy: float) -> None:
        super().record(config_index, weight_set, accuracy)
        self._version += 1

    def best_weight_set(self, config_index: int) -> int:
        return int(self.conditional()[config_index].argmax())

    def epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        out = super().epoch_end(model, epoch)
        self.history.append(self.conditional().round(6).tolist())
        out["search_tau"] = self.tau
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": self.history}

    def _restore(self, state: Mapping[str, Any]) -> None:
        super()._restore(state)
        self.history = [list(h) for h in state.get("history", [])]
        self._version += 1

    def write_artifacts(self, run: Any, model: nn.Module, rows: list[dict[str, Any]], info: dict[str, Any], *,
                        top_k: int = 5) -> None:
        """The ranking files, plus ``p(m | c)`` as ``p_m_given_c.csv`` and its heat-map when ``M > 1``."""
        super().write_artifacts(run, model, rows, info, top_k=top_k)
        if self.num_models <= 1:
            return
        conditional = self.conditional()
        np.savetxt(run.p_m_given_c, conditional, delimiter=",", fmt="%.6f",
                   header=",".join(f"m{m}" for m in range(conditional.shape[1])), comments="")
        plot_model_assignment(conditional, self.configs, run.heatmap, history=[np.asarray(h) for h in self.history])


def plot_model_assignment(conditional: np.ndarray, configs: Sequence[Config], path: str | Path,
                          history: Sequence[np.ndarray] = ()) -> Path:
    """Heat-map of ``p(m | c)`` (configurations x models) as in the paper's Fig. 5: a few snapshots
    from ``history`` (one per epoch) followed by the final matrix (drawn by
    :func:`poolarch.plots.plot_heatmap_panels`)."""
    snapshots = [np.asarray(h) for h in history]
    if len(snapshots) > 3:
        snapshots = [snapshots[0], snapshots[len(snapshots) // 2]]
    panels = snapshots + [np.asarray(conditional)]
    titles = [f"epoch {i}" for i in ([1, len(history) // 2 + 1] if len(history) > 3 else range(1, len(snapshots) + 1))]
    titles = titles[: len(snapshots)] + ["final"]
    return plot_heatmap_panels(panels, titles, [format_config(c) for c in configs], path, xlabel="model m",
                               ylabel="configuration c", colorbar_label="p(m | c)")
