"""The one training loop of poolarch; every method plugs in through :class:`~poolarch.methods.Method`.

One optimiser step::

    lr of every param group  <- base lr * schedule(step) * method.lr_scale(group)
    output  = method.forward(model, x)                      (under autocast when amp)
    loss    = task.loss(output, y) + sum(method.extra_losses(model).values())
    backward, SGD step (momentum; the groups' own lr and weight decay from method.param_groups)
    method.after_step(model, step)
    method.val_step(model, x_val, y_val, task.loss)         (if the method defines it)

After every epoch: the task metric on validation and test, the GMACs per image
(:func:`poolarch.complexity.count_macs`), the feature-map sizes and scales, the method's values,
a row of ``metrics.csv``, ``architecture.yaml`` and the ``last.pt``/``best.pt`` checkpoints, all
written atomically (:class:`~poolarch.train.rundir.RunDir`); ``last.pt`` is the commit point of an
epoch, and a resume reconciles the other files with it (:meth:`RunDir.reconcile`). ``result.yaml`` is written only when
the run finishes, so an interrupted run directory never looks finished; ``train(resume=RUN_DIR)``
continues it from ``last.pt`` and ends with the same weights and metrics as an uninterrupted run.
Messages go to ``logging.getLogger("poolarch")`` (or to ``log`` when given); tqdm shows progress.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..checkpoint import load_model_state, rng_state, set_rng_state
from ..complexity import current_gmacs, format_gmacs
from ..distributed import all_reduce_sum, barrier, broadcast_buffers, broadcast_object, init_distributed
from ..methods import RunInfo
from .build import (build_data, build_method, build_model, build_task, check_config_names, check_input_size,
                    example_input, resolve_device, seed_everything)
from .config import TrainConfig
from .evaluation import architecture_summary, evaluate_split
from .rundir import RESULT_CHECKPOINT, RunDir, to_plain
from .schedule import lr_factor

__all__ = ["train", "Trainer", "RunResult"]

logger = logging.getLogger("poolarch")


@dataclass
class RunResult:
    """What :func:`train` returns: the run directory, the last epoch's metrics row (the run's
    result, ``last.pt``: see :mod:`poolarch.train.rundir`), the best row (by the validation
    metric, else the test metric; ``best.pt``), every row, and whether it finished."""

    run_dir: Path
    final: dict[str, Any]
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and runs :meth:`fit`.

    Construction raises ``ValueError``/``TypeError``/``OSError`` for bad input *before* any file
    is written (the CLI turns those into exit status 2).

    Args:
        cfg: the run's configuration (ignored when ``resume`` is given: the run's own is used).
        resume: directory of an interrupted run to continue.
        overwrite: allow ``cfg.out`` to exist already (its files are replaced).
        log: called with one line per epoch on the primary rank (default: the ``poolarch`` logger).
        model, data: use these instead of ``create_model`` / ``load_data`` (programmatic use).
    """

    def __init__(self, cfg: TrainConfig | None = None, *, resume: str | Path | None = None, overwrite: bool = False,
                 log: Callable[[str], None] | None = None, model: nn.Module | None = None, data: Any = None) -> None:
        resume_dir = RunDir(resume) if resume is not None else None
        if resume_dir is not None:
            if resume_dir.status == "missing":
                raise ValueError(f"resume: {str(resume_dir)!r} is not a run directory (no {RunDir.CONFIG})")
            cfg = resume_dir.read_config()
            cfg.out = str(resume_dir)
        if cfg is None:
            raise TypeError("Trainer needs a TrainConfig or resume=RUN_DIR")
        cfg.check()
        self.cfg = cfg
        self.log = log or logger.info
        check_config_names(cfg, model=model is None, dataset=data is None)
        self.device = resolve_device(cfg)
        self.dist = init_distributed(self.device.type)
        # every rank uses rank 0's directory (the default name contains the start time)
        self.run = RunDir(broadcast_object(str(Path(cfg.out) if cfg.out else RunDir.default_path(cfg)), self.dist))
        self.run_dir = self.run.path
        if resume_dir is None:
            self.run.check_writable()
            if self.run.status != "missing" and not overwrite:
                raise ValueError(f"out {str(self.run_dir)!r} already holds a run; pass resume to continue it, "
                                 "another out, or overwrite")
        barrier(self.dist)  # every rank has checked the directory before rank 0 writes into it
        seed_everything(cfg.seed)

        self.data = data if data is not None else build_data(cfg, self.dist, self.device)
        self.task = build_task(cfg, self.data)
        self.model = (model if model is not None else build_model(cfg, self.data)).to(self.device)
        self.method = build_method(cfg, self.model)
        self.example = example_input(self.data, self.device)
        check_input_size(self.model, self.example, model_name=None if model is not None else cfg.model)
        self.steps_per_epoch = len(self.data.train)
        if cfg.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(f"dataset {cfg.dataset!r} gives no training batch at batch_size {cfg.batch_size}")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        was_training = self.model.training
        self.model.eval()  # set-up passes must not touch batch-norm statistics
        self.method.setup(self.model, self.example, RunInfo(cfg.epochs, self.steps_per_epoch, self.dist.world_size))
        self.model.train(was_training)
        if self.method.uses_val_step and self.data.val is None:
            raise ValueError(f"method {cfg.method!r} needs a validation split: set val_fraction > 0")

        groups = self.method.param_groups(self.model)
        for group in groups:
            group["initial_lr"] = group["lr"]
        self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp and self.device.type == "cuda")
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=self.method.ddp_find_unused_parameters)

        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        if resume_dir is not None and resume_dir.last.is_file():
            state = resume_dir.load_checkpoint("last", map_location=self.device)
            self._load(state, resume_dir.checkpoint("last"))
            if self.dist.is_primary and self.run.status != "finished":
                architecture_summary(self.model, self.example)  # the resizers' sizes at the restored scales
                self.run.reconcile(state, self.model)
        elif self.dist.is_primary:
            self.run.start(cfg)
        barrier(self.dist)

    # -- checkpoints -----------------------------------------------------------------------------
    def _state(self, epochs_done: int) -> dict[str, Any]:
        rng = rng_state()
        if self.dist.enabled:
            states: list[Any] = [None] * self.dist.world_size
            torch.distributed.all_gather_object(states, rng)
            rng = {"per_rank": states}
        return {"epoch": epochs_done, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "method": self.method.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng,
                "history": self.history, "best": self.best, "config": self.cfg.to_dict()}

    def _load(self, state: dict[str, Any], path: Path) -> None:
        load_model_state(self.model, state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if "per_rank" in rng:
            per_rank = rng["per_rank"]
            rng = per_rank[self.dist.rank] if len(per_rank) == self.dist.world_size else per_rank[0]
        set_rng_state(rng)
        self.start_epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.best = dict(state["best"])

    # -- steps ----------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.cfg.amp else nullcontext()

    def _set_lr(self, step: int) -> None:
        cfg = self.cfg
        milestones = [m * self.steps_per_epoch for m in cfg.milestones]
        factor = lr_factor(cfg.schedule, step, self.total_steps, milestones=milestones, gamma=cfg.gamma, power=cfg.poly_power)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor * self.method.lr_scale(group.get("name", ""))

    def _train_step(self, step: int, inputs: Tensor, targets: Tensor, val_batches) -> dict[str, float]:
        self._set_lr(step)
        with self._autocast():
            output = self.method.forward(self.ddp_model, inputs)
        task_loss = self.task.loss(output, targets)
        extras = self.method.extra_losses(self.model)
        loss = task_loss + sum(extras.values()) if extras else task_loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_step(self.model, step)
        if val_batches is not None:
            val_inputs, val_targets = next(val_batches)
            self.method.val_step(self.ddp_model, val_inputs.to(self.device), val_targets.to(self.device), self.task.loss)
        row = {"loss": float(loss.detach()), "task_loss": float(task_loss.detach())}
        row.update({f"loss_{k}": float(v.detach()) for k, v in extras.items()})
        self._train_acc.update(output.float(), targets)
        return row

    @staticmethod
    def _cycle(loader, epoch: int):
        """Batches of ``loader`` forever, restarting it (same epoch seed) when exhausted."""
        while True:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            yield from loader

    def evaluate(self, loader) -> float:
        """The task metric over ``loader`` (summed across ranks); the model returns to training mode."""
        metric = evaluate_split(self.model, self.method, self.task, loader, self.data.num_classes, self.device,
                                max_steps=self.cfg.max_eval_steps, dist=self.dist, autocast=self._autocast)
        self.model.train()
        return metric

    # -- the loop --------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int, show_bar: bool) -> dict[str, Any]:
        """One epoch of optimiser steps; returns the row of ``metrics.csv`` (without evaluation)."""
        started = time.perf_counter()
        self.model.train()
        if hasattr(self.data.train, "set_epoch"):
            self.data.train.set_epoch(epoch)
        val_batches = self._cycle(self.data.val, epoch) if self.method.uses_val_step else None
        self._train_acc = self.task.accumulator(self.data.num_classes)
        sums: dict[str, float] = {}
        bar = None
        if show_bar:
            from tqdm import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False)
        for i, (inputs, targets) in enumerate(self.data.train):
            if i >= self.steps_per_epoch:
                break
            row = self._train_step(epoch * self.steps_per_epoch + i, inputs.to(self.device), targets.to(self.device),
                                   val_batches)
            for k, v in row.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}")
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - started
        broadcast_buffers(self.model, self.dist)
        all_reduce_sum(self._train_acc.state, self.dist)
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        totals = torch.tensor([sums.get(k, 0.0) for k in sorted(sums)], dtype=torch.float64)
        all_reduce_sum(totals, self.dist)
        for k, v in zip(sorted(sums), totals.tolist()):
            record[f"train_{k}"] = v / (self.steps_per_epoch * self.dist.world_size)
        record[f"train_{self.task.metric}"] = self._train_acc.compute()
        record["train_time_s"] = elapsed
        return record

    def fit(self, stop_after_epochs: int | None = None) -> RunResult:
        """Train from the current epoch to ``cfg.epochs`` (or only ``stop_after_epochs`` epochs,
        leaving the run resumable and unfinished). Returns the :class:`RunResult`."""
        cfg, primary, metric = self.cfg, self.dist.is_primary, self.task.metric
        if self.start_epoch >= cfg.epochs and self.run.status == "finished":
            return self._result(finished=True)
        show_bar = primary and (cfg.progress if cfg.progress is not None else sys.stderr.isatty())
        for epochs_run, epoch in enumerate(range(self.start_epoch, cfg.epochs)):
            if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                return self._result(finished=False)
            record = self._train_epoch(epoch, show_bar)
            train_time = record.pop("train_time_s")
            for split in ("val", "test"):
                loader = getattr(self.data, split, None)
                if loader is not None:
                    record[f"{split}_{metric}"] = self.evaluate(loader)
            record["gmacs"] = current_gmacs(self.model, self.example)
            record["sizes"], record["scales"] = architecture_summary(self.model, self.example)
            record.update(self.method.log_values())
            record["train_time_s"] = train_time
            record["images_per_s"] = self.steps_per_epoch * cfg.batch_size * self.dist.world_size / max(train_time, 1e-9)
            record.update({k: to_plain(v) for k, v in (self.method.epoch_end(self.model, epoch) or {}).items()})
            self.history.append(record)

            key = f"val_{metric}" if f"val_{metric}" in record else f"test_{metric}"
            improved = key in record and (not self.best or record[key] > self.best.get(key, -math.inf))
            if improved:
                self.best = dict(record)
            state = self._state(epoch + 1)  # collective on DDP: every rank gathers RNG states
            if primary:
                self.run.write_metrics(self.history)
                self.run.write_architecture(self.model)
                self.run.save_checkpoint(state, best=improved)
                self.log(_format_row(record, metric))
            barrier(self.dist)
        if primary:
            result: dict[str, Any] = {"status": "finished", "checkpoint": f"{RESULT_CHECKPOINT}.pt",
                                      "epoch": self.history[-1]["epoch"], "final": self.history[-1], "best": self.best}
            result.update(self._budget_summary())
            self.run.write_result(result)
        barrier(self.dist)
        return self._result(finished=True)

    def _budget_summary(self) -> dict[str, Any]:
        """With ``target_gmacs``: ``{budget_met, target_gmacs, final_gmacs}`` for ``result.yaml``; a
        missed budget is also logged as a warning. Without a target: ``{}``."""
        target = self.cfg.target_gmacs
        if target is None or not self.history:
            return {}
        final = float(self.history[-1]["gmacs"])
        met = abs(final / target - 1.0) <= self.cfg.target_tolerance
        if not met:
            logger.warning("budget missed: final GMACs %.6g are %.1f%% off target_gmacs %.6g (tolerance %.0f%%)",
                           final, 100 * (final / target - 1.0), target, 100 * self.cfg.target_tolerance)
        return {"budget_met": met, "target_gmacs": float(target), "final_gmacs": final}

    def _result(self, finished: bool) -> RunResult:
        final = self.history[-1] if self.history else {}
        return RunResult(self.run_dir, final, self.best, list(self.history), finished)


def _format_row(record: dict[str, Any], metric: str) -> str:
    parts = [f"epoch {record['epoch']}", f"task loss {record.get('train_task_loss', float('nan')):.4f}"]
    for split in ("train", "val", "test"):
        if f"{split}_{metric}" in record:
            parts.append(f"{split} {metric} {record[f'{split}_{metric}']:.2f}")
    parts.append(f"GMACs {format_gmacs(record['gmacs'])}")
    if record.get("sizes"):
        parts.append(f"sizes {record['sizes']}")
    return " | ".join(parts)


def train(cfg: TrainConfig | None = None, *, resume: str | Path | None = None, overwrite: bool = False,
          stop_after_epochs: int | None = None, log: Callable[[str], None] | None = None,
          model: nn.Module | None = None, data: Any = None) -> RunResult:
    """Train one run described by ``cfg`` (or continue ``resume``); see :class:`Trainer`.

    ``stop_after_epochs`` ends this invocation after that many epochs, leaving a resumable,
    unfinished run directory (what a killed job leaves behind, minus the partial epoch).
    """
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite, log=log, model=model, data=data)
    return trainer.fit(stop_after_epochs=stop_after_epochs)
