"""The run directory: every file a run (or a search) leaves behind, named in one place.

::

    RUN_DIR/
        config.yaml          the run's TrainConfig (written when the run starts)
        metrics.csv          one row per finished epoch
        architecture.yaml    learned sizes and scales after the last epoch
        last.pt, best.pt     checkpoints (last epoch; best validation metric, else test metric)
        result.yaml          {status, checkpoint, epoch, final, best}; only written when the run finishes
        ranking.csv, topk.yaml, search.yaml                  a search's ranking (poolarch.methods.search)
        p_m_given_c.csv, p_m_given_c.png                     the balanced mixture's assignment p(m | c)

**The run's result** is its last epoch, ``last.pt`` -- one rule for the training summary,
``result.yaml`` (``final``, with ``checkpoint``/``epoch`` naming it), ``poolarch report``, ``eval``
and ``export``. Not ``best.pt``: a run without a validation split picks it by the *test* metric
(test-set selection: an optimistic figure), and with a compute budget (``target_gmacs``) only the
final epochs are pinned to the budget, so an earlier "best" epoch can be a network of another
size. ``best.pt`` stays available (``--checkpoint best``), labelled as what it is.

Every file is written atomically (:mod:`poolarch.checkpoint`), so an interrupted run directory never
holds a half-written file, and never looks finished.

**Commit point.** An epoch writes, in this order, ``metrics.csv``, ``architecture.yaml``, ``last.pt``
and (when the epoch is the best so far) ``best.pt``. ``last.pt`` is the commit: an epoch is done once
its ``last.pt`` is in place, and a run killed anywhere resumes from ``last.pt`` alone.
:meth:`RunDir.reconcile` (called on resume) makes the other files agree with it: ``metrics.csv`` is
rewritten from the history stored in ``last.pt`` (dropping rows of an uncommitted epoch),
``architecture.yaml`` from the restored model, and ``best.pt`` is replaced by ``last.pt`` when the
``best`` record in ``last.pt`` is that epoch (a kill between ``last.pt`` and ``best.pt``).
"""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from ..architecture import save_architecture
from ..checkpoint import atomic_torch_save, atomic_write_bytes, atomic_write_csv, atomic_write_text, load_checkpoint
from .config import TrainConfig

__all__ = ["RunDir", "run_status", "to_plain", "CHECKPOINTS", "RESULT_CHECKPOINT", "describe_checkpoint"]

CHECKPOINTS = ("best", "last")
#: the checkpoint that is the run's result (see the module docstring)
RESULT_CHECKPOINT = "last"


def describe_checkpoint(which: str, epoch: int | str) -> str:
    """One line naming a checkpoint, e.g. ``"result: last.pt (epoch 3)"`` or
    ``"checkpoint: best.pt (epoch 2; best validation epoch, not the run's result)"``."""
    if which == RESULT_CHECKPOINT:
        return f"result: {which}.pt (epoch {epoch})"
    return f"checkpoint: {which}.pt (epoch {epoch}; best validation (else test) epoch, not the run's result)"


