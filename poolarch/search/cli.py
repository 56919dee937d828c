"""``poolarch search``, ``poolarch sweep`` and ``poolarch rank-corr`` (added to the main CLI by
:func:`add_commands`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

__all__ = ["add_commands"]


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace("-", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 16,32,64, got {text!r}") from None


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML TrainConfig with the base settings; flags override it")
    p.add_argument("--backbone", default="resnet20",
                   help="resnet20 | resnet18 | resnet50 | resnet18_imagenet | resnet50_imagenet (default resnet20)")
    p.add_argument("--widths", type=_int_list, metavar="W0,W1,...", help="channels per resolution (default: the backbone's)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="a name of poolarch.data.list_datasets() (default cifar10)")
    g.add_argument("--data-root", metavar="DIR")
    g.add_argument("--image-size", type=int, metavar="S")
    g.add_argument("--num-classes", type=int)
    g.add_argument("--limit", type=int, metavar="N", help="use at most N training images")
    g.add_argument("--val-fraction", type=float, help="validation share of the training set (default 0.5)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="epochs (search: per weight set)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", help="cosine | step | poly | constant")
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help="output directory")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto | cpu | cuda")
    g.add_argument("--amp", action="store_true", default=None)
    g.add_argument("--max-steps-per-epoch", type=int, metavar="N")
    g.add_argument("--max-eval-steps", type=int, metavar="N")
    g.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("dataset", "data_root", "image_size", "num_classes", "limit", "val_fraction", "batch_size", "lr",
            "weight_decay", "schedule", "out", "seed", "device", "amp", "max_steps_per_epoch", "max_eval_steps")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``search``, ``sweep`` and ``rank-corr`` to the ``poolarch`` command line."""
    p = subparsers.add_parser("search", help="pooling-configuration search (paper 003) and ranking")
    p.add_argument("--method", default="balanced-mixture",
                   help="balanced-mixture | spos | darts | mcts-ucb | bse (default balanced-mixture)")
    p.add_argument("-M", "--num-models", type=int,
                   help="weight sets (balanced-mixture: default 4; spos: default 1, >1 = uniform mixture)")
    p.add_argument("--no-scale-epochs", action="store_true", help="do not multiply the epochs by M")
    p.add_argument("--beta", type=float, help="moving-average smoothing of a[c, m] (default 0.9)")
    p.add_argument("--method-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="extra method argument, e.g. tau_end=0.01, warmup=0.2, ucb_c=0.5, share_weights=false")
    p.add_argument("--model-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="extra model argument, e.g. share_weights=false (darts)")
    p.add_argument("--eval-top", type=int, metavar="K", help="rank by a[c, m] first and evaluate only the top K")
    p.add_argument("--top-k", type=int, default=5, help="configurations listed in topk.yaml (default 5)")
    p.add_argument("--recalibration-batches", type=int, default=10,
                   help="training batches re-estimating batch-norm statistics per configuration (0: batch statistics)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted search")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    _add_run_arguments(p)
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("sweep", help="train every configuration of a space independently (ground truth)")
    p.add_argument("--workers", type=int, default=1, help="parallel training runs (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--ray", action="store_true", help="run the trials with Ray Tune (extra 'ray')")
    p.add_argument("--address", help="address of an existing Ray cluster (implies --ray)")
    p.add_argument("--configs", nargs="+", metavar="N0,N1,...", help="only these configurations")
    _add_run_arguments(p)
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser("rank-corr", help="Kendall tau / top-k overlap of searches vs a sweep (Fig. 3)")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="SEARCH_DIR [SEARCH_DIR ...] SWEEP_DIR; a sweep of another seed as a SEARCH_DIR "
                        "measures the seed-noise ceiling of the correlation")
    p.add_argument("--metric", default="test_top1", help="ground-truth column of sweep.csv (default test_top1)")
    p.add_argument("--top-k", type=_int_list, default=[1, 3, 5], metavar="K[,K...]")
    p.add_argument("--out", metavar="DIR", help="where rank_corr.yaml/png go (default: the first SEARCH_DIR)")
    p.set_defaults(func=cmd_rank_corr)


def _usage():
    from ..cli import UsageError

    return UsageError


def _guard(factory):
    try:
        return factory()
    except (ValueError, TypeError, OSError) as e:
        raise _usage()(str(e).splitlines()[0] if str(e) else type(e).__name__) from e


def _log(args: argparse.Namespace):
    return (lambda line: None) if getattr(args, "quiet", False) else (lambda line: print(line, flush=True))


def _base_config(args: argparse.Namespace):
    from ..train.config import TrainConfig

    return TrainConfig.from_yaml(args.config) if args.config else None


def _raw_config(args: argparse.Namespace) -> dict[str, Any]:
    """The keys actually written in ``--config`` (validated), so unset keys keep the search defaults."""
    from ..train.config import TrainConfig

    if not args.config:
        return {}
    TrainConfig.from_yaml(args.config)  # unknown keys / bad values -> ValueError
    with open(args.config) as f:
        return dict(yaml.safe_load(f) or {})


def cmd_search(args: argparse.Namespace) -> int:
    import poolarch.search  # noqa: F401
    from .runner import run_search, search_config

    if args.resume:
        rows = _guard(lambda: run_search(resume=args.resume, eval_top=args.eval_top, top_k=args.top_k,
                                         recalibration_batches=args.recalibration_batches, log=_log(args)))
    else:
        def build():
            raw = _raw_config(args)
            method_args = dict(args.method_arg)
            if args.beta is not None:
                method_args["beta"] = args.beta
            model_args = dict(args.model_arg)
            if args.widths:
                model_args["widths"] = args.widths
            model_args = {**raw.pop("model_args", {}), **model_args}
            method_args = {**raw.pop("method_args", {}), **method_args}
            overrides = {**raw, **_overrides(args)}
            for key in ("method", "model", "pool"):
                overrides.pop(key, None)
            epochs = args.epochs if args.epochs is not None else overrides.pop("epochs", 10)
            overrides.pop("epochs", None)
            return search_config(args.method, args.backbone, num_models=args.num_models, epochs=epochs,
                                 scale_epochs=not args.no_scale_epochs, model_args=model_args,
                                 method_args=method_args, **overrides)

        cfg = _guard(build)
        rows = _guard(lambda: run_search(cfg, eval_top=args.eval_top, top_k=args.top_k, overwrite=args.overwrite,
                                         recalibration_batches=args.recalibration_batches, log=_log(args)))
    from ..train.distributed import is_primary_process

    for row in rows[: args.top_k] if is_primary_process() else []:
        print(f"{row['rank']:>3}  {row['config']:<12} m={row['weight_set']}  "
              f"{'-' if row['accuracy'] is None else format(row['accuracy'], '.2f')}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..train.config import TrainConfig
    from .sweep import sweep

    def build():
        base = _base_config(args) or TrainConfig(dataset="cifar10", epochs=200, batch_size=256, lr=0.1,
                                                 weight_decay=1e-3, val_fraction=0.5)
        model_args = {"widths": args.widths} if args.widths else {}
        overrides = _overrides(args)
        overrides.pop("out", None)
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        if model_args:
            overrides["model_args"] = model_args
        return base.merged(overrides)

    base = _guard(build)
    out = Path(args.out or f"runs/sweep-{args.backbone}-{base.dataset}")
    backend = "ray" if (args.ray or args.address) else "local"
    rows = _guard(lambda: sweep(base, args.backbone, out, configs=args.configs, workers=args.workers,
                                threads=args.threads, backend=backend, address=args.address, log=_log(args)))
    print(f"sweep of {len(rows)} configuration(s): {out / 'sweep.csv'}")
    return 0


def cmd_rank_corr(args: argparse.Namespace) -> int:
    from .evaluate import read_ranking
    from .rankcorr import plot_rank_correlation, rank_correlation
    from .sweep import read_sweep

    if len(args.dirs) < 2:
        raise _usage()("rank-corr needs SEARCH_DIR [SEARCH_DIR ...] SWEEP_DIR")
    *search_dirs, sweep_dir = args.dirs
    truth = _guard(lambda: read_sweep(sweep_dir, args.metric))
    results, searches = {}, {}
    for d in search_dirs:
        label = Path(d).name
        # a second sweep (another seed) in place of a search gives the noise ceiling of tau
        is_sweep = (Path(d) / "sweep.csv").is_file() and not (Path(d) / "ranking.csv").is_file()
        searches[label] = _guard(lambda: read_sweep(d, args.metric) if is_sweep else read_ranking(d))
        results[label] = _guard(lambda: rank_correlation(searches[label], truth, ks=args.top_k))
    out = Path(args.out or search_dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rank_corr.yaml", "w") as f:
        yaml.safe_dump({"truth": str(sweep_dir), "metric": args.metric, "searches": results}, f, sort_keys=False)
    plot_rank_correlation(searches, truth, out / "rank_corr.png", {k: v["kendall_tau"] for k, v in results.items()})
    for label, r in results.items():
        overlaps = "  ".join(f"top{k} {r[f'top{k}_overlap']:.2f}" for k in args.top_k)
        print(f"{label}: kendall tau {r['kendall_tau']:.3f}  {overlaps}  (n={r['configurations']}, "
              f"search best {r['search_best']} -> {r['search_best_truth']:.2f}, truth best {r['truth_best']})")
    return 0
