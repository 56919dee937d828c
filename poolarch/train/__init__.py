"""Training: one loop (:mod:`.engine`) that every method (:mod:`poolarch.methods`) plugs into.

``train(TrainConfig(...))`` runs one experiment and writes its run directory (:class:`RunDir`);
``poolarch train`` (:mod:`poolarch.cli`) is the command-line front end. :mod:`.build` builds a
run's parts from its config, :mod:`.evaluation` evaluates runs.
"""
from ..methods import Method, RunInfo, create_method, list_methods, register_method, split_parameters
from .build import seed_everything
from .config import TrainConfig, load_config
from .engine import RunResult, Trainer, train
from .evaluation import LoadedRun, evaluate_run, load_run
from .rundir import RESULT_CHECKPOINT, RunDir, describe_checkpoint, run_status
from .task import create_task, list_tasks

__all__ = [
    "TrainConfig",
    "load_config",
    "Method",
    "RunInfo",
    "create_method",
    "list_methods",
    "register_method",
    "split_parameters",
    "RunResult",
    "RunDir",
    "RESULT_CHECKPOINT",
    "describe_checkpoint",
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
