"""A small-scale, rerunnable study of the three papers on Fashion-MNIST (issue 14).

    python benchmarks/study.py                       # default mode, ~45-60 min on 2 cores
    python benchmarks/study.py --quick --dataset random --out /tmp/study   # smoke test, < 2 min
    python benchmarks/study.py --report-only         # regenerate docs/results.md + figures

Rows (seeds 0, 1, 2 for every row; the sweep uses seeds 0 and 1):

* Jang et al. 2023 (DynOPool, Table 1/2 analogue), ``vgg_small``: human (max pooling); DynOPool-S
  (``target_gmacs`` = the human net's GMACs, read from its seed's ``result.yaml``); DynOPool-B
  (``target_gmacs`` = 2x that); Shape Adaptor; DiffStride. Same data, epochs and optimiser.
* the multi-resolution-block paper (WACV submission 832) (multi-resolution blocks, Table 1 analogue): ``multires_net`` (method ``multires``:
  mixing weights learned on the validation stream, argmax kept for the second half),
  ``multires_predefined``, ``multires_no_pool``, ``multires_scale_invariant``, and the
  one-resolution export (``multires_one_res`` with the schedule learned by ``multires_net`` of the
  same seed) retrained from scratch.
* Javan et al. 2023 (Balanced Mixture, Fig. 3 analogue): the 36 configurations of ResNet20 (reduced widths)
  trained from scratch by ``poolarch.search.sweep`` with seeds 0 and 1 (ground truth = their mean
  test top-1; noise ceiling = Kendall tau between the two seeds), then ``spos``, ``balanced-mixture``
  M=2 and M=4 searches with equal total epochs; Kendall tau of each search's validation ranking
  against the ground truth.

Every run is an ordinary run directory under ``--out`` (default ``runs/study``). Finished runs are
skipped and interrupted ones resumed, so a killed study continues where it stopped. The report
step (also run at the end of a study) rebuilds ``docs/results.md`` and ``docs/figures/*.png`` only
from the run directories (``result.yaml``, ``metrics.csv``, ``ranking.csv``) and ``study.yaml``
(command, machine, wall time). The validation split is used by the methods that need one (the
multires bilevel step, the searches' rankings); nothing is tuned on the test split, and no
hyper-parameter was tuned per method.
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
SWEEP_SEEDS = (0, 1)
STUDY_FILE = "study.yaml"
READING_MARK = "<!-- READING: plain-language reading, written by hand after the real run -->"

# Settings per mode. Counts are images (``limit``: training subset), epochs, and evaluation caps
# (``eval_images`` = eval_batch_size * max_eval_steps; ``None`` = the whole val/test split).
MODES: dict[str, dict[str, Any]] = {
    "default": {
        "batch_size": 128, "eval_batch_size": 500, "lr": 0.05, "threads": 1,
        "p000": {"limit": 12000, "epochs": 6, "eval_images": None},
        "p002": {"limit": 4000, "epochs": 4, "eval_images": 2000,
                 "model_args": {"channels": 16, "num_layers": 6, "resolutions": 3}, "every": 2},
        "p003": {"limit": 3000, "epochs": 3, "eval_images": 1000, "widths": [8, 16, 32],
                 "search_epochs": 6, "configs": None},
    },
    "quick": {
        "batch_size": 16, "eval_batch_size": 32, "lr": 0.05, "threads": 1, "max_steps_per_epoch": 2,
        "p000": {"limit": 64, "epochs": 1, "eval_images": 32},
        "p002": {"limit": 64, "epochs": 2, "eval_images": 32,
                 "model_args": {"channels": 4, "num_layers": 3, "resolutions": 2}, "every": 2},
        "p003": {"limit": 64, "epochs": 1, "eval_images": 32, "widths": [4, 4, 8],
                 "search_epochs": 2, "configs": [[4, 3, 3], [8, 1, 1], [1, 1, 8], [2, 4, 4]]},
    },
}
P000_ROWS = ("human", "dynopool-s", "dynopool-b", "shape-adaptor", "diffstride")
P002_ROWS = ("multires-learned", "multires-predefined", "multires-no-pool", "multires-scale-invariant",
             "one-res-retrained")
P003_SEARCHES = {"spos": ("spos", 1), "bm-m2": ("balanced-mixture", 2), "bm-m4": ("balanced-mixture", 4)}


# -- planning -----------------------------------------------------------------------------------
@dataclass
class Job:
    """One run: ``kind`` "train" (``poolarch.train.train``) or "search" (``poolarch.search.run_search``).
    ``make`` builds the TrainConfig dict when the job starts (phase-2 jobs read phase-1 results)."""

    paper: str
    row: str
    seed: int
    out: Path
    kind: str
    phase: int
    make: Callable[[], dict[str, Any]] = field(repr=False)


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"dataset": args.dataset, "data_root": args.data_root}
    if args.dataset == "random":  # random data of Fashion-MNIST's shape
        opts.update(image_size=28, in_chans=1, num_classes=10)
    return opts


def common(args: argparse.Namespace, mode: dict[str, Any], part: dict[str, Any], seed: int) -> dict[str, Any]:
    """Settings shared by every run of one paper: data, optimiser, epochs, evaluation caps."""
    cfg = {**data_options(args), "seed": seed, "epochs": part["epochs"], "limit": part["limit"],
           "batch_size": mode["batch_size"], "eval_batch_size": mode["eval_batch_size"], "lr": mode["lr"],
           "schedule": "cosine", "weight_decay": 5e-4, "progress": False}
    if part["eval_images"] is not None:
        cfg["max_eval_steps"] = max(1, part["eval_images"] // mode["eval_batch_size"])
    if mode.get("max_steps_per_epoch"):
        cfg["max_steps_per_epoch"] = mode["max_steps_per_epoch"]
    return cfg


def read_result(run_dir: Path) -> dict[str, Any]:
    with open(run_dir / "result.yaml") as f:
        return (yaml.safe_load(f) or {}).get("final", {})


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def learned_schedule(run_dir: Path) -> list[int]:
    """Per-layer level (argmax of the mixing weights) of a finished ``multires_net`` run, from the
    last row of its metrics.csv."""
    from poolarch.models.multires import architecture_from_metrics

    return [int(v) for v in architecture_from_metrics(read_metrics(run_dir)[-1])["schedule"]]


def plan(args: argparse.Namespace) -> list[Job]:
    mode = MODES["quick" if args.quick else "default"]
    out = Path(args.out)
    jobs: list[Job] = []
    p0, p2, p3 = mode["p000"], mode["p002"], mode["p003"]
    for seed in SEEDS:
        base0 = {**common(args, mode, p0, seed), "model": "vgg_small", "method": "plain"}
        human_dir = out / "p000" / "human" / f"s{seed}"

        def with_target(factor: float, base0: dict = base0, human_dir: Path = human_dir) -> Callable[[], dict]:
            return lambda: {**base0, "pool": "dynopool", "target_gmacs": factor * float(read_result(human_dir)["gmacs"])}

        rows0 = {"human": (0, lambda b=base0: {**b, "pool": "max"}),
                 "dynopool-s": (1, with_target(1.0)),
                 "dynopool-b": (1, with_target(2.0)),
                 "shape-adaptor": (0, lambda b=base0: {**b, "pool": "shape_adaptor", "method": "shape_adaptor"}),
                 "diffstride": (0, lambda b=base0: {**b, "pool": "diffstride"})}
        for row, (phase, make) in rows0.items():
            jobs.append(Job("p000", row, seed, out / "p000" / row / f"s{seed}", "train", phase, make))

        base2 = {**common(args, mode, p2, seed), "pool": "max", "method": "plain"}
        margs = dict(p2["model_args"])
        plain_args = {"channels": margs["channels"], "num_layers": margs["num_layers"]}
        learned_dir = out / "p002" / "multires-learned" / f"s{seed}"
        rows2 = {
            "multires-learned": (0, lambda b=base2: {**b, "model": "multires_net", "method": "multires",
                                                     "model_args": margs, "method_args": {"one_res": True}}),
            "multires-predefined": (0, lambda b=base2: {**b, "model": "multires_predefined", "model_args": {
                **plain_args, "resolutions": margs["resolutions"], "every": p2["every"]}}),
            "multires-no-pool": (0, lambda b=base2: {**b, "model": "multires_no_pool", "model_args": plain_args}),
            "multires-scale-invariant": (0, lambda b=base2: {**b, "model": "multires_scale_invariant",
                                                             "model_args": margs}),
            "one-res-retrained": (1, lambda b=base2, d=learned_dir: {
                **b, "model": "multires_one_res",
                "model_args": {"channels": margs["channels"], "schedule": learned_schedule(d)}}),
        }
        for row, (phase, make) in rows2.items():
            jobs.append(Job("p002", row, seed, out / "p002" / row / f"s{seed}", "train", phase, make))

        for row, (method, m) in P003_SEARCHES.items():
            def make_search(seed: int = seed, method: str = method, m: int = m) -> dict[str, Any]:
                from poolarch.search import search_config

                base3 = common(args, mode, p3, seed)
                base3.pop("epochs")
                cfg = search_config(method, "resnet20", num_models=m, epochs=p3["search_epochs"], scale_epochs=False,
                                    model_args={"widths": p3["widths"]}, **base3)
                return cfg.to_dict()
            jobs.append(Job("p003", row, seed, out / "p003" / row / f"s{seed}", "search", 0, make_search))
    return jobs


# -- running ------------------------------------------------------------------------------------
def search_done(run_dir: Path) -> bool:
    return (run_dir / "ranking.csv").is_file()


def run_job(kind: str, cfg_dict: dict[str, Any], threads: int) -> str:
    """Train / search one job (worker process): resume an interrupted run, else start it."""
    import torch

    from poolarch.search import run_search
    from poolarch.train import TrainConfig, run_status, train

    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(cfg_dict)
    run_dir = Path(cfg.out)
    resumable = run_status(run_dir) == "incomplete" and (run_dir / "last.pt").is_file()
    if kind == "train":
        if run_status(run_dir) != "finished":
            train(resume=run_dir) if resumable else train(cfg, overwrite=True)
    elif not search_done(run_dir):
        run_search(resume=run_dir) if resumable else run_search(cfg, overwrite=True)
    return str(run_dir)


def finished(job: Job) -> bool:
    if job.kind == "search":
        return search_done(job.out)
    return (job.out / "result.yaml").is_file()


def run_phase(jobs: list[Job], workers: int, threads: int) -> None:
    todo = []
    for job in jobs:
        if finished(job):
            print(f"  skip {job.out} (finished)", flush=True)
            continue
        cfg = {**job.make(), "out": str(job.out), "name": f"study-{job.paper}-{job.row}-s{job.seed}"}
        todo.append((job, cfg))
    if workers == 1:
        for job, cfg in todo:
            run_job(job.kind, cfg, threads)
            print(f"  done {job.out}", flush=True)
        return
    import multiprocessing

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [(job, pool.submit(run_job, job.kind, cfg, threads)) for job, cfg in todo]
        for job, future in futures:
            future.result()
            print(f"  done {job.out}", flush=True)


def run_sweeps(args: argparse.Namespace, workers: int, threads: int) -> None:
    from poolarch.search import sweep
    from poolarch.train import TrainConfig

    mode = MODES["quick" if args.quick else "default"]
    p3 = mode["p003"]
    for seed in SWEEP_SEEDS:
        base = TrainConfig.from_dict({**common(args, mode, p3, seed), "model": "resnet20_blocks", "pool": "max",
                                      "model_args": {"widths": p3["widths"]}})
        sweep(base, "resnet20", Path(args.out) / "p003" / f"sweep-s{seed}", configs=p3["configs"], workers=workers,
              threads=threads, log=lambda line: print("  " + line, flush=True))


# -- cost estimate ------------------------------------------------------------------------------
def calibrate(args: argparse.Namespace) -> dict[str, float]:
    """CPU seconds per training image (forward + backward, batch 128, 1 thread) of each model."""
    import torch

    import poolarch.search  # noqa: F401  (registers the search models)
    from poolarch.models import create_model

    torch.set_num_threads(1)
    mode = MODES["default"]
    margs = mode["p002"]["model_args"]
    models = {"vgg_small": ("vgg_small", {"pool": "dynopool"}),
              "multires_net": ("multires_net", {**margs}),
              "multires_plain": ("multires_predefined", {"channels": margs["channels"], "num_layers": margs["num_layers"]}),
              "resnet20": ("resnet20_blocks", {"widths": mode["p003"]["widths"]}),
              "supernet": ("resnet20_supernet", {"widths": mode["p003"]["widths"]})}
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    out = {}
    for key, (name, kw) in models.items():
        model = create_model(name, num_classes=10, in_chans=1, **kw)
        times = []
        for _ in range(3):
            start = time.process_time()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            times.append(time.process_time() - start)
        out[key] = min(times[1:]) / 128
    return out


def estimate(per_image: dict[str, float], workers: int) -> dict[str, float]:
    """Planned CPU seconds per part of the default mode (training images x epochs x cost; evaluation
    of val + test every epoch at ~1/3 of a training image; the bilevel multires step doubles the
    cost; 5 s start-up per run), and the wall time with ``workers`` parallel runs."""
    m = MODES["default"]
    p0, p2, p3 = m["p000"], m["p002"], m["p003"]
    n_seeds = len(SEEDS)
    eval0 = 16000  # Fashion-MNIST: 6,000 val + 10,000 test, uncapped
    run0 = p0["limit"] * p0["epochs"] * per_image["vgg_small"] + p0["epochs"] * eval0 * per_image["vgg_small"] / 3 + 5
    ev2 = 2 * p2["eval_images"] * p2["epochs"] / 3
    t2 = (p2["limit"] * p2["epochs"] * (2 + 1 + 1) + ev2 * 3) * per_image["multires_net"] \
        + (p2["limit"] * p2["epochs"] * 2 + ev2 * 2) * per_image["multires_plain"] + 5 * 5
    run3 = p3["limit"] * p3["epochs"] * per_image["resnet20"] + 2 * p3["eval_images"] * p3["epochs"] * per_image["resnet20"] / 3 + 5
    search = sum(p3["limit"] * p3["search_epochs"] * per_image["supernet"] * (1 + 0.5 * (mm > 1))
                 + 36 * (p3["eval_images"] / 3 + 10 * 128 / 3) * per_image["resnet20"] + 5
                 for _, mm in P003_SEARCHES.values())
    parts = {"p000": 5 * n_seeds * run0, "p002": n_seeds * t2, "p003 sweep": 36 * len(SWEEP_SEEDS) * run3,
             "p003 searches": n_seeds * search}
    parts["total CPU s"] = sum(parts.values())
    parts[f"wall min ({workers} workers)"] = parts["total CPU s"] / workers / 60
    return parts


# -- study metadata -----------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    from poolarch._machine import machine_info

    return machine_info()


def load_study(out: Path) -> dict[str, Any]:
    path = out / STUDY_FILE
    if path.is_file():
        with open(path) as f:
            return yaml.safe_load(f) or {}
    return {}


def save_study(out: Path, study: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (STUDY_FILE + ".tmp")
    tmp.write_text(yaml.safe_dump(study, sort_keys=False))
    tmp.replace(out / STUDY_FILE)


# -- report -------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std of the non-NaN values (NaN, NaN if none)."""
    values = [float(v) for v in values if not math.isnan(float(v))]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float], digits: int = 2) -> str:
    m, s = mean_std(values)
    nan = sum(math.isnan(float(v)) for v in values)
    text = "n/a" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"
    return text + (f" ({nan} undefined)" if nan and not math.isnan(m) else "")


