"""The one training loop of poolarch; every method plugs in through :class:`~poolarch.train.Method`.

One optimiser step::

    lr of every param group  <- base lr * schedule(step)
    output  = method.forward(model, x)                      (under autocast when amp)
    loss    = task.loss(output, y) + sum(method.extra_losses(model).values())
    backward, SGD step (momentum; weight decay only on weights; own lr for architecture params)
    method.val_step(model, x_val, y_val, task.loss)         (if the method defines it)
    budget.update(method.current_gmacs())                   (if --target-gmacs)

After every epoch: the task metric on validation and test, the GMACs per image
(:func:`poolarch.complexity.count_macs`), the feature-map sizes and scales, a row of
``metrics.csv``, ``architecture.yaml``, and the ``last.pt``/``best.pt`` checkpoints, all written
atomically. ``result.yaml`` is written only when the run finishes, so an interrupted run directory
never looks finished; ``train(resume=RUN_DIR)`` continues it from ``last.pt`` and ends with the
same weights and metrics as an uninterrupted run.
"""
from __future__ import annotations

import inspect
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from ..layers.base import learnable_resizers
from .budget import GmacsBudget, scalable_alphas
from .checkpoint import atomic_torch_save, atomic_write_csv, atomic_write_text, load_checkpoint, rng_state, set_rng_state
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_buffers, broadcast_object, init_distributed
from .method import Method, create_method, list_methods
from .schedule import lr_factor
from .task import Task, create_task

__all__ = ["train", "Trainer", "RunResult", "evaluate_run", "load_run", "LoadedRun", "run_status", "seed_everything", "RESULT_FILE"]

RESULT_FILE = "result.yaml"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
ARCH_FILE = "architecture.yaml"
LAST, BEST = "last.pt", "best.pt"


@dataclass
class RunResult:
    """What :func:`train` returns: the run directory, the last epoch's metrics row, the best
    row (by the validation metric, else the test metric), every row, and whether it finished."""

    run_dir: Path
    final: dict[str, Any]
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_status(run_dir: str | Path) -> str:
    """``"finished"`` when the run wrote ``result.yaml``, ``"incomplete"`` when it has a
    checkpoint or config but no result, ``"missing"`` otherwise."""
    run_dir = Path(run_dir)
    if (run_dir / RESULT_FILE).is_file():
        return "finished"
    if (run_dir / CONFIG_FILE).is_file():
        return "incomplete"
    return "missing"


# -- building blocks (shared by training and evaluation) -----------------------------------------
def load_plugins() -> None:
    """Import the packages that register models, pools and methods by name."""
    from .. import layers, models, search  # noqa: F401
    from ..models import multires  # noqa: F401
    from . import multires_method  # noqa: F401


def check_registries(cfg: TrainConfig) -> None:
    """Unknown model / dataset / variant / method -> ``ValueError`` naming the allowed values."""
    from ..data import list_datasets, list_variants
    from ..models import list_models

    load_plugins()
    models = list_models()
    if cfg.model not in models and not (cfg.model.startswith(TORCHVISION_PREFIX) and cfg.model in torchvision_models()):
        raise ValueError(f"model must be one of {models} or torchvision.<name> (a torchvision classifier), got {cfg.model!r}")
    datasets = list_datasets()
    if cfg.dataset not in datasets:
        raise ValueError(f"dataset must be one of {datasets}, got {cfg.dataset!r}")
    if cfg.variant is not None:
        variants = list_variants()
        if cfg.variant not in variants:
            raise ValueError(f"variant must be one of {variants}, got {cfg.variant!r}")
    methods = list_methods()
    if cfg.method not in methods:
        raise ValueError(f"method must be one of {methods}, got {cfg.method!r}")


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use device 'cpu' or 'auto'")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def build_data(cfg: TrainConfig, info: DistInfo, device: torch.device):
    from ..data import load_data

    kwargs: dict[str, Any] = dict(
        variant=cfg.variant,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        device=str(device),
        limit=cfg.limit,
    )
    if cfg.image_size is not None:
        kwargs["image_size"] = cfg.image_size
    if cfg.num_classes is not None:
        kwargs["num_classes"] = cfg.num_classes
    if cfg.in_chans is not None:
        kwargs["in_chans"] = cfg.in_chans
    return load_data(cfg.dataset, cfg.data_root, **kwargs)


