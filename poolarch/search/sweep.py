"""Brute-force ground truth: train every configuration of a space independently (Javan et al. 2023 Sec. 3.1).

Each configuration ``c`` is one ordinary run of the common engine (model ``<backbone>_blocks`` with
``config_blocks = c``, method ``plain``) in ``SWEEP_DIR/config_<n0>-<n1>-...``. Runs go through a
pool of local worker processes (``workers``), or through Ray Tune (``backend="ray"``; ``address``
joins an existing cluster, otherwise a local Ray instance with ``workers`` CPUs is started and
stopped). A configuration whose run directory already holds ``result.yaml`` is skipped, and an
interrupted one is resumed, so a restarted sweep only does what is left. ``sweep.csv`` lists
every configuration with its final validation and test metrics.
"""
from __future__ import annotations

import csv
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from ..checkpoint import atomic_write_csv
from ..models.space import Config, format_config, get_backbone, parse_config
from ..train import RunDir, TrainConfig, train

__all__ = ["sweep", "sweep_run_config", "read_sweep", "SWEEP_FILE", "BACKENDS"]

SWEEP_FILE = "sweep.csv"
BACKENDS = ("local", "ray")
logger = logging.getLogger("poolarch")


def run_dir_for(sweep_dir: str | Path, config: Sequence[int]) -> Path:
    return Path(sweep_dir) / f"config_{format_config(config)}"


def sweep_run_config(base: TrainConfig, backbone: str, config: Sequence[int], sweep_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` that trains ``config`` from scratch in the sweep."""
    return base.merged({"model": f"{backbone}_blocks", "pool": "max", "method": "plain",
                        "model_args": {"config_blocks": [int(v) for v in config]},
                        "out": str(run_dir_for(sweep_dir, config)), "name": f"sweep-{format_config(config)}"})


def _metrics(run_dir: Path) -> dict[str, Any]:
    final = RunDir(run_dir).read_result().get("final", {})
    return {k: v for k, v in final.items() if k.startswith(("val_", "test_")) and isinstance(v, (int, float))}


def train_one(cfg_dict: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Train (or resume, or skip) one sweep run; returns its final metrics. Runs in a worker."""
    import torch

    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(cfg_dict)
    run = RunDir(cfg.out)
    status = run.status
    if status == "incomplete" and run.last.is_file():
        train(resume=run.path)
    elif status != "finished":
        train(cfg, overwrite=True)
    return _metrics(run.path)


def _run_local(jobs: list[dict[str, Any]], workers: int, threads: int, log: Callable[[str], None]) -> None:
    if workers == 1:
        for job in jobs:
            train_one(job, threads)
            log(f"finished {job['out']}")
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(train_one, job, threads): job["out"] for job in jobs}
        for future, out in futures.items():
            future.result()
            log(f"finished {out}")


def _run_ray(jobs: list[dict[str, Any]], workers: int, threads: int, address: str | None, storage: Path,
             log: Callable[[str], None]) -> None:
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ValueError("backend 'ray' needs Ray Tune: pip install 'poolarch[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
    try:
        def trainable(params: dict[str, Any]) -> None:
            tune.report(train_one(params["cfg"], threads))

        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": threads}),
            param_space={"cfg": tune.grid_search(jobs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=workers),
            run_config=tune.RunConfig(storage_path=str(storage.resolve()), name="tune", verbose=0),
        )
        grid = tuner.fit()
        errors = [str(r.error) for r in grid if r.error is not None]
        if errors:
            raise RuntimeError(f"{len(errors)} sweep trial(s) failed; first: {errors[0]}")
        log(f"ray: {len(jobs)} trial(s) finished")
    finally:
        if started:
            ray.shutdown()


def sweep(base: TrainConfig, backbone: str, sweep_dir: str | Path, *, configs: Sequence[Sequence[int]] | None = None,
          workers: int = 1, threads: int = 1, backend: str = "local", address: str | None = None,
          log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train every configuration of ``backbone``'s space (or ``configs``) with the settings of
    ``base``; returns the rows of ``sweep.csv`` (``config``, ``val_*``, ``test_*``, ``run_dir``).
    Progress messages go to ``log`` (default: the ``poolarch`` logger)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    for name, value in (("workers", workers), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    log = log or logger.info
    space = get_backbone(backbone).space
    chosen: list[Config] = space.configs if configs is None else [space.validate(parse_config(c)) for c in configs]
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for config in chosen:
        cfg = sweep_run_config(base, backbone, config, sweep_dir)
        if RunDir(cfg.out).status == "finished":
            log(f"skipping {format_config(config)}: finished")
            continue
        jobs.append(cfg.to_dict())
    if jobs:
        if backend == "local":
            _run_local(jobs, workers, threads, log)
        else:
            _run_ray(jobs, workers, threads, address, sweep_dir, log)
    rows = [{"config": format_config(c), **_metrics(run_dir_for(sweep_dir, c)), "run_dir": str(run_dir_for(sweep_dir, c))}
            for c in chosen]
    atomic_write_csv(sweep_dir / SWEEP_FILE, rows)
    return rows


def read_sweep(path: str | Path, metric: str = "test_top1") -> dict[str, float]:
    """``{config "5-3-2": metric}`` from a sweep directory's ``sweep.csv`` (or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / SWEEP_FILE
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist: not a sweep directory (no {SWEEP_FILE})")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and metric not in rows[0]:
        allowed = [k for k in rows[0] if k.startswith(("val_", "test_"))]
        raise ValueError(f"metric must be one of {allowed}, got {metric!r}")
    return {row["config"]: float(row[metric]) for row in rows if row.get(metric, "") != ""}
