"""Ship a trained network as a static model: ``poolarch export RUN_DIR --out model.onnx``.

The learnable resizers are frozen at the run's input size (:func:`poolarch.freeze`): the result is
an ordinary CNN with fixed feature-map sizes, for inputs of that spatial size; the batch size stays
free. Formats (``format=``, else from the file suffix):

=============  ==========  ================================================================
format         suffix      written with
=============  ==========  ================================================================
``export``     ``.pt2``    ``torch.export.save`` (load with ``torch.export.load``)
``onnx``       ``.onnx``   ``torch.onnx.export`` (the ``torch.export``-based exporter)
``torchscript``  ``.ts``   ``torch.jit.script(...).save`` (load with ``torch.jit.load``)
=============  ==========  ================================================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .architecture import freeze

__all__ = ["FORMATS", "export_model", "export_run"]

FORMATS = {"export": ".pt2", "onnx": ".onnx", "torchscript": ".ts"}


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
        return format
    by_suffix = {suffix: name for name, suffix in FORMATS.items()}
    if path.suffix not in by_suffix:
        raise ValueError(f"out must end in one of {sorted(by_suffix)} (or pass format= one of "
                         f"{sorted(FORMATS)}), got {str(path)!r}")
    return by_suffix[path.suffix]


def export_model(model: nn.Module, example_input: Tensor, path: str | Path, format: str | None = None) -> Path:
    """Freeze ``model`` at the spatial size of ``example_input`` ``(N, C, *spatial)`` and write
    it to ``path``; returns the path. The batch dimension of the exported graph is dynamic."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, Tensor) or example_input.dim() < 3:
        raise ValueError("example_input must be a tensor (N, C, *spatial), got "
                         f"{type(example_input).__name__}{tuple(getattr(example_input, 'shape', ()))}")
    if hasattr(model, "space") and hasattr(model, "num_weight_sets"):
        raise ValueError("a search supernet is not one network: retrain the chosen configuration "
                         "(poolarch train --config-blocks ...) and export that run")
    path = Path(path)
    kind = _format_of(path, format)
    # batch 2: torch.export specialises a batch of 1, which would fix the exported batch size
    example = example_input[:1].expand(2, *example_input.shape[1:]).contiguous()
    static = freeze(model, example_input=example).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {0: torch.export.Dim("batch")}
    with torch.no_grad():
        if kind == "export":
            torch.export.save(torch.export.export(static, (example,), dynamic_shapes=(batch,)), str(path))
        elif kind == "onnx":
            torch.onnx.export(static, (example,), str(path), dynamo=True, dynamic_shapes=(batch,),
                              input_names=["input"], output_names=["output"], verbose=False,
                              external_data=False)  # one self-contained file (models < 2 GB)
        else:
            torch.jit.script(static).save(str(path))
    return path


def export_run(run_dir: str | Path, path: str | Path, format: str | None = None, checkpoint: str = "last", *,
               log: Callable[[str], None] | None = None) -> Path:
    """Export the ``last`` checkpoint (the run's result; or ``best``) of a run directory (see
    :func:`export_model`). ``log`` is called with the line naming the checkpoint and its epoch."""
    from .train import describe_checkpoint, load_run
    from .train.build import example_input

    _format_of(Path(path), format)  # a bad name fails before the run is loaded
    run = load_run(run_dir, checkpoint)
    if log is not None:
        log(describe_checkpoint(checkpoint, run.epoch))
    return export_model(run.model, example_input(run.data, run.device), path, format)