class RunDir:
    """Paths, status and file I/O of one run directory (it need not exist yet).

    Attributes (paths): ``config``, ``metrics``, ``architecture``, ``last``, ``best``, ``result``,
    ``ranking``, ``topk``, ``search``, ``p_m_given_c``, ``heatmap``.
    """

    CONFIG = "config.yaml"
    METRICS = "metrics.csv"
    ARCHITECTURE = "architecture.yaml"
    LAST = "last.pt"
    BEST = "best.pt"
    RESULT = "result.yaml"
    RANKING = "ranking.csv"
    TOPK = "topk.yaml"
    SEARCH = "search.yaml"
    P_M_GIVEN_C = "p_m_given_c.csv"
    HEATMAP = "p_m_given_c.png"
    #: files of a previous run that a new run in the same directory (``overwrite``) removes first
    RUN_FILES = (RESULT, LAST, BEST, METRICS, ARCHITECTURE)

    def __init__(self, path: str | Path | "RunDir") -> None:
        self.path = Path(path.path if isinstance(path, RunDir) else path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- paths ----------------------------------------------------------------------------------
    config = property(lambda self: self.path / self.CONFIG)
    metrics = property(lambda self: self.path / self.METRICS)
    architecture = property(lambda self: self.path / self.ARCHITECTURE)
    last = property(lambda self: self.path / self.LAST)
    best = property(lambda self: self.path / self.BEST)
    result = property(lambda self: self.path / self.RESULT)
    ranking = property(lambda self: self.path / self.RANKING)
    topk = property(lambda self: self.path / self.TOPK)
    search = property(lambda self: self.path / self.SEARCH)
    p_m_given_c = property(lambda self: self.path / self.P_M_GIVEN_C)
    heatmap = property(lambda self: self.path / self.HEATMAP)

    @staticmethod
    def default_path(cfg: TrainConfig) -> Path:
        """``runs/<name>-<start time>``, ``name`` from the config (or model-pool-dataset-variant)."""
        name = cfg.name or "-".join(p for p in (cfg.model, cfg.pool, cfg.dataset, cfg.variant) if p)
        return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"

    def check_writable(self) -> None:
        """``ValueError`` unless the directory can be created (or exists and is writable)."""
        probe = self.path
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            raise ValueError(f"out {str(self.path)!r} is not writable: {str(probe)!r} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"out {str(self.path)!r} is not writable: no write permission on {str(probe)!r}")

    def checkpoint(self, which: str) -> Path:
        """``best.pt`` or ``last.pt``."""
        if which not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {list(CHECKPOINTS)}, got {which!r}")
        return self.best if which == "best" else self.last

    # -- status ---------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        """``"finished"`` when the run wrote ``result.yaml``, ``"incomplete"`` when it has a
        config but no result, ``"missing"`` otherwise."""
        if self.result.is_file():
            return "finished"
        if self.config.is_file():
            return "incomplete"
        return "missing"

    def is_run(self) -> bool:
        """Whether the directory holds a run's metrics (what the report reads)."""
        return self.metrics.is_file()

    # -- reading and writing --------------------------------------------------------------------
    def read_config(self) -> TrainConfig:
        return TrainConfig.from_yaml(self.config)

    def write_config(self, cfg: TrainConfig) -> None:
        """The config, with ``out`` set to this directory."""
        saved = TrainConfig.from_dict(cfg.to_dict())
        saved.out = str(self.path)
        saved.to_yaml(self.config)

    def start(self, cfg: TrainConfig) -> None:
        """Create the directory, remove a previous run's files and write ``config.yaml``."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.RUN_FILES:
            (self.path / stale).unlink(missing_ok=True)
        self.write_config(cfg)

    def read_metrics(self) -> list[dict[str, str]]:
        """The rows of ``metrics.csv`` as strings (``csv.DictReader``)."""
        with open(self.metrics, newline="") as f:
            return list(csv.DictReader(f))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_csv(self.metrics, rows)

    def write_architecture(self, model: nn.Module) -> None:
        """``architecture.yaml`` (:func:`poolarch.save_architecture`)."""
        tmp = self.architecture.with_name(f".{self.ARCHITECTURE}.tmp")
        save_architecture(model, tmp)
        os.replace(tmp, self.architecture)

    def save_checkpoint(self, state: dict[str, Any], best: bool = False) -> None:
        """``last.pt`` -- the commit point of an epoch -- then ``best.pt`` when ``best``."""
        atomic_torch_save(state, self.last)
        if best:
            atomic_torch_save(state, self.best)

    def reconcile(self, state: dict[str, Any], model: nn.Module) -> None:
        """Make ``metrics.csv``, ``architecture.yaml`` and ``best.pt`` agree with the committed
        ``last.pt`` whose content is ``state`` (already loaded into ``model``, whose resizers have
        run on the example input since); see the module docstring."""
        self.write_metrics(list(state["history"]))
        self.write_architecture(model)
        best = state.get("best") or {}
        if best.get("epoch") == state["epoch"]:
            atomic_write_bytes(self.best, self.last.read_bytes())

    def load_checkpoint(self, which: str = "last", map_location: str | torch.device = "cpu") -> dict[str, Any]:
        path = self.checkpoint(which)
        if not path.is_file():
            raise ValueError(f"{str(path)!r} does not exist: the run has not completed an epoch")
        return load_checkpoint(path, map_location=map_location)

    def read_result(self) -> dict[str, Any]:
        """``result.yaml`` (``{}`` when the run has not finished)."""
        if not self.result.is_file():
            return {}
        return yaml.safe_load(self.result.read_text()) or {}

    def write_result(self, result: dict[str, Any]) -> None:
        """``result.yaml`` (tensors and numpy scalars as plain YAML values)."""
        atomic_write_text(self.result, yaml.safe_dump(_yaml_safe(result), sort_keys=False))


def to_plain(value: Any) -> Any:
    """A tensor or numpy scalar as a Python number (or list); anything else unchanged."""
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _yaml_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _yaml_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_yaml_safe(v) for v in obj]
    return to_plain(obj)


def run_status(run_dir: str | Path) -> str:
    """:attr:`RunDir.status` of ``run_dir``."""
    return RunDir(run_dir).status