def collect_rows(out: Path, paper: str, rows: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """``{row: [final metrics of each finished seed, with "seed" and "run_dir"]}``."""
    table: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        table[row] = []
        for seed in SEEDS:
            run_dir = out / paper / row / f"s{seed}"
            if (run_dir / "result.yaml").is_file():
                table[row].append({**read_result(run_dir), "seed": seed, "run_dir": run_dir})
    return table


def sweep_results(out: Path) -> dict[int, dict[str, float]]:
    """``{seed: {config: test_top1}}`` from every finished sweep run's result.yaml."""
    res: dict[int, dict[str, float]] = {}
    for seed in SWEEP_SEEDS:
        folder = out / "p003" / f"sweep-s{seed}"
        res[seed] = {}
        for run_dir in sorted(folder.glob("config_*")):
            if (run_dir / "result.yaml").is_file():
                res[seed][run_dir.name[len("config_"):]] = float(read_result(run_dir)["test_top1"])
    return res


def read_ranking(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "ranking.csv", newline="") as f:
        return {r["config"]: float(r["accuracy"]) for r in csv.DictReader(f) if r.get("accuracy", "") != ""}


def make_figures(p0: dict, p2: dict, truth: dict[str, float], searches: dict[str, list[dict[str, float]]],
                 fig_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig_dir.mkdir(parents=True, exist_ok=True)
    names = []
    # accuracy vs GMACs
    fig = Figure(figsize=(9, 4))
    for ax, table, title in ((fig.add_subplot(1, 2, 1), p0, "Jang et al. 2023: vgg_small"),
                             (fig.add_subplot(1, 2, 2), p2, "the multi-resolution-block paper (WACV submission 832): multi-resolution")):
        for row, runs in table.items():
            if not runs:
                continue
            g, a = [float(r["gmacs"]) * 1e3 for r in runs], [float(r["test_top1"]) for r in runs]
            (gm, gs), (am, as_) = mean_std(g), mean_std(a)
            ax.errorbar([gm], [am], xerr=[gs], yerr=[as_], fmt="o", capsize=3, label=row)
            ax.scatter(g, a, s=8, alpha=0.4)
        ax.set_xlabel("MMACs per image")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "study_accuracy_vs_gmacs.png", dpi=120)
    names.append("study_accuracy_vs_gmacs.png")
    # learned shapes: feature-map heights/widths after each resizer (Jang et al. 2023) and multires levels
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot(1, 2, 1)
    for row, runs in p0.items():
        for i, r in enumerate(runs):
            sizes = [tuple(int(v) for v in s.split("x")) for s in str(r.get("sizes", "")).split()]
            if sizes:
                ax.plot(range(len(sizes)), [h * w for h, w in sizes], marker="o", alpha=0.7,
                        color=f"C{list(p0).index(row)}", label=row if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("resizing stage (0 = input)")
    ax.set_ylabel("feature-map area H*W (pixels)")
    ax.set_title("Jang et al. 2023: learned sizes (all seeds)")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    for i, r in enumerate(p2.get("multires-learned", [])):
        try:
            sched = learned_schedule(Path(r["run_dir"]))
        except (ValueError, OSError, KeyError):
            continue
        ax.plot(range(1, len(sched) + 1), [s + 0.05 * i for s in sched], marker="o", label=f"seed {r['seed']}")
    ax.set_xlabel("layer")
    ax.set_ylabel("resolution level (0 = full, k = 1/2^k)")
    ax.set_title("the multi-resolution-block paper (WACV submission 832): learned one-resolution schedule")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "study_learned_shapes.png", dpi=120)
    names.append("study_learned_shapes.png")
    # rank correlation scatter
    if truth and any(searches.values()):
        fig = Figure(figsize=(4.5 * len(searches), 4))
        for k, (row, rankings) in enumerate(searches.items()):
            ax = fig.add_subplot(1, len(searches), k + 1)
            for i, ranking in enumerate(rankings):
                keys = sorted(set(ranking) & set(truth))
                ax.scatter([truth[c] for c in keys], [ranking[c] for c in keys], s=10, label=f"seed {SEEDS[i]}")
            ax.set_xlabel("ground truth: test top-1 trained alone (%)")
            ax.set_ylabel("search: validation top-1 (%)")
            ax.set_title(f"Javan et al. 2023: {row}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(fig_dir / "study_rank_correlation.png", dpi=120)
        names.append("study_rank_correlation.png")
    return names


def previous_reading(path: Path) -> str | None:
    """The hand-written reading after ``READING_MARK`` in an existing results file (up to the next
    ``## `` heading), so regenerating the tables keeps it; ``None`` when there is none yet."""
    if not path.is_file():
        return None
    text = path.read_text()
    if READING_MARK not in text:
        return None
    body = text.split(READING_MARK, 1)[1].split("\n## ", 1)[0].strip()
    return None if not body or body.startswith("_(to be written") else body


def report(out: Path, docs: Path) -> Path:
    """Write ``docs/results.md`` and ``docs/figures/study_*.png`` from the run directories."""
    from poolarch.search import rank_correlation

    study = load_study(out)
    p0 = collect_rows(out, "p000", P000_ROWS)
    p2 = collect_rows(out, "p002", P002_ROWS)
    sweeps = sweep_results(out)
    shared = sorted(set.intersection(*(set(v) for v in sweeps.values()))) if sweeps and all(sweeps.values()) else []
    truth = {c: statistics.fmean(sweeps[s][c] for s in SWEEP_SEEDS) for c in shared}
    searches: dict[str, list[dict[str, float]]] = {}
    for row in P003_SEARCHES:
        searches[row] = [read_ranking(out / "p003" / row / f"s{seed}") for seed in SEEDS
                         if search_done(out / "p003" / row / f"s{seed}")]
    figures = make_figures(p0, p2, truth, searches, docs / "figures")

    lines = ["# Small-scale study of the three papers on Fashion-MNIST", "",
             "Generated by `benchmarks/study.py` from the run directories under "
             f"`{study.get('out', str(out))}` (every cell below is recomputed from their `result.yaml`, "
             "`metrics.csv` and `ranking.csv`; regenerate with `python benchmarks/study.py --report-only`).", ""]
    inv = study.get("invocations", [])
    lines += ["## How it was run", "",
              f"- command: `{study.get('command', 'n/a')}`",
              f"- mode: {study.get('mode', 'n/a')}; dataset: {study.get('dataset', 'n/a')}; "
              f"workers: {study.get('workers', 'n/a')} x {study.get('threads', 'n/a')} thread(s)",
              f"- machine: {study.get('machine', {}).get('nproc', '?')} CPUs ({study.get('machine', {}).get('cpu', '?')}), "
              f"torch {study.get('machine', {}).get('torch', '?')}, Python {study.get('machine', {}).get('python', '?')}",
              f"- wall time: {sum(i.get('wall_s', 0) for i in inv) / 60:.1f} min over {len(inv)} invocation(s)",
              f"- seeds: {', '.join(map(str, SEEDS))} for every row; sweep seeds {', '.join(map(str, SWEEP_SEEDS))}",
              f"- settings: `{yaml.safe_dump(study.get('settings', {}), default_flow_style=True, width=10**6).strip()}`",
              "- test top-1 is on the first `eval_images` test images where the settings cap it "
              "(`max_eval_steps`), else on all 10,000; mean ± sample std over the seeds.", ""]
    reading = previous_reading(docs / "results.md") or "_(to be written after the default-mode run)_"
    lines += ["## Reading", "", READING_MARK, "", reading, ""]

    def table(title: str, rows: dict[str, list[dict[str, Any]]], note: str) -> None:
        lines.extend([f"## {title}", "", note, "",
                      "| row | seeds | test top-1 (%) | val top-1 (%) | MMACs | learned sizes (seed 0) |",
                      "|---|---|---|---|---|---|"])
        for row, runs in rows.items():
            seeds = ",".join(str(r["seed"]) for r in runs) or "-"
            sizes = next((str(r.get("sizes", "")) for r in runs), "")
            lines.append(f"| {row} | {seeds} | {fmt([float(r['test_top1']) for r in runs])} | "
                         f"{fmt([float(r['val_top1']) for r in runs if 'val_top1' in r])} | "
                         f"{fmt([float(r['gmacs']) * 1e3 for r in runs], 3)} | {sizes} |")
        lines.append("")

    table("Jang et al. 2023 (DynOPool, Table 1/2 analogue): vgg_small", p0,
          "human = max pooling; DynOPool-S: target GMACs = the human net's (same seed); DynOPool-B: 2x; "
          "sizes: input then the output of every resizer.")
    table("the multi-resolution-block paper (WACV submission 832) (multi-resolution blocks, Table 1 analogue)", p2,
          "multires-learned keeps the argmax resolution per layer after half the epochs (method `multires`, "
          "`one_res`); one-res-retrained trains that schedule from scratch (`multires_one_res`).")
    sched = []
    for r in p2.get("multires-learned", []):
        try:
            sched.append(f"seed {r['seed']}: {learned_schedule(Path(r['run_dir']))}")
        except (ValueError, OSError, KeyError):
            pass
    if sched:
        lines += ["Learned schedules (level per layer): " + "; ".join(sched), ""]

    lines += ["## Javan et al. 2023 (Balanced Mixture, Fig. 3 analogue): ResNet20 space", ""]
    if truth:
        noise = rank_correlation(sweeps[SWEEP_SEEDS[0]], sweeps[SWEEP_SEEDS[1]])["kendall_tau"] \
            if len(SWEEP_SEEDS) > 1 and len(shared) > 1 else math.nan
        best = max(truth, key=truth.get)
        lines += [f"Ground truth: {len(truth)} configurations trained alone, seeds "
                  f"{', '.join(map(str, SWEEP_SEEDS))}, mean test top-1 {min(truth.values()):.2f}-{max(truth.values()):.2f}% "
                  f"(best {best}: {truth[best]:.2f}%). Noise ceiling (Kendall tau between the two sweep seeds): "
                  f"**{noise:.3f}**.", "",
                  "| search | seeds | Kendall tau vs ground truth | tau / noise ceiling | top-1 overlap | "
                  "top-5 overlap | ground-truth top-1 of the search's pick (%) |", "|---|---|---|---|---|---|---|"]
        for row, rankings in searches.items():
            rc = [rank_correlation(r, truth) for r in rankings if len(set(r) & set(truth)) > 1]
            taus = [c["kendall_tau"] for c in rc]
            ratio = [t / noise for t in taus] if noise and not math.isnan(noise) else []
            lines.append(f"| {row} | {len(rc)} | {fmt(taus, 3)} | {fmt(ratio, 2)} | "
                         f"{fmt([c['top1_overlap'] for c in rc])} | {fmt([c['top5_overlap'] for c in rc])} | "
                         f"{fmt([c['search_best_truth'] for c in rc])} |")
        lines.append("")
    else:
        lines += ["(no finished sweep yet)", ""]
    lines += ["## Figures", ""] + [f"![{n}](figures/{n})" for n in figures] + [""]
    docs.mkdir(parents=True, exist_ok=True)
    path = docs / "results.md"
    path.write_text("\n".join(lines))
    return path


# -- main ---------------------------------------------------------------------------------------
README_BEGIN = "<!-- study:begin (generated by benchmarks/study.py from docs/results.md; do not edit) -->"
README_END = "<!-- study:end -->"
HEADLINE_ROWS = {"p000": ("human", "dynopool-s", "dynopool-b", "shape-adaptor", "diffstride"),
                 "p002": ("multires-predefined", "one-res-retrained", "multires-learned")}


def readme_block(results: str) -> str:
    """The README's headline tables: rows copied verbatim from ``results.md`` (Jang et al.: every row;
    multi-resolution blocks: predefined vs the learned schedule; Javan et al.: every search)."""
    def rows(names: tuple[str, ...]) -> list[str]:
        found = {line.split(" | ")[0][2:]: line for line in results.splitlines() if line.startswith("| ")}
        return [found[n] for n in names if n in found]

    header = ["| row | seeds | test top-1 (%) | val top-1 (%) | MMACs | learned sizes (seed 0) |",
              "|---|---|---|---|---|---|"]
    searches = [line for line in results.splitlines() if line.startswith("| ") and
                line.split(" | ")[0][2:] in P003_SEARCHES]
    ceiling = re.search(r"Noise ceiling[^*]*\*\*([0-9.nan-]+)\*\*", results)
    lines = [README_BEGIN, "", "Jang et al. 2023 analogue (vgg_small):", "",
             *header, *rows(HEADLINE_ROWS["p000"]), "",
             "Multi-resolution blocks (multires_net):", "", *header, *rows(HEADLINE_ROWS["p002"]), "",
             "Javan et al. 2023 analogue (36-configuration ResNet20 space; noise ceiling "
             f"tau = {ceiling.group(1) if ceiling else 'n/a'}):", "",
             "| search | seeds | Kendall tau vs ground truth | tau / noise ceiling | top-1 overlap | "
             "top-5 overlap | ground-truth top-1 of the search's pick (%) |", "|---|---|---|---|---|---|---|",
             *searches, "", README_END]
    return "\n".join(lines)


def update_readme(readme: Path, results: Path) -> bool:
    """Replace the block between ``README_BEGIN`` and ``README_END`` in ``readme`` with the headline
    tables of ``results``; ``False`` (nothing written) when the README has no such block."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + readme_block(results.read_text()) + tail)
    return True


def sync_readme(docs: Path) -> None:
    """Rewrite the README's study block when the report went to this repository's ``docs/``."""
    if docs.resolve() == (ROOT / "docs").resolve() and update_readme(ROOT / "README.md", docs / "results.md"):
        print(f"updated the study block in {ROOT / 'README.md'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps per run on a tiny subset (< 2 min)")
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) | random | mnist | kmnist")
    parser.add_argument("--data-root", default=None, help="idx folder (default: /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--out", default="runs/study", help="folder of the run directories")
    parser.add_argument("--docs", default=None, help="where results.md and figures/ go (default: docs; --quick: OUT/docs)")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default 1)")
    parser.add_argument("--only", default="p000,p002,p003", help="comma-separated parts to run")
    parser.add_argument("--report-only", action="store_true", help="only regenerate results.md and the figures")
    parser.add_argument("--estimate-only", action="store_true", help="time the models and print the plan")
    args = parser.parse_args(argv)
    out = Path(args.out)
    docs = Path(args.docs) if args.docs else (out / "docs" if args.quick else Path("docs"))
    if args.report_only:
        print(f"wrote {report(out, docs)}")
        sync_readme(docs)
        return
    mode_name = "quick" if args.quick else "default"
    mode = MODES[mode_name]
    threads = args.threads or mode["threads"]
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = parts - {"p000", "p002", "p003"}
    if unknown:
        raise SystemExit(f"--only: unknown part(s) {sorted(unknown)}; allowed: p000, p002, p003")
    if not args.quick:
        per_image = calibrate(args)
        print("measured CPU ms per training image (fwd+bwd, batch 128, 1 thread): "
              + ", ".join(f"{k} {1e3 * v:.2f}" for k, v in per_image.items()))
        print("planned budget (CPU s per part; default mode): "
              + ", ".join(f"{k} {v:.0f}" for k, v in estimate(per_image, args.workers).items()), flush=True)
        if args.estimate_only:
            return

    study = load_study(out)
    study.update({"command": " ".join(["python", "benchmarks/study.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
                  "mode": mode_name, "dataset": args.dataset, "workers": args.workers, "threads": threads,
                  "out": str(out), "machine": machine(), "settings": MODES[mode_name]})
    study.setdefault("invocations", [])
    start_wall, start_time = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S")
    jobs = [j for j in plan(args) if j.paper in parts]
    try:
        for phase in (0, 1):
            print(f"phase {phase}", flush=True)
            run_phase([j for j in jobs if j.phase == phase], args.workers, threads)
        if "p003" in parts:
            print("p003 sweeps", flush=True)
            run_sweeps(args, args.workers, threads)
    finally:
        study["invocations"].append({"start": start_time, "wall_s": round(time.perf_counter() - start_wall, 1)})
        save_study(out, study)
    print(f"wrote {report(out, docs)}")
    sync_readme(docs)


if __name__ == "__main__":
    main()