TORCHVISION_PREFIX = "torchvision."
HUMAN_POOLS = ("max", "strided")  # "keep the network's own resizing" for torchvision models


def torchvision_models() -> list[str]:
    """Model names ``torchvision.<name>`` accepted by the engine (torchvision classifiers)."""
    import torchvision

    return sorted(TORCHVISION_PREFIX + n for n in torchvision.models.list_models(module=torchvision.models))


def build_torchvision_model(name: str, num_classes: int, pool: str, in_chans: int, init_scales: Any = None,
                            **kwargs: Any) -> nn.Module:
    """``torchvision.<name>`` without pretrained weights; with a learnable ``pool`` its resizing
    layers are replaced by :func:`poolarch.convert.convert` (rules A/B of paper 000); with ``max`` or
    ``strided`` it stays the human-designed network."""
    import torchvision

    if in_chans != 3:
        raise ValueError(f"torchvision models take in_chans 3, got {in_chans}")
    model = torchvision.models.get_model(name[len(TORCHVISION_PREFIX):], weights=None, num_classes=num_classes, **kwargs)
    if pool in HUMAN_POOLS:
        if init_scales is not None:
            raise ValueError(f"init_scales needs a learnable pool, got pool={pool!r}")
        return model
    from ..convert import convert

    model, _ = convert(model, method=pool, init_scales=init_scales)
    return model


def blocks_model_name(model: str) -> str:
    """The plain fixed-configuration model that ``config_blocks`` retrains for ``model``:
    ``resnet20_cifar``, ``resnet20_supernet`` and ``resnet20_blocks`` all give ``resnet20_blocks``."""
    from ..models import list_models

    import poolarch.search  # noqa: F401  (registers the ``*_blocks`` models)

    for suffix in ("_blocks", "_multires_supernet", "_supernet", "_cifar"):
        if model.endswith(suffix):
            candidate = model[: -len(suffix)] + "_blocks"
            if candidate in list_models():
                return candidate
    allowed = sorted(m for m in list_models() if m.endswith("_blocks"))
    raise ValueError(f"config_blocks retrains a searched ResNet; model must be one of {allowed} "
                     f"(or their _cifar/_supernet names), got {model!r}")


def build_model(cfg: TrainConfig, data) -> nn.Module:
    from ..models import create_model

    kwargs = dict(cfg.model_args)
    name = cfg.model
    if kwargs.get("config_blocks") is not None:
        name = blocks_model_name(name)
    kwargs.setdefault("in_chans", data.in_chans)
    if cfg.init_scales is not None:
        kwargs["init_scales"] = cfg.init_scales
    if cfg.model.startswith(TORCHVISION_PREFIX):
        return build_torchvision_model(cfg.model, num_classes=data.num_classes, pool=cfg.pool, **kwargs)
    return create_model(name, num_classes=data.num_classes, pool=cfg.pool, **kwargs)


def build_method(cfg: TrainConfig) -> Method:
    # the run's length is offered too: methods with schedules (pruning epoch, temperature) read it
    common = dict(lr=cfg.lr, scale_lr=cfg.scale_lr, weight_decay=cfg.weight_decay, lambda_=cfg.lambda_,
                  epochs=cfg.epochs)
    from .method import _METHODS  # the registered factory, to see which common arguments it takes

    factory = _METHODS.get(cfg.method)
    if factory is None:
        raise ValueError(f"method must be one of {list_methods()}, got {cfg.method!r}")
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in common.items() if takes_any or k in params}
    kwargs.update(cfg.method_args)
    try:
        return create_method(cfg.method, **kwargs)
    except TypeError as e:
        raise ValueError(f"method {cfg.method!r}: bad method_args {sorted(cfg.method_args)}: {e}") from None


def example_input(data, device: torch.device) -> Tensor:
    """One zero image ``(1, C, H, W)`` of the dataset's size (GMACs are reported per image)."""
    size = data.image_size
    if isinstance(size, int):
        size = (size, size)
    return torch.zeros(1, data.in_chans, *size, device=device)


def measure_gmacs(model: nn.Module, example: Tensor) -> float:
    """GMACs per image of ``model`` (eval mode, no grad; the model's mode is restored)."""
    from ..complexity import count_macs

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return count_macs(model, example).total / 1e9
    finally:
        model.train(was_training)


