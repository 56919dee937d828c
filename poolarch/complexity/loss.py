"""Differentiable complexity of a network with learnable resizers (paper 000, Sec. 4.2, Eq. 7).

``L = sum_l GMACs_0[l] * (H_t W_t)(l) / (H_0 W_0)(l)`` over the MAC-bearing layers ``l`` (those
with MACs counted in :attr:`MacCount.total`): its value is the network's GMACs at the current
feature-map sizes. The gradient reaches the scale of *every* learnable resizer upstream of a layer:
the current size of ``l`` is replaced by the surrogate

    numel_t(l) * prod_{p upstream of l} prod_axes s_p / sg(s_p)

with ``s_p`` the resizer's ``last_size_surrogate`` (value unchanged; ``d numel / d s_p =
numel / s_p``: shrinking an early map shrinks everything after it in proportion).

*Upstream* is found at construction by perturbation, not execution order: each resizer call's
output is enlarged (zero-padded to twice its size) in one extra forward pass and the layers whose
output sizes change depend on it. This follows branches (ResNet shortcuts) and parallel streams
(HRNet: a map upsampled back to another stream's size no longer depends on the resizer that made
the low-resolution stream). Resizers whose scale parameters are shared (a shortcut pool and the
main-path pool) cannot be enlarged alone without breaking the network; they are perturbed
together, and a layer depending on such a group takes the surrogate of the group's member call that
ran last before it.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.base import LearnableResize, learnable_resizers
from ._trace import CallKey, CallRecord, ModuleCallTracer, evaluation, spatial_shape, unwrap_model
from .macs import TOTAL_CATEGORIES, make_example_input, trace_macs

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


def _sizes(model: nn.Module, example: Tensor, perturb: _Perturb | None) -> dict[CallKey, tuple[int, ...] | None]:
    tracer = ModuleCallTracer(model)
    with evaluation(model), tracer:
        if perturb is None:
            model(example)
        else:
            with perturb:
                model(example)
    return {r.key: r.out_spatial for r in tracer.records}


def _shared_groups(resizers: list[LearnableResize]) -> dict[int, int]:
    """id(resizer) -> group id; resizers sharing an architecture parameter are in one group."""
    parent = list(range(len(resizers)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[int, int] = {}
    for i, module in enumerate(resizers):
        for p in module.arch_parameters():
            j = owner.setdefault(id(p), i)
            parent[find(i)] = find(j)
    return {id(m): find(i) for i, m in enumerate(resizers)}


class ComplexityLoss:
    """Eq. 7 of paper 000: current GMACs of ``model`` with gradient to its learnable resizers.

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
        self._units = [r for r in records if id(r.module) in self._resizer_ids]
        self.upstream = self._find_upstream(example, records, resizers)
        self._build_terms()
        self._numel: dict[CallKey, int] = {}
        self._surrogates: dict[CallKey, Tensor] = {}
        self._counts: dict[int, int] = defaultdict(int)
        self._handles: list[Any] = []
        self._install_hooks()

    # -- set-up ------------------------------------------------------------------------------
    def _find_upstream(
        self, example: Tensor, records: list[CallRecord], resizers: list[LearnableResize]
    ) -> dict[CallKey, list[CallKey]]:
        """Layer call -> resizer calls whose output size it depends on (see module docstring)."""
        modules = {id(r.module): r.module for r in records}
        seq = {r.key: r.seq for r in records}
        baseline = _sizes(self.model, example, None)
        layer_keys = [r.key for r in self.layers]
        upstream: dict[CallKey, list[CallKey]] = {k: [] for k in layer_keys}

        def changed(calls: set[CallKey]) -> list[CallKey] | None:
            try:
                perturbed = _sizes(self.model, example, _Perturb(self.model, calls, modules))
            except Exception:  # an enlarged map that must match another branch: perturb the group
                return None
            return [k for k in layer_keys if perturbed.get(k, "missing") != baseline[k]]

        group_of = _shared_groups(resizers)
        coupled: dict[int, list[CallKey]] = defaultdict(list)
        for unit in self._units:
            hit = changed({unit.key})
            if hit is None:
                coupled[group_of[id(unit.module)]].append(unit.key)
                continue
            for k in hit:
                upstream[k].append(unit.key)
        for group, units in coupled.items():
            hit = changed(set(units))
            if hit is None:
                names = sorted({self._name(u) for u in units})
                warnings.warn(
                    f"ComplexityLoss: enlarging the output of {names} breaks the forward pass; "
                    "layers after them in execution order are taken as dependent",
                    RuntimeWarning,
                    stacklevel=3,
                )
                first = min(seq[u] for u in units)
                hit = [k for k in layer_keys if seq[k] >= first]
            for k in hit:
                before = [u for u in units if seq[u] <= seq[k]] or units
                upstream[k].append(max(before, key=lambda u: seq[u]))
        for layer in self.layers:  # a resizer's own cost scales with its own output
            if id(layer.module) in self._resizer_ids and layer.key not in upstream[layer.key]:
                upstream[layer.key].append(layer.key)
        for k, units in upstream.items():
            units.sort(key=lambda u: seq[u])
            if self.local and units:
                before = [u for u in units if seq[u] <= seq[k]] or units
                upstream[k] = [max(before, key=lambda u: seq[u])]
        return upstream

    def _name(self, key: CallKey) -> str:
        for r in self._units + self.layers:
            if r.key == key:
                return r.name if r.call_index == 0 else f"{r.name}#{r.call_index}"
        return str(key)

    def _build_terms(self) -> None:
        """Group layers by their set of upstream resizer calls: one product of factors per group."""
        groups: dict[tuple[CallKey, ...], list[tuple[CallKey, float]]] = defaultdict(list)
        for layer in self.layers:
            macs = sum(layer.macs.get(c, 0) for c in TOTAL_CATEGORIES)
            gmacs_per_element = macs / 1e9 / max(_numel(layer.out_spatial), 1)
            groups[tuple(self.upstream[layer.key])].append((layer.key, gmacs_per_element))
        self._terms = list(groups.items())

    def _install_hooks(self) -> None:
        watched = {id(r.module): r.module for r in self.layers + self._units}
        self._handles.append(self.model.register_forward_pre_hook(self._reset))
        for module in watched.values():
            self._handles.append(module.register_forward_hook(self._record))

    # -- training-time hooks (sizes only) -----------------------------------------------------
    def _reset(self, module: nn.Module, args: Any) -> None:
        self._numel.clear()
        self._surrogates.clear()
        self._counts.clear()

    def _record(self, module: nn.Module, args: Any, output: Any) -> None:
        mid = id(module)
        key = (mid, self._counts[mid])
        self._counts[mid] += 1
        self._numel[key] = _numel(spatial_shape(module, output))
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
                s = s.float()
                factors[unit] = torch.prod(s / s.detach())
            return factors[unit]

        total: Tensor | float = 0.0
        for units, layers in self._terms:
            coefficient = sum(g * self._numel.get(k, 0) for k, g in layers)
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
        out: dict[str, list[str]] = {}
        for layer in self.layers:
            name = layer.name if layer.call_index == 0 else f"{layer.name}#{layer.call_index}"
            out[name] = [self._name(u) for u in self.upstream[layer.key]]
        return out

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
