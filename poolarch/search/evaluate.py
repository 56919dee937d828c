"""After a search: rank every configuration (Javan et al. 2023 Sec. 2.3).

Every configuration ``c`` is evaluated on the validation split with the weight set the method
assigns to it (balanced mixture: ``m* = argmax_m p(m|c)``). Batch-norm statistics are shared by all
configurations of a weight set, so before evaluating ``c`` they are re-estimated on
``recalibration_batches`` training batches run through ``c`` (the usual single-path practice);
with ``recalibration_batches=0`` the evaluation uses batch statistics instead. With
``eval_top=K`` configurations are first ranked by the method's proxy score (``a[c, m*]``, or the
path probability for DARTS) and only the best ``K`` are evaluated.

The rows are written into the run directory by the search method
(:meth:`poolarch.methods.SearchMethod.write_artifacts`: ``ranking.csv``, ``topk.yaml``, ...);
:func:`read_ranking` reads them back.
"""
from __future__ import annotations

import csv
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..distributed import average_over_ranks_, means_over_ranks
from ..methods.search import SearchMethod, batch_statistics
from ..models.space import Config, format_config
from ..train.rundir import RunDir

__all__ = ["evaluate_configuration", "rank_configurations", "read_ranking"]


@torch.no_grad()
def _recalibrate(model: nn.Module, config: Config, weight_set: int, loader: Iterable, batches: int,
                 device: torch.device) -> None:
    sub = model.subnet(weight_set)
    norms = [m for m in sub.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    model.train()
    try:
        for i, (inputs, _) in enumerate(loader):
            if i >= batches:
                break
            model(inputs.to(device), config=config, weight_set=weight_set)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    # under DDP each rank saw its own shard: every rank uses the average statistics
    average_over_ranks_([b for m in norms for b in (m.running_mean, m.running_var) if b is not None])


@torch.no_grad()
def evaluate_configuration(model: nn.Module, config: Sequence[int], weight_set: int, loader: Iterable, *,
                           recalibration_loader: Iterable | None = None, recalibration_batches: int = 10,
                           max_batches: int | None = None, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy (%) of ``model(x, config, weight_set)`` over ``loader`` (under DDP: over the
    union of the ranks' shards, identical on every rank)."""
    device = torch.device(device)
    config = tuple(config)
    if recalibration_batches < 0:
        raise ValueError(f"recalibration_batches must be >= 0, got {recalibration_batches}")
    use_batch_stats = recalibration_batches == 0 or recalibration_loader is None
    if not use_batch_stats:
        _recalibrate(model, config, weight_set, recalibration_loader, recalibration_batches, device)
    model.eval()
    correct = total = 0
    context = batch_statistics(model.subnet(weight_set)) if use_batch_stats else nullcontext()
    with context:
        for i, (inputs, targets) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            logits = model(inputs.to(device), config=config, weight_set=weight_set)
            correct += int((logits.argmax(dim=1) == targets.to(device)).sum())
            total += int(targets.numel())
    correct, total = means_over_ranks([correct, total])  # under DDP: over every rank's shard
    if total == 0:
        raise ValueError("loader gave no batch to evaluate")
    return 100.0 * correct / total


def rank_configurations(model: nn.Module, method: SearchMethod, loader: Iterable, *, eval_top: int | None = None,
                        recalibration_loader: Iterable | None = None, recalibration_batches: int = 10,
                        max_batches: int | None = None, device: str | torch.device = "cpu",
                        progress: bool = False) -> list[dict[str, Any]]:
    """Evaluate the configurations of ``model.space`` (all, or the ``eval_top`` best by the method's
    proxy score) and return rows sorted best first: ``rank``, ``config`` (``"5-3-2"``),
    ``weight_set``, ``accuracy`` (%, ``None`` when not evaluated), ``proxy``, ``visits``."""
    configs: list[Config] = model.space.configs
    proxy = np.asarray(method.proxy_scores(), dtype=np.float64)
    visits = method.visit_counts()
    order = np.argsort(-proxy, kind="stable")
    if eval_top is not None:
        if isinstance(eval_top, bool) or not isinstance(eval_top, int) or eval_top < 1:
            raise ValueError(f"eval_top must be a positive int or None, got {eval_top!r}")
        chosen = set(order[:eval_top].tolist())
    else:
        chosen = set(range(len(configs)))
    iterator = range(len(configs))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="evaluating configurations", leave=False)
    rows = []
    for c in iterator:
        m = int(method.best_weight_set(c))
        accuracy = None
        if c in chosen:
            accuracy = evaluate_configuration(model, configs[c], m, loader,
                                              recalibration_loader=recalibration_loader,
                                              recalibration_batches=recalibration_batches,
                                              max_batches=max_batches, device=device)
        rows.append({"config": format_config(configs[c]), "weight_set": m, "accuracy": accuracy,
                     "proxy": float(proxy[c]),
                     "visits": int(visits[c]) if visits is not None else None})
    rows.sort(key=lambda r: (r["accuracy"] is None, -(r["accuracy"] or 0.0), -r["proxy"]))
    for i, row in enumerate(rows):
        row["rank"] = i + 1
    return [{"rank": r["rank"], **{k: v for k, v in r.items() if k != "rank"}} for r in rows]


def read_ranking(path: str | Path) -> dict[str, float]:
    """``{config "5-3-2": accuracy}`` of the evaluated rows of a ``ranking.csv`` (file or run dir)."""
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).ranking
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist: not a search run directory (no {RunDir.RANKING})")
    with open(path, newline="") as f:
        return {row["config"]: float(row["accuracy"]) for row in csv.DictReader(f) if row["accuracy"] != ""}