def architecture_summary(model: nn.Module, example: Tensor) -> tuple[str, str]:
    """``(sizes, scales)`` as short strings, e.g. ``("32x32 21x14 10x7", "0.66x0.44 0.50x0.50")``:
    the input size and the output size of every resizing layer (learned or fixed: pools, strided
    convolutions) at ``example``, as paper 000 Table 1 lists them, and each learnable scale."""
    from ..complexity import feature_map_sizes
    from ..complexity import unwrap_model

    was_training = model.training
    try:
        found = feature_map_sizes(model, example)
    finally:
        model.train(was_training)
    # a model may say which sizes matter (after the input): HRNet one per stream (paper 000
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


def write_architecture(model: nn.Module, path: Path, info: dict[str, Any]) -> None:
    """``architecture.yaml``: learned sizes and scales (``poolarch.convert.save_architecture`` when
    that module is installed, else a plain listing of the resizers)."""
    from .. import convert

    save_architecture = getattr(convert, "save_architecture", None)
    if save_architecture is not None:
        tmp = path.with_name(f".{path.name}.tmp")
        save_architecture(model, tmp)
        os.replace(tmp, path)
        return
    layers = []
    for name, module in learnable_resizers(model):
        scale = module.scale() if callable(module.scale) else module.scale
        layers.append(
            {
                "name": name,
                "type": type(module).__name__,
                "scale": [float(v) for v in torch.as_tensor(scale).detach().flatten()],
                "in_size": list(module.last_in_size or ()),
                "out_size": list(module.last_out_size or ()),
            }
        )
    atomic_write_text(path, yaml.safe_dump({**info, "resizers": layers}, sort_keys=False))


