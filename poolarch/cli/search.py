"""``poolarch search``, ``poolarch sweep`` and ``poolarch rank-corr`` (pooling-configuration search,
Balanced Mixture of SuperNets and its baselines)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch.distributed as dist
import yaml

from poolarch._schema import check_option, option, parse_ints, read_yaml
from poolarch.search import (list_backbones, plot_rank_correlation, rank_correlation, read_ranking, read_sweep,
                             run_search, search_config, search_methods, sweep)
from poolarch.train import TrainConfig

from . import UsageError, guard, line_logger
from ._options import add_options, given

__all__ = ["add_commands", "SearchOptions", "SweepOptions", "SWEEP_DEFAULTS"]

CFG, OPT = "cfg.", "opt."  # dest prefixes: TrainConfig flags, command options
# TrainConfig fields a search or sweep sets itself (the supernet / the sub-network of each run)
_SET_BY_COMMAND = ("model", "pool", "method", "init_scales")
# sweep base settings where the command gives no --config (the paper's CIFAR-10 sweep)
SWEEP_DEFAULTS: dict[str, Any] = dict(dataset="cifar10", epochs=200, batch_size=256, lr=0.1, weight_decay=1e-3,
                                      val_fraction=0.5)


@dataclass
class _SpaceOptions:
    backbone: str = option("resnet20", group="command", help="backbone whose pooling configurations are searched")
    widths: list | None = option(None, group="command", parse=parse_ints, metavar="W0,W1,...",
                                 unset="the backbone's", help="channels per resolution")
    config: str | None = option(None, group="command", metavar="FILE", unset="none",
                                help="YAML TrainConfig with the base settings; flags override it")
    quiet: bool = option(False, group="command", help="no per-epoch lines")


@dataclass
class SearchOptions(_SpaceOptions):
    """Options of ``poolarch search`` (the training settings are TrainConfig flags)."""

    method: str = option("balanced-mixture", group="command", help="search method")
    num_models: int | None = option(None, group="command", ge=1, flag=("-M", "--num-models"), metavar="M",
                                    unset="the method's",
                                    help="weight sets (balanced-mixture; spos: >1 = uniform mixture)")
    scale_epochs: bool = option(True, group="command", help="balanced mixture: train M times the epochs")
    beta: float | None = option(None, group="command", ge=0.0, lt=1.0, unset="the method's",
                                help="balanced mixture: moving-average smoothing of a[c, m]")
    eval_top: int | None = option(None, group="command", ge=1, metavar="K", unset="all",
                                  help="rank by a[c, m] first and evaluate only the top K configurations")
    top_k: int = option(5, group="command", ge=1, metavar="K", help="configurations listed in topk.yaml")
    recalibration_batches: int = option(10, group="command", ge=0, metavar="N",
                                        help="training batches re-estimating batch-norm statistics per "
                                             "configuration (0: batch statistics)")
    resume: str | None = option(None, group="command", metavar="RUN_DIR", unset="none",
                                help="continue an interrupted search")
    overwrite: bool = option(False, group="command", help="replace an existing run directory")


@dataclass
class SweepOptions(_SpaceOptions):
    """Options of ``poolarch sweep`` (the training settings are TrainConfig flags)."""

    workers: int = option(1, group="command", ge=1, help="parallel training runs")
    threads: int = option(1, group="command", ge=1, help="torch threads per run")
    ray: bool = option(False, group="command", help="run the trials with Ray Tune (extra 'ray')")
    address: str | None = option(None, group="command", unset="none",
                                 help="address of an existing Ray cluster (implies --ray)")
    configs: list | None = option(None, group="command", parse=parse_ints, nargs="+", metavar="N0,N1,...",
                                  unset="every configuration of the space", help="only these configurations")


def _options(cls: type, args: argparse.Namespace):
    """The ``cls`` instance of the given command options (defaults for the rest), validated."""
    opts = cls(**given(args, cls, OPT))
    for f in fields(cls):
        check_option(cls, f, getattr(opts, f.name))
    return opts


def add_commands(sub: argparse._SubParsersAction) -> None:
    names = {"backbone": list_backbones, "method": lambda: list(search_methods())}
    shown = search_config(SearchOptions.method, SearchOptions.backbone, scale_epochs=False)
    p = sub.add_parser("search", help="pooling-configuration search (Balanced Mixture of SuperNets, baselines)")
    add_options(p, SearchOptions, OPT, names=names, defaults={
        "num_models": f"{search_config('balanced-mixture').model_args['num_weight_sets']} for balanced-mixture, "
                      "1 otherwise"})
    add_options(p, TrainConfig, CFG, skip=_SET_BY_COMMAND, nested=False,
                defaults={**{f.name: getattr(shown, f.name) for f in fields(TrainConfig)},
                          "name": "search-<method>-<backbone>", "model_args": None, "method_args": None},
                helps={"epochs": "epochs per weight set (balanced mixture: times M unless --no-scale-epochs)"})
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("sweep", help="train every configuration of a space independently (ground truth)")
    add_options(p, SweepOptions, OPT, names=names)
    add_options(p, TrainConfig, CFG, skip=(*_SET_BY_COMMAND, "name"), nested=False,
                defaults={**SWEEP_DEFAULTS, "out": "runs/sweep-<backbone>-<dataset>"})
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("rank-corr", help="Kendall tau / top-k overlap of searches vs a sweep (Fig. 3)")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="SEARCH_DIR [SEARCH_DIR ...] SWEEP_DIR; a sweep of another seed as a SEARCH_DIR "
                        "measures the seed-noise ceiling of the correlation")
    p.add_argument("--metric", default="test_top1", help="ground-truth column of sweep.csv (default: test_top1)")
    p.add_argument("--top-k", type=parse_ints, default=[1, 3, 5], metavar="K[,K...]", help="(default: 1,3,5)")
    p.add_argument("--out", metavar="DIR", help="where rank_corr.yaml/png go (default: the first SEARCH_DIR)")
    p.set_defaults(func=cmd_rank_corr)


def _search_config(opts: SearchOptions, args: argparse.Namespace) -> TrainConfig:
    """The keys written in ``--config`` (validated; unset keys keep the search defaults) with the
    flags on top, turned into the search's TrainConfig."""
    raw: dict[str, Any] = {}
    if opts.config:
        TrainConfig.from_yaml(opts.config)  # unknown keys / bad values -> ValueError
        raw = read_yaml(opts.config)
    flags = given(args, TrainConfig, CFG)
    model_args = {**raw.pop("model_args", {}), **flags.pop("model_args", {})}
    if opts.widths:
        model_args["widths"] = opts.widths
    method_args = {**raw.pop("method_args", {}), **flags.pop("method_args", {})}
    if opts.beta is not None:
        method_args["beta"] = opts.beta
    overrides = {k: v for k, v in {**raw, **flags}.items() if k not in _SET_BY_COMMAND}
    return search_config(opts.method, opts.backbone, num_models=opts.num_models, scale_epochs=opts.scale_epochs,
                         model_args=model_args, method_args=method_args, **overrides)


