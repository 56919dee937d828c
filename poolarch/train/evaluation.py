"""Evaluation shared by the training loop and finished runs: the task metric over a split, the
architecture summary (sizes and scales), and rebuilding a run from its directory."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable

import torch
from torch import Tensor, nn

from ..checkpoint import load_model_state
from ..complexity import current_gmacs, feature_map_sizes, unwrap_model
from ..distributed import DistInfo, all_reduce_sum
from ..layers.base import learnable_resizers
from ..methods import Method
from .build import build_data, build_method, build_model, build_task, check_config_names, example_input, \
    resolve_device, seed_everything
from .config import TrainConfig
from .rundir import RESULT_CHECKPOINT, RunDir
from .task import Task

__all__ = ["evaluate_split", "architecture_summary", "LoadedRun", "load_run", "evaluate_run"]


@torch.no_grad()
def evaluate_split(model: nn.Module, method: Method, task: Task, loader: Iterable, num_classes: int,
                   device: torch.device, *, max_steps: int | None = None, dist: DistInfo | None = None,
                   autocast: Callable[[], ContextManager] = nullcontext) -> float:
    """The task metric of ``method.eval_forward(model, x)`` over ``loader`` (at most ``max_steps``
    batches; under DDP summed across ranks). The model is left in eval mode."""
    model.eval()
    acc = task.accumulator(num_classes)
    for i, (inputs, targets) in enumerate(loader):
        if max_steps is not None and i >= max_steps:
            break
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast():
            output = method.eval_forward(model, inputs)
        acc.update(output.float(), targets)
    if dist is not None:
        all_reduce_sum(acc.state, dist)
    return acc.compute()


def architecture_summary(model: nn.Module, example: Tensor) -> tuple[str, str]:
    """``(sizes, scales)`` as short strings, e.g. ``("32x32 21x14 10x7", "0.66x0.44 0.50x0.50")``:
    the input size and the output size of every resizing layer (learned or fixed: pools, strided
    convolutions) at ``example``, as Jang et al. 2023 Table 1 lists them, and each learnable scale."""
    was_training = model.training
    try:
        found = feature_map_sizes(model, example)
    finally:
        model.train(was_training)
    # a model may say which sizes matter (after the input): HRNet one per stream (Jang et al. 2023
    # Table 4), a one-resolution multi-resolution net one per change of resolution
    reported = getattr(unwrap_model(model), "feature_sizes", None)
    chosen = reported() if callable(reported) else []
    if chosen:
        found = found[:1] + [("feature", size) for size in chosen]
    sizes = " ".join("x".join(str(int(v)) for v in size) for _, size in found)
    scales = []
    for _, module in learnable_resizers(model):
        scale = module.scale() if callable(module.scale) else module.scale
        scales.append("x".join(f"{float(v):.3f}" for v in torch.as_tensor(scale).detach().flatten()))
    return sizes, " ".join(scales)


@dataclass
class LoadedRun:
    """A run rebuilt from its directory: config, data, model (checkpoint loaded, eval mode)."""

    cfg: TrainConfig
    data: Any
    model: nn.Module
    epoch: int
    device: torch.device


def load_run(run_dir: str | Path, checkpoint: str = RESULT_CHECKPOINT) -> LoadedRun:
    """Rebuild the model of a run from ``config.yaml`` and load ``last.pt`` (the run's result,
    default) or ``best.pt``."""
    run = RunDir(run_dir)
    path = run.checkpoint(checkpoint)
    if run.status == "missing":
        raise ValueError(f"{str(run)!r} is not a run directory (no {RunDir.CONFIG})")
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist: the run has not completed an epoch")
    cfg = run.read_config()
    check_config_names(cfg)
    device = resolve_device(cfg)
    seed_everything(cfg.seed)
    data = build_data(cfg, DistInfo(), device)
    model = build_model(cfg, data).to(device)
    state = run.load_checkpoint(checkpoint, map_location=device)
    load_model_state(model, state, run.checkpoint(checkpoint))
    model.eval()
    return LoadedRun(cfg=cfg, data=data, model=model, epoch=int(state["epoch"]), device=device)


def evaluate_run(run_dir: str | Path, checkpoint: str = RESULT_CHECKPOINT) -> dict[str, Any]:
    """Rebuild the model of a run, load ``last.pt`` (the run's result, default) or ``best.pt`` and evaluate it on the
    validation and test splits; returns the metrics, GMACs per image and feature-map sizes."""
    run = load_run(run_dir, checkpoint)
    cfg, data, model, device = run.cfg, run.data, run.model, run.device
    method = build_method(cfg, model)
    task = build_task(cfg, data)
    out: dict[str, Any] = {"run_dir": str(run_dir), "checkpoint": checkpoint, "epoch": run.epoch}
    for split in ("val", "test"):
        loader = getattr(data, split, None)
        if loader is not None:
            out[f"{split}_{task.metric}"] = evaluate_split(model, method, task, loader, data.num_classes, device,
                                                           max_steps=cfg.max_eval_steps)
    example = example_input(data, device)
    out["gmacs"] = current_gmacs(model, example)
    out["sizes"], out["scales"] = architecture_summary(model, example)
    return out