def check_writable(out: Path) -> None:
    """``ValueError`` unless ``out`` can be created (or exists as a writable directory)."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"out {str(out)!r} is not writable: {str(probe)!r} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"out {str(out)!r} is not writable: no write permission on {str(probe)!r}")


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.name or "-".join(p for p in (cfg.model, cfg.pool, cfg.dataset, cfg.variant) if p)
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


# -- the trainer -----------------------------------------------------------------------------------
class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and runs :meth:`fit`.

    Construction raises ``ValueError``/``TypeError``/``OSError`` for bad input *before* any file
    is written (the CLI turns those into exit status 2).

    Args:
        cfg: the run's configuration (ignored when ``resume`` is given: the run's own is used).
        resume: directory of an interrupted run to continue.
        overwrite: allow ``cfg.out`` to exist already (its files are replaced).
        log: called with one line per epoch on the primary rank (default: silent).
        model, data: use these instead of ``create_model`` / ``load_data`` (programmatic use).
    """

    def __init__(
        self,
        cfg: TrainConfig | None = None,
        *,
        resume: str | Path | None = None,
        overwrite: bool = False,
        log: Callable[[str], None] | None = None,
        model: nn.Module | None = None,
        data: Any = None,
    ) -> None:
        self.resume_dir = Path(resume) if resume is not None else None
        if self.resume_dir is not None:
            status = run_status(self.resume_dir)
            if status == "missing":
                raise ValueError(f"resume: {str(self.resume_dir)!r} is not a run directory (no {CONFIG_FILE})")
            cfg = TrainConfig.from_yaml(self.resume_dir / CONFIG_FILE)
            cfg.out = str(self.resume_dir)
        if cfg is None:
            raise TypeError("Trainer needs a TrainConfig or resume=RUN_DIR")
        cfg.check()
        self.cfg = cfg
        self.log = log or (lambda line: None)
        if model is None or data is None:
            check_registries(cfg)
        elif cfg.method not in list_methods():
            raise ValueError(f"method must be one of {list_methods()}, got {cfg.method!r}")
        self.device = resolve_device(cfg)
        self.dist = init_distributed(self.device.type)
        # every rank uses rank 0's directory (the default name contains the start time)
        self.run_dir = Path(broadcast_object(str(Path(cfg.out) if cfg.out else default_run_dir(cfg)), self.dist))
        if self.resume_dir is None:
            check_writable(self.run_dir)
            if run_status(self.run_dir) != "missing" and not overwrite:
                raise ValueError(
                    f"out {str(self.run_dir)!r} already holds a run; pass resume to continue it, "
                    "another out, or overwrite"
                )
        barrier(self.dist)  # every rank has checked the directory before rank 0 writes into it
        seed_everything(cfg.seed)

        self.data = data if data is not None else build_data(cfg, self.dist, self.device)
        self.task: Task = create_task(cfg.task or getattr(self.data, "task", "classification"))
        self.model = (model if model is not None else build_model(cfg, self.data)).to(self.device)
        self.method = build_method(cfg)
        self.example = example_input(self.data, self.device)
        was_training = self.model.training
        self.model.eval()  # set-up passes must not touch batch-norm statistics
        self.method.setup(self.model, self.example)
        self.model.train(was_training)

        self.steps_per_epoch = len(self.data.train)
        if cfg.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(f"dataset {cfg.dataset!r} gives no training batch at batch_size {cfg.batch_size}")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if getattr(self.method, "total_steps", 0) is None:
            self.method.total_steps = self.total_steps  # schedules (tau, warm-up) span the whole run
        if self.method.uses_val_step and self.data.val is None:
            raise ValueError(f"method {cfg.method!r} needs a validation split: set val_fraction > 0")

        self.budget: GmacsBudget | None = None
        if cfg.target_gmacs is not None:
            if not scalable_alphas(self.model) or getattr(self.method, "complexity", None) is None:
                raise ValueError(
                    f"target_gmacs adjusts DynOPool scales: it needs pool 'dynopool'; model {cfg.model!r} "
                    f"with pool {cfg.pool!r} has no DynOPool layer"
                )
            self.budget = GmacsBudget(cfg.target_gmacs, self.total_steps, cfg.target_tolerance, cfg.lambda_)
            self.method.lambda_ = self.budget.lambda_

        self._alphas = scalable_alphas(self.model)
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
                find_unused_parameters=self.method.ddp_find_unused_parameters,
            )

        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        if self.resume_dir is not None and (self.resume_dir / LAST).is_file():
            self._load(load_checkpoint(self.resume_dir / LAST, map_location=self.device))
        elif self.dist.is_primary:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in (RESULT_FILE, LAST, BEST, METRICS_FILE, ARCH_FILE):
                (self.run_dir / stale).unlink(missing_ok=True)
            cfg_to_save = TrainConfig.from_dict(cfg.to_dict())
            cfg_to_save.out = str(self.run_dir)
            cfg_to_save.to_yaml(self.run_dir / CONFIG_FILE)
        barrier(self.dist)

    # -- checkpoints -----------------------------------------------------------------------------
    def _state(self, epochs_done: int) -> dict[str, Any]:
        rng = rng_state()
        if self.dist.enabled:
            states: list[Any] = [None] * self.dist.world_size
            torch.distributed.all_gather_object(states, rng)
            rng = {"per_rank": states}
        return {
            "epoch": epochs_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "budget": self.budget.state_dict() if self.budget else None,
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "history": self.history,
            "best": self.best,
            "config": self.cfg.to_dict(),
        }

    def _load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        if self.budget is not None and state.get("budget") is not None:
            self.budget.load_state_dict(state["budget"])
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
        if not self.cfg.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _set_lr(self, step: int) -> None:
        cfg = self.cfg
        milestones = [m * self.steps_per_epoch for m in cfg.milestones]
        factor = lr_factor(cfg.schedule, step, self.total_steps, milestones=milestones, gamma=cfg.gamma, power=cfg.poly_power)
        frozen_arch = self.budget is not None and self.budget.frozen
        for group in self.optimizer.param_groups:
            pinned = frozen_arch and group.get("name") == "arch"
            group["lr"] = 0.0 if pinned else group["initial_lr"] * factor

    def _train_step(self, step: int, inputs: Tensor, targets: Tensor, val_batches) -> dict[str, float]:
        if self.budget is not None and self.budget.should_freeze(step):
            self.budget.freeze(self.model, lambda: measure_gmacs(self.model, self.example))
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
        if self.cfg.max_scale is not None:
            with torch.no_grad():
                for alpha in self._alphas:
                    alpha.clamp_(min=1.0 / self.cfg.max_scale)
        if self.method.uses_val_step:
            val_inputs, val_targets = next(val_batches)
            self.method.val_step(self.ddp_model, val_inputs.to(self.device), val_targets.to(self.device), self.task.loss)
        if self.budget is not None:
            gmacs = self.method.current_gmacs()
            self.method.lambda_ = self.budget.update(gmacs)
        row = {"loss": float(loss.detach()), "task_loss": float(task_loss.detach())}
        row.update({f"loss_{k}": float(v.detach()) for k, v in extras.items()})
        self._train_acc.update(output.float(), targets)
        return row

    def _cycle(self, loader, epoch: int):
        """Batches of ``loader`` forever, restarting it (same epoch seed) when exhausted."""
        while True:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            yield from loader

    @torch.no_grad()
    def evaluate(self, loader) -> float:
        """The task metric over ``loader`` (summed across ranks)."""
        self.model.eval()
        acc = self.task.accumulator(self.data.num_classes)
        for i, (inputs, targets) in enumerate(loader):
            if self.cfg.max_eval_steps is not None and i >= self.cfg.max_eval_steps:
                break
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            with self._autocast():
                output = self.method.eval_forward(self.model, inputs)
            acc.update(output.float(), targets)
        all_reduce_sum(acc.state, self.dist)
        self.model.train()
        return acc.compute()

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, stop_after_epochs: int | None = None) -> RunResult:
        """Train from the current epoch to ``cfg.epochs`` (or only ``stop_after_epochs`` epochs,
        leaving the run resumable and unfinished). Returns the :class:`RunResult`."""
        cfg, primary = self.cfg, self.dist.is_primary
        if self.start_epoch >= cfg.epochs and run_status(self.run_dir) == "finished":
            return self._result(finished=True)
        show_bar = primary and (cfg.progress if cfg.progress is not None else sys.stderr.isatty())
        metric = self.task.metric
        epochs_run = 0
        for epoch in range(self.start_epoch, cfg.epochs):
            if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                return self._result(finished=False)
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

                bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
            for i, (inputs, targets) in enumerate(self.data.train):
                if i >= self.steps_per_epoch:
                    break
                inputs, targets = inputs.to(self.device), targets.to(self.device)
                row = self._train_step(epoch * self.steps_per_epoch + i, inputs, targets, val_batches)
                for k, v in row.items():
                    sums[k] = sums.get(k, 0.0) + v
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.3f}")
            if bar is not None:
                bar.close()
            train_time = time.perf_counter() - started

            broadcast_buffers(self.model, self.dist)
            all_reduce_sum(self._train_acc.state, self.dist)
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            totals = torch.tensor([sums.get(k, 0.0) for k in sorted(sums)], dtype=torch.float64)
            all_reduce_sum(totals, self.dist)
            for k, v in zip(sorted(sums), totals.tolist()):
                record[f"train_{k}"] = v / (self.steps_per_epoch * self.dist.world_size)
            record[f"train_{metric}"] = self._train_acc.compute()
            for split in ("val", "test"):
                loader = getattr(self.data, split, None)
                if loader is not None:
                    record[f"{split}_{metric}"] = self.evaluate(loader)
            record["gmacs"] = measure_gmacs(self.model, self.example)  # also sets the last sizes
            record["sizes"], record["scales"] = architecture_summary(self.model, self.example)
            record["lambda"] = self.method.lambda_
            if self.budget is not None:
                record["budget_frozen"] = self.budget.frozen
                record["budget_projection"] = self.budget.projection_factor
            record["train_time_s"] = train_time
            record["images_per_s"] = self.steps_per_epoch * cfg.batch_size * self.dist.world_size / max(train_time, 1e-9)
            extra = self.method.epoch_end(self.model, epoch)
            record.update({k: _plain(v) for k, v in (extra or {}).items()})
            self.history.append(record)

            key = f"val_{metric}" if f"val_{metric}" in record else f"test_{metric}"
            improved = key in record and (not self.best or record[key] > self.best.get(key, -math.inf))
            if improved:
                self.best = dict(record)
            state = self._state(epoch + 1)  # collective on DDP: every rank gathers RNG states
            if primary:
                atomic_write_csv(self.run_dir / METRICS_FILE, self.history)
                write_architecture(self.model, self.run_dir / ARCH_FILE, {"epoch": epoch + 1, "gmacs": record["gmacs"]})
                atomic_torch_save(state, self.run_dir / LAST)
                if improved:
                    atomic_torch_save(state, self.run_dir / BEST)
                self.log(_format_row(record, metric))
            barrier(self.dist)
            epochs_run += 1
        if primary:
            result = {"status": "finished", "final": self.history[-1], "best": self.best}
            atomic_write_text(self.run_dir / RESULT_FILE, yaml.safe_dump(_yaml_safe(result), sort_keys=False))
        barrier(self.dist)
        return self._result(finished=True)

    def _result(self, finished: bool) -> RunResult:
        final = self.history[-1] if self.history else {}
        return RunResult(self.run_dir, final, self.best, list(self.history), finished)


