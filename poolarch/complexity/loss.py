"""Differentiable complexity of a network with learnable resizers (Jang et al. 2023, Sec. 4.2, Eq. 7).

``L = sum_l GMACs_0[l] * (H_t W_t)(l) / (H_0 W_0)(l)`` over the MAC-bearing layers ``l`` (those
with MACs counted in :attr:`MacCount.total`): its value is the network's GMACs at the current
feature-map sizes. The gradient reaches the scale of *every* learnable resizer upstream of a layer:
the current size of ``l`` is replaced by the surrogate

    numel_t(l) * prod_{p upstream of l} prod_axes s_p / sg(s_p)

with ``s_p`` the resizer's ``last_size_surrogate`` (value unchanged; ``d numel / d s_p =
numel / s_p``: shrinking an early map shrinks everything after it in proportion).

The cost units are the counted ops (a convolution, a linear layer, a DynOPool, an ``F.interpolate``
issued in a parent module's ``forward`` ...), each charged to the module call that issued it.
*Upstream* is found at construction by perturbation, not execution order: each resizer call's
output is enlarged (zero-padded to twice its size) in one extra forward pass and the ops whose
output sizes change depend on it. This follows branches (ResNet shortcuts) and parallel streams
(HRNet: a map upsampled back to another stream's size no longer depends on the resizer that made
the low-resolution stream). Resizers whose scale parameters are shared (a shortcut pool and the
main-path pool) cannot be enlarged alone without breaking the network; they are perturbed
together, and a layer depending on such a group takes the surrogate of the group's member call that
ran last before it.

At training time only module outputs are observed (forward hooks recording sizes). Each op's current
size is read from a *size proxy*: the module call whose output size equals the op's in the
unperturbed and in every perturbed pass -- the issuing module itself for layers, another module for
functional ops (HRNet's upsampling to a stream's size). Ops without a proxy (warned) keep their
initial size in the value; their gradient is unaffected.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.base import LearnableResize, learnable_resizers
from ..layers.grouping import share_groups
from ._trace import CallKey, CallRecord, first_tensor, spatial_shape, tracing_active, unwrap_model
from .macs import TOTAL_CATEGORIES, macs_formula, make_example_input, trace_macs

__all__ = ["ComplexityLoss"]


def _numel(shape: Sequence[int] | None) -> int:
    out = 1
    for s in shape or ():
        out *= int(s)
    return out


def _enlarge(output: Tensor) -> Tensor:
    """Zero-pad every spatial axis of ``(N, C, *spatial)`` to twice its size."""
    pad: list[int] = []
    for size in reversed(output.shape[2:]):
        pad += [0, int(size)]
    return F.pad(output, pad)


class _Perturb:
    """Forward hooks enlarging the outputs of chosen resizer calls."""

    def __init__(self, model: nn.Module, calls: set[CallKey], modules: dict[int, nn.Module]) -> None:
        self.model, self.calls, self.modules = model, calls, modules
        self.counts: dict[int, int] = defaultdict(int)
        self.handles: list[Any] = []

    def _hook(self, module: nn.Module, args: Any, output: Any) -> Any:
        k = self.counts[id(module)]
        self.counts[id(module)] += 1
        if (id(module), k) in self.calls and isinstance(output, Tensor):
            return _enlarge(output)
        return None

    def __enter__(self) -> "_Perturb":
        for mid in {mid for mid, _ in self.calls}:
            self.handles.append(self.modules[mid].register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


Shapes = tuple[dict[CallKey, Any], dict[tuple[CallKey, int], Any]]


def _op_shapes(record: CallRecord) -> dict[tuple[CallKey, int], Any]:
    """Spatial output shape of every counted op of a call (the call's own output shape for ops
    whose output is not a map, e.g. a linear layer's matmul or a module formula)."""
    return {(record.key, i): (shape if shape is not None else record.out_spatial) for i, (_, _, shape) in enumerate(record.ops)}


def _shapes(records: list[CallRecord]) -> Shapes:
    calls = {r.key: r.out_spatial for r in records}
    ops: dict[tuple[CallKey, int], Any] = {}
    for r in records:
        ops.update(_op_shapes(r))
    return calls, ops


def _perturbed_shapes(model: nn.Module, example: Tensor, perturb: _Perturb) -> Shapes:
    with perturb:
        return _shapes(trace_macs(model, example))


def _shared_groups(resizers: list[LearnableResize]) -> dict[int, int]:
    """id(resizer) -> group id; resizers sharing an architecture parameter are in one group."""
    owner: dict[int, int] = {}
    pairs = [(i, owner.setdefault(id(p), i)) for i, module in enumerate(resizers) for p in module.arch_parameters()]
    groups = share_groups(len(resizers), pairs)
    return {id(resizers[i]): g for g, members in enumerate(groups) for i in members}


class ComplexityLoss:
    """Eq. 7 of Jang et al. 2023: current GMACs of ``model`` with gradient to its learnable resizers.

    Args:
        model: the network (``DistributedDataParallel``/``DataParallel`` wrappers are unwrapped).
        example_input: an input batch (its first sample is used) or a size, as for
            :func:`~poolarch.complexity.count_macs`; the initial MACs and sizes are measured on it.
        local: the paper's local variant -- each layer's gradient goes only to its nearest upstream
            resizer (the one that ran last before it); the value is the same.

    Call it after a forward pass of the model: returns a scalar tensor in GMACs (per image).
    Costs one forward pass of one image at construction plus one per resizer call (and per group
    of resizers sharing a scale); during training only sizes are recorded by forward hooks.
    Layers whose sizes change for other reasons (e.g. a new input size) are followed through the
    recorded output sizes; a layer not run in the last forward contributes 0.
    """

    def __init__(self, model: nn.Module, example_input: Tensor | Sequence[int], local: bool = False) -> None:
        if not isinstance(local, bool):
            raise TypeError(f"local must be a bool, got {local!r}")
        self.model = unwrap_model(model)
        self.local = local
        example = make_example_input(self.model, example_input)
        records = trace_macs(self.model, example)
        self.layers = [r for r in records if sum(r.macs.get(c, 0) for c in TOTAL_CATEGORIES) > 0]
        self.initial_gmacs = sum(sum(r.macs.get(c, 0) for c in TOTAL_CATEGORIES) for r in self.layers) / 1e9
        resizers = [m for _, m in learnable_resizers(self.model)]
        self._resizer_ids = {id(m) for m in resizers}
        self._records = {r.key: r for r in records}
        self._units = [r for r in records if id(r.module) in self._resizer_ids]
        self._formula_calls: set[CallKey] = set()
        self._set_up(example, records, resizers)
        self._numel: dict[Any, float] = {}  # call -> output numel; ("formula", call) -> MACs per image
        self._surrogates: dict[CallKey, Tensor] = {}
        self._counts: dict[int, int] = defaultdict(int)
        self._handles: list[Any] = []
        self._install_hooks()

    # -- set-up ------------------------------------------------------------------------------
    def _set_up(self, example: Tensor, records: list[CallRecord], resizers: list[LearnableResize]) -> None:
        """Cost units (counted ops), their upstream resizer calls and their size proxies.

        Every counted op (in :data:`TOTAL_CATEGORIES`) is a cost unit. Its upstream resizer calls
        are those whose enlargement changes the op's output size. Its *size proxy* is a module call
        whose output size equals the op's in the unperturbed and in every perturbed pass -- the
        charged module itself for a layer, another module for a functional op (e.g. an
        ``F.interpolate`` to another stream's size in a parent's forward); its output size is what
        the training-time hooks record.
        """
        modules = {id(r.module): r.module for r in records}
        seq = {r.key: r.seq for r in records}
        base_calls, base_ops = _shapes(records)
        units: list[tuple[CallKey, int, int]] = []  # (charged call, op index, MACs)
        for r in self.layers:
            for i, (category, macs, _) in enumerate(r.ops):
                if category in TOTAL_CATEGORIES and macs > 0:
                    units.append((r.key, i, macs))
        upstream: dict[tuple[CallKey, int], list[CallKey]] = {(k, i): [] for k, i, _ in units}
        passes: list[Shapes] = []

        def run(calls: set[CallKey]) -> Shapes | None:
            try:
                shapes = _perturbed_shapes(self.model, example, _Perturb(self.model, calls, modules))
            except Exception:  # an enlarged map that must match another branch: perturb the group
                return None
            passes.append(shapes)
            return shapes

        def changed(shapes: Shapes) -> list[tuple[CallKey, int]]:
            return [u for u in upstream if shapes[1].get(u, "missing") != base_ops[u]]

        group_of = _shared_groups(resizers)
        coupled: dict[int, list[CallKey]] = defaultdict(list)
        for unit in self._units:
            shapes = run({unit.key})
            if shapes is None:
                coupled[group_of[id(unit.module)]].append(unit.key)
                continue
            for u in changed(shapes):
                upstream[u].append(unit.key)
        for calls in coupled.values():
            shapes = run(set(calls))
            if shapes is None:
                names = sorted({self._name(c) for c in calls})
                warnings.warn(
                    f"ComplexityLoss: enlarging the output of {names} breaks the forward pass; "
                    "layers after them in execution order are taken as dependent",
                    RuntimeWarning,
                    stacklevel=4,
                )
                first = min(seq[c] for c in calls)
                hit = [u for u in upstream if seq[u[0]] >= first]
            else:
                hit = changed(shapes)
            for u in hit:
                before = [c for c in calls if seq[c] <= seq[u[0]]] or calls
                upstream[u].append(max(before, key=lambda c: seq[c]))
        for u, found in upstream.items():
            if id(self._records[u[0]].module) in self._resizer_ids and u[0] not in found:
                found.append(u[0])  # a resizer's own cost scales with its own output
            found.sort(key=lambda c: seq[c])
            if self.local and found:
                before = [c for c in found if seq[c] <= seq[u[0]]] or found
                upstream[u] = [max(before, key=lambda c: seq[c])]

        # size proxies
        def signature_call(key: CallKey) -> tuple[Any, ...]:
            return (base_calls[key],) + tuple(p[0].get(key, "missing") for p in passes)

        by_signature: dict[tuple[Any, ...], list[CallKey]] = defaultdict(list)
        for r in records:
            if r.out_spatial is not None:
                by_signature[signature_call(r.key)].append(r.key)
        # a term's size source: a module call (its output size), ("formula", call) (the module
        # formula re-evaluated on the call: exact MACs), or None (initial size kept)
        terms: dict[tuple[Any, tuple[CallKey, ...]], float] = defaultdict(float)
        untracked: set[str] = set()
        self.upstream: dict[CallKey, list[CallKey]] = defaultdict(list)
        for key, i, macs in units:
            u = (key, i)
            found = tuple(upstream[u])
            signature = (base_ops[u],) + tuple(p[1].get(u, "missing") for p in passes)
            if i == self._records[key].formula_op:
                self._formula_calls.add(key)
                terms[(("formula", key), found)] += 1e-9
                proxy = None
            elif signature_call(key) == signature:
                proxy = key
            else:
                candidates = by_signature.get(signature, [])
                before = [c for c in candidates if seq[c] <= seq[key]]
                proxy = max(before, key=lambda c: seq[c]) if before else (candidates[0] if candidates else None)
                if proxy is None:
                    if found:  # (without upstream resizers only a new input size could change it)
                        untracked.add(self._name(key))
                    terms[(None, found)] += macs / 1e9
            if proxy is not None:
                terms[(proxy, found)] += macs / 1e9 / max(_numel(base_calls[proxy]), 1)
            for c in upstream[u]:
                if c not in self.upstream[key]:
                    self.upstream[key].append(c)
        if untracked:
            warnings.warn(
                f"ComplexityLoss: the output size of ops in {sorted(untracked)} matches no module output; "
                "their cost is taken at the initial size (gradient still flows to upstream resizers)",
                RuntimeWarning,
                stacklevel=3,
            )
        self._proxies = {k for (k, _) in terms if k is not None and k[0] != "formula"}
        grouped: dict[tuple[CallKey, ...], list[tuple[Any, float]]] = defaultdict(list)
        for (proxy, found), coefficient in terms.items():
            grouped[found].append((proxy, coefficient))
        self._terms = list(grouped.items())

    def _name(self, key: CallKey) -> str:
        r = self._records.get(key)
        if r is None:
            return str(key)
        return r.name if r.call_index == 0 else f"{r.name}#{r.call_index}"

    def _install_hooks(self) -> None:
        watched = {id(r.module): r.module for r in self._units}
        for key in self._formula_calls:
            watched[key[0]] = self._records[key].module
        for key in self._proxies:
            watched[key[0]] = self._records[key].module
        self._handles.append(self.model.register_forward_pre_hook(self._reset))
        for module in watched.values():
            self._handles.append(module.register_forward_hook(self._record))

    # -- training-time hooks (sizes only) -----------------------------------------------------
    def _reset(self, module: nn.Module, args: Any) -> None:
        if tracing_active():  # count_macs / feature_map_sizes passes do not replace the last forward
            return
        self._numel.clear()
        self._surrogates.clear()
        self._counts.clear()

    def _record(self, module: nn.Module, args: Any, output: Any) -> None:
        if tracing_active():
            return
        mid = id(module)
        key = (mid, self._counts[mid])
        self._counts[mid] += 1
        self._numel[key] = _numel(spatial_shape(module, output))
        if key in self._formula_calls:
            formula = macs_formula(module)
            if formula is not None:
                out = first_tensor(output)
                batch = int(out.shape[0]) if out is not None and out.dim() > 0 else 1
                self._numel[("formula", key)] = formula[0](module, args, output) / max(batch, 1)  # per image
        if mid in self._resizer_ids:
            surrogate = module.last_size_surrogate
            if surrogate is not None:
                self._surrogates[key] = surrogate

    # -- API ---------------------------------------------------------------------------------
    def __call__(self) -> Tensor:
        """Current GMACs per image (scalar tensor) as of the model's last forward pass."""
        if not self._numel:
            raise RuntimeError("ComplexityLoss: run a forward pass of the model before calling it")
        factors: dict[CallKey, Tensor] = {}

        def factor(unit: CallKey) -> Tensor | None:
            if unit not in factors:
                s = self._surrogates.get(unit)
                if s is None:
                    return None
                s = s if s.dtype == torch.float64 else s.float()
                factors[unit] = torch.prod(s / s.detach())
            return factors[unit]

        total: Tensor | float = 0.0
        for units, layers in self._terms:
            coefficient = sum(g * (1 if k is None else self._numel.get(k, 0)) for k, g in layers)  # type: ignore[call-overload]
            term: Tensor | float = coefficient
            for unit in units:
                f = factor(unit)
                if f is not None:
                    term = term * f
            total = total + term
        if isinstance(total, Tensor):
            return total
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        return torch.tensor(float(total), device=device)

    def dependencies(self) -> dict[str, list[str]]:
        """Layer name -> names of the resizers its gradient reaches (``name#k`` for the k-th call
        of a module run several times)."""
        return {self._name(r.key): [self._name(c) for c in self.upstream.get(r.key, [])] for r in self.layers}

    def remove(self) -> None:
        """Remove the forward hooks (the loss cannot be evaluated afterwards)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __repr__(self) -> str:
        n = len({u for units in self.upstream.values() for u in units})
        return (
            f"ComplexityLoss(initial_gmacs={self.initial_gmacs:.4f}, layers={len(self.layers)}, "
            f"resizer_calls={n}, local={self.local})"
        )
