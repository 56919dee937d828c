"""``TrainConfig``: every setting of one training run, with a YAML round trip.

A config file is a flat YAML mapping whose keys are the field names below (``lambda`` is spelled
without the trailing underscore). Unknown keys are an error, so a typo never silently falls back
to a default. Command-line flags override the file (:meth:`TrainConfig.merged`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

__all__ = ["TrainConfig", "SCHEDULES", "TASKS", "load_config"]

SCHEDULES = ("cosine", "step", "poly", "constant")
TASKS = ("classification", "segmentation")
# YAML spelling -> dataclass field name (``lambda`` is a Python keyword).
_ALIASES = {"lambda": "lambda_"}
_REVERSE_ALIASES = {v: k for k, v in _ALIASES.items()}
_FLOAT_FIELDS = {
    "lr", "scale_lr", "weight_decay", "momentum", "gamma", "poly_power", "lambda_",
    "target_gmacs", "target_tolerance", "val_fraction", "max_scale",
}


def _parse_float(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {value!r}") from None


@dataclass
class TrainConfig:
    """One training run. Units: learning rates per optimiser step, sizes in pixels, GMACs per image.

    Model: ``model`` (a :func:`poolarch.models.list_models` name), ``pool`` (resizing layer kind),
    ``init_scales`` (initial scales of the learnable resizers, see ``create_model``), ``model_args``
    (extra keyword arguments of ``create_model``).
    Data: ``dataset``, ``data_root``, ``variant`` (e.g. ``stretch-v``), ``image_size``,
    ``num_classes`` and ``in_chans`` (for ``dataset: random``), ``limit`` (cap on training images).
    Optimisation (paper 000 Table B): SGD with ``momentum``; ``lr`` for the weights, ``scale_lr``
    for architecture parameters (never weight-decayed); ``schedule`` cosine | step (``milestones``
    in epochs, ``gamma``) | poly (``poly_power``) | constant, applied per step.
    Complexity: ``lambda`` (weight of the GMACs loss, Eq. 8) or ``target_gmacs`` (lambda adapted so
    that the final GMACs land within ``target_tolerance`` of it, see :mod:`poolarch.train.budget`).
    ``max_scale``: after every step each DynOPool ``alpha`` is clamped to ``>= 1/max_scale``, so one
    large architecture gradient cannot make a scale negative or blow a map up (``null``: no clamp).
    Method: ``method`` (:func:`poolarch.train.list_methods`) and its ``method_args``.
    Run: ``out`` (run directory), ``seed``, ``amp`` (bfloat16 autocast on CPU, float16 + scaler on
    CUDA), ``device`` (``auto`` | ``cpu`` | ``cuda``), ``max_steps_per_epoch`` / ``max_eval_steps``
    (cap batches, for smoke tests), ``progress`` (tqdm bar; ``None`` = only on a terminal).
    """

    # model
    model: str = "vgg16_cifar"
    pool: str = "dynopool"
    init_scales: Any = None
    model_args: dict = field(default_factory=dict)
    # data
    dataset: str = "cifar100"
    data_root: str | None = None
    variant: str | None = None
    image_size: Any = None
    num_classes: int | None = None
    in_chans: int | None = None
    limit: int | None = None
    val_fraction: float = 0.1
    task: str | None = None
    # optimisation
    epochs: int = 250
    batch_size: int = 128
    eval_batch_size: int | None = None
    lr: float = 0.1
    scale_lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    poly_power: float = 0.9
    # complexity
    lambda_: float = 0.0
    target_gmacs: float | None = None
    target_tolerance: float = 0.05
    max_scale: float | None = 2.0
    # method
    method: str = "plain"
    method_args: dict = field(default_factory=dict)
    # run
    out: str | None = None
    seed: int = 0
    amp: bool = False
    device: str = "auto"
    max_steps_per_epoch: int | None = None
    max_eval_steps: int | None = None
    progress: bool | None = None
    name: str | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        """Keys accepted in a YAML file (``lambda`` for ``lambda_``)."""
        return [_REVERSE_ALIASES.get(f.name, f.name) for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a mapping of YAML keys; raises ``ValueError`` naming unknown keys."""
        if not isinstance(data, Mapping):
            raise TypeError(f"{source} must be a mapping of option names to values, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in data.items():
            name = _ALIASES.get(key, key)
            if name not in known or key in _REVERSE_ALIASES:
                raise ValueError(
                    f"unknown config key {key!r} in {source}; allowed keys: {', '.join(cls.field_names())}"
                )
            if name in _FLOAT_FIELDS and isinstance(value, str):
                value = _parse_float(key, value)  # PyYAML reads "1e-4" as a string
            kwargs[name] = value
        cfg = cls(**kwargs)
        cfg.check()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {_REVERSE_ALIASES.get(k, k): v for k, v in dataclasses.asdict(self).items()}

    def to_yaml(self, path: str | Path) -> None:
        from ..checkpoint import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def merged(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """A copy with ``overrides`` (YAML keys; ``None`` values are ignored) applied; the dict
        fields ``model_args``/``method_args`` are updated key by key."""
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            if key in ("model_args", "method_args") and isinstance(value, Mapping):
                data[key] = {**(data.get(key) or {}), **value}
            else:
                data[key] = value
        return TrainConfig.from_dict(data, source="options")

    # -- validation ---------------------------------------------------------------------------
    def check(self) -> None:
        """Validate values that do not need the registries (those are checked by the engine)."""
        _check_number("lambda", self.lambda_, minimum=0.0)
        _check_int("epochs", self.epochs, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1)
        if self.eval_batch_size is not None:
            _check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        _check_number("lr", self.lr, minimum=0.0)
        _check_number("scale_lr", self.scale_lr, minimum=0.0)
        _check_number("weight_decay", self.weight_decay, minimum=0.0)
        _check_number("momentum", self.momentum, minimum=0.0)
        _check_number("gamma", self.gamma, minimum=0.0)
        _check_number("poly_power", self.poly_power, minimum=0.0)
        _check_number("target_tolerance", self.target_tolerance, minimum=0.0)
        if self.target_gmacs is not None:
            _check_number("target_gmacs", self.target_gmacs, minimum=0.0)
            if self.target_gmacs <= 0:
                raise ValueError(f"target_gmacs must be > 0, got {self.target_gmacs}")
        if self.max_scale is not None:
            _check_number("max_scale", self.max_scale, minimum=0.0)
            if self.max_scale <= 0:
                raise ValueError(f"max_scale must be > 0 or null, got {self.max_scale}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be one of ['auto', 'cpu', 'cuda'], got {self.device!r}")
        if not isinstance(self.milestones, (list, tuple)) or not all(isinstance(m, int) for m in self.milestones):
            raise ValueError(f"milestones must be a list of epochs (ints), got {self.milestones!r}")
        for name in ("model_args", "method_args"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a mapping, got {getattr(self, name)!r}")
        for name in ("max_steps_per_epoch", "max_eval_steps", "limit", "num_classes", "in_chans"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if not isinstance(self.amp, bool):
            raise ValueError(f"amp must be true or false, got {self.amp!r}")
        for name in ("model", "pool", "dataset", "method"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")


def _check_number(name: str, value: Any, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML config file (see :class:`TrainConfig`)."""
    return TrainConfig.from_yaml(path)