def _yaml_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _yaml_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_yaml_safe(v) for v in obj]
    return _plain(obj)


def _format_row(record: dict[str, Any], metric: str) -> str:
    parts = [f"epoch {record['epoch']}", f"task loss {record.get('train_task_loss', float('nan')):.4f}"]
    for split in ("train", "val", "test"):
        if f"{split}_{metric}" in record:
            parts.append(f"{split} {metric} {record[f'{split}_{metric}']:.2f}")
    parts.append(f"GMACs {record['gmacs']:.4f}")
    if record.get("sizes"):
        parts.append(f"sizes {record['sizes']}")
    return " | ".join(parts)


def train(
    cfg: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    stop_after_epochs: int | None = None,
    log: Callable[[str], None] | None = None,
    model: nn.Module | None = None,
    data: Any = None,
) -> RunResult:
    """Train one run described by ``cfg`` (or continue ``resume``); see :class:`Trainer`.

    ``stop_after_epochs`` ends this invocation after that many epochs, leaving a resumable,
    unfinished run directory (what a killed job leaves behind, minus the partial epoch).
    """
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite, log=log, model=model, data=data)
    return trainer.fit(stop_after_epochs=stop_after_epochs)


@dataclass
class LoadedRun:
    """A run rebuilt from its directory: config, data, model (checkpoint loaded, eval mode)."""

    cfg: TrainConfig
    data: Any
    model: nn.Module
    epoch: int
    device: torch.device


