"""Freeze a learned pooling architecture and save/restore it without the checkpoint.

* :func:`freeze` replaces every learnable resizer by its ``to_static()`` module (fixed output size,
  no scale parameter, no straight-through estimator): a plain CNN that exports with
  ``torch.export``/TorchScript/ONNX and can be fine-tuned ("retrain with the learned shape").
* :func:`save_architecture` writes a small YAML file with every resizer's name, type, scale, input
  and output size and the groups of resizers sharing a scale; :func:`load_architecture` reads it and
  :func:`apply_architecture` puts it into a freshly built (or converted) model of the same layout.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from .layers.base import LearnableResize, learnable_resizers

__all__ = ["freeze", "save_architecture", "load_architecture", "apply_architecture", "Architecture",
           "ResizerRecord", "FORMAT"]

FORMAT = "poolarch-architecture/1"


@dataclass
class ResizerRecord:
    """One resizer of a learned architecture (sizes as ``[H, W]``, ``None`` before any forward)."""

    name: str
    type: str
    scale: list[float]
    in_size: list[int] | None
    out_size: list[int] | None
    group: int


@dataclass
class Architecture:
    """Every resizer of a model and the groups (lists of names) that share one scale."""

    resizers: list[ResizerRecord] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "resizers": [asdict(r) for r in self.resizers], "groups": self.groups}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Architecture":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"architecture data must be a mapping with format: {FORMAT!r}")
        return cls([ResizerRecord(**r) for r in data.get("resizers", [])], [list(g) for g in data.get("groups", [])])


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works after a forward pass: the resizers' ``last_size_surrogate``
    (a non-leaf tensor, which deepcopy refuses) is copied detached."""
    memo: dict[int, Any] = {}
    for module in model.modules():
        surrogate = getattr(module, "last_size_surrogate", None)
        if isinstance(surrogate, Tensor) and surrogate.grad_fn is not None:
            memo[id(surrogate)] = surrogate.detach().clone()
    return copy.deepcopy(model, memo)


def _run(model: nn.Module, example_input: Tensor) -> None:
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)


def freeze(model: nn.Module, example_input: Tensor | None = None, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` with every :class:`LearnableResize` replaced by ``to_static()``.

    The static layers resize to the output size of the last forward pass (run one with
    ``example_input`` first if given), so the frozen model is specific to that input resolution.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = model if inplace else copy_model(model)
    if example_input is not None:
        _run(model, example_input)
    static: dict[int, nn.Module] = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if isinstance(module, LearnableResize):
            if id(module) not in static:
                static[id(module)] = module.to_static()
            model.set_submodule(name, static[id(module)])
    return model


def _scale_groups(resizers: list[tuple[str, LearnableResize]]) -> list[int]:
    """Group index per resizer: resizers whose architecture parameters are the same objects share."""
    group_of_param: dict[int, int] = {}
    out = []
    for _, module in resizers:
        ids = [id(p) for p in module.arch_parameters()]
        group = next((group_of_param[i] for i in ids if i in group_of_param), None)
        if group is None:
            group = max(out, default=-1) + 1
        for i in ids:
            group_of_param[i] = group
        out.append(group)
    return out


def architecture_of(model: nn.Module) -> Architecture:
    """The :class:`Architecture` of ``model`` as it is now (sizes from the last forward pass)."""
    resizers = learnable_resizers(model)
    groups = _scale_groups(resizers)
    records = []
    for (name, m), g in zip(resizers, groups):
        records.append(ResizerRecord(
            name=name, type=type(m).__name__, scale=[float(v) for v in m.scale.detach().double().flatten().tolist()],
            in_size=list(m.last_in_size) if m.last_in_size is not None else None,
            out_size=list(m.last_out_size) if m.last_out_size is not None else None, group=g))
    by_group: dict[int, list[str]] = {}
    for r in records:
        by_group.setdefault(r.group, []).append(r.name)
    return Architecture(records, [by_group[g] for g in sorted(by_group)])


def save_architecture(model: nn.Module, path: str | Path) -> Architecture:
    """Write ``model``'s resizers (name, type, scale, in/out size, share group) to the YAML file ``path``."""
    arch = architecture_of(model)
    Path(path).write_text(yaml.safe_dump(arch.to_dict(), sort_keys=False))
    return arch


def load_architecture(path: str | Path) -> Architecture:
    """Read an architecture YAML file written by :func:`save_architecture`."""
    return Architecture.from_dict(yaml.safe_load(Path(path).read_text()))


def _set_scale(module: LearnableResize, scale: list[float]) -> None:
    try:
        module.set_scale(scale)
    except NotImplementedError as e:
        raise TypeError(f"cannot set the scale of {type(module).__name__}: {e}") from None


def apply_architecture(model: nn.Module, arch: Architecture | str | Path, static: bool = False) -> nn.Module:
    """Put the scales of ``arch`` into ``model`` (same resizer names, e.g. a fresh ``create_model``
    or ``convert`` of the same network), in place.

    ``static=True`` instead replaces every resizer by its static version at the recorded output size
    (the learned network as a plain CNN, for retraining from scratch).
    """
    if not isinstance(arch, Architecture):
        arch = load_architecture(arch)
    present = dict(learnable_resizers(model))
    missing = [r.name for r in arch.resizers if r.name not in present]
    if missing:
        raise ValueError(f"arch names resizers the model does not have: {missing}; model has {sorted(present)}")
    for record in arch.resizers:
        module = present[record.name]
        _set_scale(module, record.scale)
        if static:
            if record.out_size is None:
                raise ValueError(f"arch has no out_size for {record.name}; save it after a forward pass")
            module.last_in_size = tuple(record.in_size) if record.in_size else None
            module.last_out_size = tuple(record.out_size)
    if static:
        for record in arch.resizers:
            model.set_submodule(record.name, present[record.name].to_static())
    return model
