"""``poolarch search``: train a supernet with a search method on the common engine, then rank.

:func:`search_config` turns search options into a :class:`poolarch.train.TrainConfig`; what depends
on the method -- the supernet (``<backbone>_<supernet>``), the weight sets and whether the epochs
scale with them -- is read from the registered :class:`~poolarch.methods.SearchMethod` class. The
config uses ``pool: max`` and a 50/50 train/validation split as in the paper. :func:`run_search`
trains it with :class:`poolarch.train.Trainer`, ranks every configuration (:mod:`.evaluate`) and
lets the method write its files into the run directory.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from ..methods import METHODS
from ..methods.search import SearchMethod, search_methods
from ..models.space import format_config, get_backbone
from ..train import TrainConfig, Trainer
from .evaluate import rank_configurations

__all__ = ["search_config", "run_search", "search_methods", "SEARCH_METHODS"]

logger = logging.getLogger("poolarch")

#: the registered search methods (when this module was imported; :func:`search_methods` is live)
SEARCH_METHODS = tuple(search_methods())


def _search_method(method: str) -> type[SearchMethod]:
    cls = METHODS.get(method) if method in METHODS else None
    if cls is None or not issubclass(cls, SearchMethod):
        raise ValueError(f"method must be one of {search_methods()}, got {method!r}")
    return cls


def search_config(method: str = "balanced-mixture", backbone: str = "resnet20", *, num_models: int | None = None,
                  epochs: int = 10, scale_epochs: bool = True, model_args: Mapping[str, Any] | None = None,
                  method_args: Mapping[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` for a search. ``epochs`` is per weight set for methods whose
    :attr:`~SearchMethod.epochs_per_weight_set` is set (the balanced mixture runs
    ``epochs * num_models`` epochs when ``scale_epochs``, paper app. B.1). ``overrides`` are any
    other ``TrainConfig`` fields (``dataset``, ``batch_size``, ``lr``, ``out``, ...). ``num_models``
    (weight sets) defaults to the method's :attr:`~SearchMethod.default_num_models`."""
    cls = _search_method(method)
    get_backbone(backbone)
    if num_models is None:
        num_models = cls.default_num_models
    if isinstance(num_models, bool) or not isinstance(num_models, int) or num_models < 1:
        raise ValueError(f"num_models must be a positive int, got {num_models!r}")
    if num_models != 1 and not cls.multiple_weight_sets:
        several = [m for m in search_methods() if METHODS.get(m).multiple_weight_sets]
        raise ValueError(f"num_models applies to {' and '.join(several)} only, got {num_models} for {method!r}")
    extra_model_args, extra_method_args = cls.search_args(num_models)
    if cls.epochs_per_weight_set and scale_epochs:
        epochs = epochs * num_models
    data = {"model": f"{backbone}_{cls.supernet}", "pool": "max", "val_fraction": 0.5, "epochs": epochs,
            "method": method, "model_args": {**(model_args or {}), **extra_model_args},
            "method_args": {**(method_args or {}), **extra_method_args}, "weight_decay": 1e-3,
            "batch_size": 256, "dataset": "cifar10", "name": f"search-{method}-{backbone}"}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data, source="search options")


def run_search(cfg: TrainConfig | None = None, *, resume: str | Path | None = None, eval_top: int | None = None,
               top_k: int = 5, recalibration_batches: int = 10, overwrite: bool = False,
               log: Callable[[str], None] | None = None, model: Any = None, data: Any = None) -> list[dict[str, Any]]:
    """Train (or resume) the search run of ``cfg``, then rank its configurations; returns the rows
    of ``ranking.csv`` (best first). Messages go to ``log`` (default: the ``poolarch`` logger)."""
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite, log=log, model=model, data=data)
    method = trainer.method
    if not isinstance(method, SearchMethod):
        raise ValueError(f"method must be one of {search_methods()}, got {trainer.cfg.method!r}")
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
            "default": [int(v) for v in model.default_config], **method.search_info(model)}
    method.write_artifacts(trainer.run, model, rows, info, top_k=top_k)
    best = next((r for r in rows if r["accuracy"] is not None), None)
    if best is not None:
        (log or logger.info)(f"best configuration {best['config']} (weight set {best['weight_set']}): "
                             f"{best['accuracy']:.2f}% val; method's own pick {format_config(method.found_config())}")
    return rows