def cmd_search(args: argparse.Namespace) -> int:
    opts = guard(lambda: _options(SearchOptions, args))
    log = line_logger(opts.quiet)
    ranking = dict(eval_top=opts.eval_top, top_k=opts.top_k, recalibration_batches=opts.recalibration_batches)
    if opts.resume:
        rows = guard(lambda: run_search(resume=opts.resume, log=log, **ranking))
    else:
        cfg = guard(lambda: _search_config(opts, args))
        rows = guard(lambda: run_search(cfg, overwrite=opts.overwrite, log=log, **ranking))
    primary = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    for row in rows[: opts.top_k] if primary else []:
        print(f"{row['rank']:>3}  {row['config']:<12} m={row['weight_set']}  "
              f"{'-' if row['accuracy'] is None else format(row['accuracy'], '.2f')}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    opts = guard(lambda: _options(SweepOptions, args))

    def build() -> TrainConfig:
        base = TrainConfig.from_yaml(opts.config) if opts.config else TrainConfig(**SWEEP_DEFAULTS)
        overrides = given(args, TrainConfig, CFG)
        overrides.pop("out", None)
        if opts.widths:
            overrides["model_args"] = {**overrides.get("model_args", {}), "widths": opts.widths}
        return base.merged(overrides)

    base = guard(build)
    out = Path(getattr(args, CFG + "out") or f"runs/sweep-{opts.backbone}-{base.dataset}")
    backend = "ray" if (opts.ray or opts.address) else "local"
    rows = guard(lambda: sweep(base, opts.backbone, out, configs=opts.configs, workers=opts.workers,
                               threads=opts.threads, backend=backend, address=opts.address,
                               log=line_logger(opts.quiet)))
    print(f"sweep of {len(rows)} configuration(s): {out / 'sweep.csv'}")
    return 0


def cmd_rank_corr(args: argparse.Namespace) -> int:
    if len(args.dirs) < 2:
        raise UsageError("rank-corr needs SEARCH_DIR [SEARCH_DIR ...] SWEEP_DIR")
    *search_dirs, sweep_dir = args.dirs
    truth = guard(lambda: read_sweep(sweep_dir, args.metric))
    results, searches = {}, {}
    for d in search_dirs:
        label = Path(d).name
        # a second sweep (another seed) in place of a search gives the noise ceiling of tau
        is_sweep = (Path(d) / "sweep.csv").is_file() and not (Path(d) / "ranking.csv").is_file()
        searches[label] = guard(lambda: read_sweep(d, args.metric) if is_sweep else read_ranking(d))
        results[label] = guard(lambda: rank_correlation(searches[label], truth, ks=args.top_k))
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