def load_run(run_dir: str | Path, checkpoint: str = "best") -> LoadedRun:
    """Rebuild the model of a run from ``config.yaml`` and load ``best.pt`` or ``last.pt``."""
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be one of ['best', 'last'], got {checkpoint!r}")
    if run_status(run_dir) == "missing":
        raise ValueError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE})")
    path = run_dir / f"{checkpoint}.pt"
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist: the run has not completed an epoch")
    cfg = TrainConfig.from_yaml(run_dir / CONFIG_FILE)
    check_registries(cfg)
    device = resolve_device(cfg)
    seed_everything(cfg.seed)
    data = build_data(cfg, DistInfo(), device)
    model = build_model(cfg, data).to(device)
    state = load_checkpoint(path, map_location=device)
    model.load_state_dict(state["model"])
    model.eval()
    return LoadedRun(cfg=cfg, data=data, model=model, epoch=int(state["epoch"]), device=device)


def evaluate_run(run_dir: str | Path, checkpoint: str = "best") -> dict[str, Any]:
    """Rebuild the model of a run, load ``best.pt`` or ``last.pt`` and evaluate it on the
    validation and test splits; returns the metrics, GMACs per image and feature-map sizes."""
    run = load_run(run_dir, checkpoint)
    cfg, data, model, device = run.cfg, run.data, run.model, run.device
    method = build_method(cfg)
    task = create_task(cfg.task or getattr(data, "task", "classification"))
    out: dict[str, Any] = {"run_dir": str(run_dir), "checkpoint": checkpoint, "epoch": run.epoch}
    with torch.no_grad():
        for split in ("val", "test"):
            loader = getattr(data, split, None)
            if loader is None:
                continue
            acc = task.accumulator(data.num_classes)
            for i, (inputs, targets) in enumerate(loader):
                if cfg.max_eval_steps is not None and i >= cfg.max_eval_steps:
                    break
                acc.update(method.eval_forward(model, inputs.to(device)).float(), targets.to(device))
            out[f"{split}_{task.metric}"] = acc.compute()
    example = example_input(data, device)
    out["gmacs"] = measure_gmacs(model, example)
    out["sizes"], out["scales"] = architecture_summary(model, example)
    return out
