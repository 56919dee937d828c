"""Per-call records of a forward pass: which module ran, in what order, what it produced.

:class:`ModuleCallTracer` registers a forward pre-hook and a forward hook on every submodule of a
model for the duration of a ``with`` block. Each completed call yields a :class:`CallRecord`
(module, name, how many times that module had run before in this forward, completion order,
input/output shapes). With ``counting=True`` it also attributes MACs counted by
:class:`torch.utils.flop_counter.FlopCounterMode` to the innermost running module (exclusive
counts: an op belongs to the module whose own ``forward`` issued it).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "CallRecord", "ModuleCallTracer", "first_tensor", "spatial_shape", "unwrap_model", "evaluation", "tracing_active",
]

_ACTIVE_TRACERS = [0]


def tracing_active() -> bool:
    """True while a :class:`ModuleCallTracer` runs (our own measuring passes), so that training-time
    hooks (:class:`~poolarch.complexity.ComplexityLoss`) can ignore those forward passes."""
    return _ACTIVE_TRACERS[0] > 0

CallKey = tuple[int, int]  # (id(module), call_index)


def first_tensor(value: Any) -> Tensor | None:
    """The first tensor in a (nested) tuple/list/dict output, or ``None``."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def spatial_shape(module: nn.Module, value: Any) -> tuple[int, ...] | None:
    """Spatial extent of a module's (first) output tensor: ``shape[2:]`` of ``(N, C, *spatial)``
    maps; for :class:`nn.Linear` the token axes ``shape[1:-1]`` of ``(N, *tokens, C)``."""
    tensor = first_tensor(value)
    if tensor is None:
        return None
    if isinstance(module, nn.Linear):
        return tuple(tensor.shape[1:-1])
    return tuple(tensor.shape[2:])


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


class evaluation:
    """Context: every submodule in eval mode and no autograd; training flags restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[nn.Module, bool]] = []
        self.no_grad = torch.no_grad()

    def __enter__(self) -> "evaluation":
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        self.no_grad.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.no_grad.__exit__(*exc)
        for module, flag in self.flags:
            module.training = flag


@dataclass
class CallRecord:
    """One completed call of one module during a traced forward pass."""

    name: str
    module: nn.Module
    call_index: int  # this module's k-th call in the forward pass (shared modules run several times)
    seq: int  # completion order over all calls
    in_spatial: tuple[int, ...] | None
    out_spatial: tuple[int, ...] | None
    macs: dict[str, int] = field(default_factory=dict)  # exclusive MACs by category (counting only)
    # counted ops issued by this call itself (counting only): (category, MACs, op output spatial
    # shape or None when the op output is not a (N, C, *spatial) map, e.g. a matmul)
    ops: list[tuple[str, int, tuple[int, ...] | None]] = field(default_factory=list)
    formula_op: int | None = None  # index in ``ops`` of the module formula's cost, if any

    @property
    def key(self) -> CallKey:
        return (id(self.module), self.call_index)


@dataclass
class _Frame:
    flops: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ops: list[tuple[str, int, tuple[int, ...] | None]] = field(default_factory=list)
    suppresses: bool = False


class ModuleCallTracer:
    """Records every module call of ``model`` while active.

    Args:
        model: the network (already unwrapped).
        module_formula: ``module -> (fn, category, include_inner) | None``; a module with a formula
            is charged ``fn(module, inputs, output)`` MACs in ``category`` and, unless
            ``include_inner``, the ops inside it are not counted (counting only).
        counting: attribute FlopCounterMode counts to modules (call :meth:`add_flops` from the
            counter's formulas).
    """

    def __init__(
        self,
        model: nn.Module,
        module_formula: Callable[[nn.Module], tuple[Callable[..., int], str, bool] | None] | None = None,
        counting: bool = False,
    ) -> None:
        self.model = model
        self.module_formula = module_formula or (lambda m: None)
        self.counting = counting
        self.records: list[CallRecord] = []
        self._names = {id(m): n for n, m in model.named_modules()}
        self._calls: dict[int, int] = defaultdict(int)
        self._stack: list[_Frame] = []
        self._suppress = 0
        self._handles: list[Any] = []
        self._inputs: dict[int, list[tuple[int, ...] | None]] = defaultdict(list)

    # -- counting ----------------------------------------------------------------------------
    def add_flops(self, category: str, flops: int, out_spatial: tuple[int, ...] | None = None) -> None:
        """Charge ``flops`` of ``category`` to the innermost running module (if not suppressed)."""
        if self._suppress or not self._stack:
            return
        frame = self._stack[-1]
        frame.flops[category] += int(flops)
        frame.ops.append((category, int(flops) // 2, out_spatial))

    # -- hooks -------------------------------------------------------------------------------
    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        tensor = first_tensor(args)
        self._inputs[id(module)].append(None if tensor is None else tuple(tensor.shape[2:]))
        if not self.counting:
            return
        formula = self.module_formula(module)
        frame = _Frame(suppresses=formula is not None and not formula[2])
        if frame.suppresses:
            self._suppress += 1
        self._stack.append(frame)

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        mid = id(module)
        call_index = self._calls[mid]
        self._calls[mid] += 1
        pending = self._inputs[mid]
        in_spatial = pending.pop() if pending else None
        macs: dict[str, int] = {}
        ops: list[tuple[str, int, tuple[int, ...] | None]] = []
        formula_op = None
        if self.counting and self._stack:
            frame = self._stack.pop()
            if frame.suppresses:
                self._suppress -= 1
            if not self._suppress:
                macs = {cat: flops // 2 for cat, flops in frame.flops.items() if flops}
                ops = frame.ops
                formula = self.module_formula(module)
                if formula is not None:
                    fn, category, _ = formula
                    extra = int(fn(module, args, output))
                    macs[category] = macs.get(category, 0) + extra
                    ops = ops + [(category, extra, None)]
                    formula_op = len(ops) - 1
        self.records.append(
            CallRecord(
                name=self._names.get(mid, type(module).__name__),
                module=module,
                call_index=call_index,
                seq=len(self.records),
                in_spatial=in_spatial,
                out_spatial=spatial_shape(module, output),
                macs=macs,
                ops=ops,
                formula_op=formula_op,
            )
        )

    def __enter__(self) -> "ModuleCallTracer":
        seen: set[int] = set()
        for module in self.model.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            self._handles.append(module.register_forward_pre_hook(self._pre))
            self._handles.append(module.register_forward_hook(self._post))
        _ACTIVE_TRACERS[0] += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE_TRACERS[0] -= 1
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __iter__(self) -> Iterator[CallRecord]:
        return iter(self.records)
