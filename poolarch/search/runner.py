"""``poolarch search``: train a supernet with a search method on the common engine, then rank.

:func:`search_config` turns search options into a :class:`poolarch.train.TrainConfig` (model
``<backbone>_supernet`` -- or ``<backbone>_multires_supernet`` for DARTS --, ``pool: max``, a
50/50 train/validation split as in the paper, the method and its arguments; the balanced mixture
trains ``M`` times longer). :func:`run_search` trains it with :class:`poolarch.train.engine.Trainer`
and writes the ranking of every configuration into the run directory (:mod:`.evaluate`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import yaml

from ..train.checkpoint import atomic_write_text
from ..train.config import TrainConfig
from .evaluate import HEATMAP_FILE, plot_model_assignment, rank_configurations, write_ranking
from ..models.space import format_config, get_backbone

__all__ = ["search_config", "run_search", "SEARCH_METHODS", "SEARCH_FILE"]

SEARCH_METHODS = ("spos", "balanced-mixture", "darts", "mcts-ucb", "bse")
SEARCH_FILE = "search.yaml"


def search_config(method: str = "balanced-mixture", backbone: str = "resnet20", *, num_models: int | None = None,
                  epochs: int = 10, scale_epochs: bool = True, model_args: Mapping[str, Any] | None = None,
                  method_args: Mapping[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` for a search. ``epochs`` is per weight set: the balanced mixture runs
    ``epochs * num_models`` epochs when ``scale_epochs`` (paper app. B.1). ``overrides`` are any
    other ``TrainConfig`` fields (``dataset``, ``batch_size``, ``lr``, ``out``, ...). ``num_models``
    (weight sets) defaults to 4 for the balanced mixture and 1 for SPOS; the other methods train one
    supernet."""
    if method not in SEARCH_METHODS:
        raise ValueError(f"method must be one of {list(SEARCH_METHODS)}, got {method!r}")
    get_backbone(backbone)
    if num_models is None:
        num_models = 4 if method == "balanced-mixture" else 1
    if isinstance(num_models, bool) or not isinstance(num_models, int) or num_models < 1:
        raise ValueError(f"num_models must be a positive int, got {num_models!r}")
    if num_models != 1 and method not in ("balanced-mixture", "spos"):
        raise ValueError(f"num_models applies to balanced-mixture and spos only, got {num_models} for {method!r}")
    margs = dict(model_args or {})
    aargs = dict(method_args or {})
    model = f"{backbone}_supernet"
    if method == "darts":
        model = f"{backbone}_multires_supernet"
    elif method == "balanced-mixture":
        margs["num_weight_sets"] = num_models
        aargs["num_models"] = num_models
        if scale_epochs:
            epochs = epochs * num_models
    elif num_models != 1 and method == "spos":
        margs["num_weight_sets"] = num_models
    data = {"model": model, "pool": "max", "val_fraction": 0.5, "epochs": epochs, "method": method,
            "model_args": margs, "method_args": aargs, "weight_decay": 1e-3, "batch_size": 256,
            "dataset": "cifar10", "name": f"search-{method}-{backbone}"}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data, source="search options")


def run_search(cfg: TrainConfig | None = None, *, resume: str | Path | None = None, eval_top: int | None = None,
               top_k: int = 5, recalibration_batches: int = 10, overwrite: bool = False,
               log: Callable[[str], None] | None = None, model: Any = None, data: Any = None) -> list[dict[str, Any]]:
    """Train (or resume) the search run of ``cfg``, then rank its configurations; returns the rows
    of ``ranking.csv`` (best first)."""
    import poolarch.search  # noqa: F401  (registers the supernet models and the methods)
    from ..train.engine import Trainer

    trainer = Trainer(cfg, resume=resume, overwrite=overwrite, log=log, model=model, data=data)
    method = trainer.method
    trainer.fit()
    model, data, cfg = trainer.model, trainer.data, trainer.cfg
    if data.val is None:
        raise ValueError("a search needs a validation split: set val_fraction > 0")
    rows = rank_configurations(model, method, data.val, eval_top=eval_top, recalibration_loader=data.train,
                               recalibration_batches=recalibration_batches, max_batches=cfg.max_eval_steps,
                               device=trainer.device, progress=bool(cfg.progress) and trainer.dist.is_primary)
    if not trainer.dist.is_primary:
        return rows  # every rank took part in the (sharded) evaluation; rank 0 writes the results
    info = {"method": cfg.method, "model": cfg.model, "dataset": cfg.dataset,
            "configurations": len(model.space), "evaluated": sum(r["accuracy"] is not None for r in rows),
            "found_by_method": [int(v) for v in method.found_config()],
            "default": [int(v) for v in model.default_config]}
    if hasattr(model, "argmax_resolutions"):
        info["darts_argmax_resolutions"] = model.argmax_resolutions()
    write_ranking(trainer.run_dir, rows, top_k=top_k, info=info)
    if hasattr(method, "conditional") and getattr(method, "num_models", 1) > 1:
        conditional = method.conditional()
        np.savetxt(trainer.run_dir / "p_m_given_c.csv", conditional, delimiter=",", fmt="%.6f",
                   header=",".join(f"m{m}" for m in range(conditional.shape[1])), comments="")
        plot_model_assignment(conditional, model.space.configs, trainer.run_dir / HEATMAP_FILE,
                              history=[np.asarray(h) for h in method.history])
    best = next((r for r in rows if r["accuracy"] is not None), None)
    summary = {**info, "best": best}
    atomic_write_text(trainer.run_dir / SEARCH_FILE, yaml.safe_dump(summary, sort_keys=False, default_flow_style=None))
    if log is not None and best is not None:
        log(f"best configuration {best['config']} (weight set {best['weight_set']}): "
            f"{best['accuracy']:.2f}% val; method's own pick {format_config(method.found_config())}")
    return rows
