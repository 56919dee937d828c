"""Training: one engine (:mod:`.engine`) that every method plugs into through :class:`Method`.

``train(TrainConfig(...))`` runs one experiment and writes its run directory; ``poolarch train``
(:mod:`poolarch.cli`) is the command-line front end.
"""
from .config import TrainConfig, load_config
from .method import Method, create_method, list_methods, register_method, split_parameters
from . import multires_method  # noqa: F401  (registers method "multires")
from . import shape_adaptor_method  # noqa: F401  (registers method "shape_adaptor")
from .engine import LoadedRun, RunResult, Trainer, evaluate_run, load_run, run_status, seed_everything, train
from .task import create_task, list_tasks

__all__ = [
    "TrainConfig",
    "load_config",
    "Method",
    "create_method",
    "list_methods",
    "register_method",
    "split_parameters",
    "RunResult",
    "Trainer",
    "train",
    "evaluate_run",
    "load_run",
    "LoadedRun",
    "run_status",
    "seed_everything",
    "create_task",
    "list_tasks",
]
