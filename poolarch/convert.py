"""Turn any 2-D CNN's fixed resizing into learnable resizing (paper 000, Sec. 4.4 and appendix A.1).

``convert(model)`` traces ``model`` with :mod:`torch.fx` (analysis only; the returned model keeps its
class and module names) and rewrites it:

* rule A -- every ``MaxPool2d``/``AvgPool2d`` with stride > 1 becomes a learnable resizer;
* rule B -- every strided ``Conv2d`` gets stride 1 and is followed by a learnable resizer, placed
  after the block's activation (``DynOPool o ReLU o Conv_1``). The resizer follows the last module of
  the conv's single-user chain of BatchNorm/activation/dropout modules that is called only once (a
  module reused elsewhere, like torchvision ResNet's shared ``relu``, cannot carry it; then it goes
  after the BatchNorm);
* rule C (``rule="C"``) -- the resizer is placed *before* the stride-1 conv (``Conv_1 o DynOPool``);
* a strided conv whose chain runs straight into a pooling layer (ResNet stem) becomes one resizer
  with the product of the strides (initial scale 0.25) in place of the pool;
* global pooling (``AdaptiveAvgPool2d`` etc.) stays;
* resizers whose outputs meet in an ``add``/``cat``/``mul`` -- e.g. a residual block's main path and
  its projection shortcut -- share one scale (``share_with``), so every alpha still gives a valid net.

Initial scale: ``1/stride``, unless overridden by ``init_scales`` or matched to an ``example_input``.
Sizes: DynOPool outputs ``round(H * r)`` (halves round up). At ``r = 1/2`` this equals a stride-2
"same" conv or ``MaxPool2d(3, 2, padding=1)`` (``ceil(H/2)``) for every ``H``, and ``MaxPool2d(2)`` for
even ``H``; ``MaxPool2d(2)`` on odd ``H`` floors (7 -> 3, DynOPool 4). Pass ``example_input`` to set
every initial scale to ``out/in`` of the original layer at that input, which reproduces the
original feature-map sizes exactly at that resolution. DynOPool never outputs fewer than 2 cells per
axis (``min_size=1.5``), so maps the original shrinks to 1 stay at 2.

Existing learnable resizers are left alone (converting twice changes nothing). Only 2-D
``Conv2d``/``MaxPool2d``/``AvgPool2d`` modules are converted; functional pooling calls are not.
"""
from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.fx as fx
from torch import Tensor, nn

from .architecture import apply_architecture, copy_model, freeze, load_architecture, save_architecture
from .layers.base import LearnableResize, to_pair
from .layers.factory import FIXED_POOLS, list_pools, make_pool
from .layers.grouping import share_groups

__all__ = ["convert", "ConversionReport", "ReplacedSite", "RULES", "freeze", "save_architecture",
           "load_architecture", "apply_architecture"]

RULES = ("B", "C")
_POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d)
_ELEMENTWISE_TYPES = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU,
    nn.PReLU, nn.ELU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d,
)
_PASS_THROUGH_TYPES = (nn.Identity, nn.Dropout, nn.Dropout2d)  # traversed, never host a resizer
_ELEMENTWISE_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.silu,
                          torch.nn.functional.gelu, torch.sigmoid, torch.nn.functional.hardswish}
_JOIN_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul, torch.cat,
                   torch.stack, torch.concat}
_JOIN_METHODS = {"add", "add_", "mul", "mul_"}


@dataclass
class ReplacedSite:
    """One converted resizing place.

    Attributes:
        name: the original module (the pool, or the strided conv; for a merged conv+pool the conv).
        kind: ``"pool"`` (rule A), ``"strided_conv"`` (rule B/C) or ``"strided_conv+pool"`` (merged).
        stride: the original stride (product for merged sites).
        init_scale: initial scale ``(r_h, r_w)`` of the new resizer.
        resizer: module path of the new resizer in the converted model.
        placement: where it went: ``"replaces <pool>"``, ``"after <module>"`` or ``"before <conv>"``.
        group: index into :attr:`ConversionReport.groups` (resizers sharing one scale).
        merged: the pool merged into this site (``strided_conv+pool`` only).
    """

    name: str
    kind: str
    stride: tuple[int, int]
    init_scale: tuple[float, float]
    resizer: str = ""
    placement: str = ""
    group: int = -1
    merged: str | None = None


@dataclass
class ConversionReport:
    """What :func:`convert` did: replaced sites, share groups (lists of resizer paths), skipped layers."""

    method: str
    rule: str
    sites: list[ReplacedSite] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def replaced(self) -> list[str]:
        """Original module names that were converted (merged pools included)."""
        names = []
        for s in self.sites:
            names.append(s.name)
            if s.merged:
                names.append(s.merged)
        return names

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"ConversionReport(method={self.method}, rule={self.rule}): {len(self.sites)} resizers, "
                 f"{len(self.groups)} scale groups"]
        for s in self.sites:
            scale = ",".join(f"{v:.3f}" for v in s.init_scale)
            merged = f" (+{s.merged})" if s.merged else ""
            lines.append(f"  [{s.group}] {s.kind:<18} {s.name}{merged} stride={s.stride} scale=({scale}) "
                         f"-> {s.resizer} ({s.placement})")
        for name, reason in self.skipped:
            lines.append(f"  kept {name}: {reason}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class _Tracer(fx.Tracer):
    """FX tracer that keeps existing learnable resizers as leaves (their forward is not traceable)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LearnableResize) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> fx.Graph:
    try:
        return _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 -- re-raised with the reason
        raise ValueError(
            f"model must be traceable by torch.fx for convert() (data-dependent Python control flow is "
            f"not): {type(exc).__name__}: {exc}"
        ) from exc


def _pair_int(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _make_stride_one_same(conv: nn.Conv2d) -> None:
    """Turn a strided conv into a stride-1 conv that keeps the spatial size, so the resizer does
    all of the resizing: its padding stays when it already keeps the size (3x3 pad 1, 1x1 pad 0,
    7x7 pad 3), else it becomes ``"same"`` (e.g. a 4x4 stride-4 patchify stem, 2x2 stride-2
    downsampling convs, even kernels padded asymmetrically as ``padding="same"`` does)."""
    conv.stride = (1, 1)
    k, d = _pair_int(conv.kernel_size), _pair_int(conv.dilation)
    pad = None if isinstance(conv.padding, str) else _pair_int(conv.padding)
    if pad is not None and all(2 * p == dd * (kk - 1) for p, dd, kk in zip(pad, d, k)):
        return
    conv.padding = "same"
    total = [dd * (kk - 1) for dd, kk in zip(d, k)]
    # what nn.Conv2d(padding="same") precomputes for non-zero padding modes: (w_left, w_right, h_left, h_right)
    conv._reversed_padding_repeated_twice = [
        v for t in reversed(total) for v in (t // 2, t - t // 2)]


def _excluded(name: str, exclude: Sequence[str]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


@dataclass
class _Site:
    info: ReplacedSite
    conv: str | None  # conv module made stride-1
    pool: str | None  # pool module replaced by the resizer
    after: str | None  # module the resizer is appended to (rule B)
    nodes: list[fx.Node]
    channels: int | None
    order: int
    explicit: bool = False  # initial scale given by the user


def convert(
    model: nn.Module,
    method: str = "dynopool",
    init_scales: Mapping[str, Any] | Sequence[Any] | None = None,
    exclude: Sequence[str] = (),
    rule: str = "B",
    example_input: Tensor | Sequence[int] | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, ConversionReport]:
    """Replace the fixed resizing of ``model`` by learnable resizers of kind ``method``.

    Args:
        model: a 2-D CNN traceable by :mod:`torch.fx` (torchvision/timm classification nets, the zoo).
        method: a learnable kind of :func:`poolarch.layers.list_pools` (``"dynopool"``,
            ``"shape_adaptor"``, ``"diffstride"`` once registered).
        init_scales: per-site initial scales: one number for every site, a mapping from the
            original module name (pool or conv) to a float or ``(r_h, r_w)``, or a sequence in site
            order (the report's order). Default ``1/stride``.
        exclude: module names (or prefixes) to keep fixed.
        rule: ``"B"`` (resizer after the conv's activation) or ``"C"`` (before the stride-1 conv).
        example_input: a tensor or a size ``(N, C, H, W)``; if given, default initial scales are
            ``out/in`` of the original layers at this input, so the sizes match exactly there.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        ``(converted_model, report)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    learnable = [k for k in list_pools() if k not in FIXED_POOLS]
    if method not in learnable:
        raise ValueError(f"method must be one of {learnable}, got {method!r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    model = model if inplace else copy_model(model)
    report = ConversionReport(method=method, rule=rule)
    graph = _trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    sites = _find_sites(graph, modules, calls, exclude, rule, report)
    groups = _share_groups(graph, sites, report)
    if example_input is not None:
        _match_sizes(model, sites, example_input, rule)
    _apply_overrides(sites, init_scales)
    _build(model, sites, groups, method, rule, report)
    return model, report


def _module_of(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    return modules.get(node.target) if node.op == "call_module" else None


def _is_elementwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _ELEMENTWISE_TYPES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    return False


def _chain(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[list[fx.Node], fx.Node | None]:
    """Single-user elementwise chain after ``node`` and the node it then feeds (if unique)."""
    chain: list[fx.Node] = []
    current = node
    while len(current.users) == 1:
        nxt = next(iter(current.users))
        if not _is_elementwise(nxt, modules):
            return chain, nxt
        chain.append(nxt)
        current = nxt
    return chain, None


def _channels_before(node: fx.Node, modules: dict[str, nn.Module]) -> int | None:
    """Channel count of ``node``'s input, from the nearest upstream conv/BN module."""
    current = node
    for _ in range(64):
        args = [a for a in current.args if isinstance(a, fx.Node)]
        if not args:
            return None
        current = args[0]
        m = _module_of(current, modules)
        for attr in ("out_channels", "num_features"):
            if m is not None and hasattr(m, attr):
                return int(getattr(m, attr))
    return None


def _find_sites(graph: fx.Graph, modules: dict[str, nn.Module], calls: dict[str, int], exclude: Sequence[str],
                rule: str, report: ConversionReport) -> list[_Site]:
    """Every pooling / strided-conv place to convert, in graph order (merging conv -> pool chains)."""
    sites: list[_Site] = []
    order = {n: i for i, n in enumerate(graph.nodes)}
    seen_targets: set[str] = set()
    for node in graph.nodes:
        m = _module_of(node, modules)
        if m is None:
            continue
        name = node.target
        if isinstance(m, _POOL_TYPES) and _pair_int(m.stride) != (1, 1):
            if _excluded(name, exclude):
                report.skipped.append((name, "excluded"))
                continue
            if name in seen_targets:
                continue  # one module called several times: replaced once, shared by every call
            seen_targets.add(name)
            if calls[name] > 1:
                report.notes.append(f"{name} is called {calls[name]} times; its resizer is shared by every call")
            stride = _pair_int(m.stride)
            site = _Site(ReplacedSite(name, "pool", stride, (1 / stride[0], 1 / stride[1])),
                         None, name, None, [n for n in graph.nodes if n.op == "call_module" and n.target == name],
                         _channels_before(node, modules), order[node])
            sites.append(site)
        elif isinstance(m, nn.Conv2d) and _pair_int(m.stride) != (1, 1):
            if _excluded(name, exclude):
                report.skipped.append((name, "excluded"))
                continue
            if calls[name] > 1:
                report.skipped.append((name, f"called {calls[name]} times; cannot place one resizer per call"))
                continue
            stride = _pair_int(m.stride)
            chain, feeds = _chain(node, modules)
            after = None
            if rule == "B":
                after = name
                for c in chain:
                    host = modules[c.target] if c.op == "call_module" else None
                    if host is not None and calls[c.target] == 1 and not isinstance(host, _PASS_THROUGH_TYPES):
                        after = c.target
            channels = m.out_channels if rule == "B" else m.in_channels
            site = _Site(ReplacedSite(name, "strided_conv", stride, (1 / stride[0], 1 / stride[1])),
                         name, None, after, [node], channels, order[node])
            # a strided conv running straight into a pool: one resizer with the product stride
            fm = _module_of(feeds, modules) if feeds is not None else None
            if (rule == "B" and isinstance(fm, _POOL_TYPES) and _pair_int(fm.stride) != (1, 1)
                    and calls[feeds.target] == 1 and not _excluded(feeds.target, exclude)):
                pstride = _pair_int(fm.stride)
                total = (stride[0] * pstride[0], stride[1] * pstride[1])
                site.info = ReplacedSite(name, "strided_conv+pool", total, (1 / total[0], 1 / total[1]),
                                         merged=feeds.target)
                site.pool, site.after = feeds.target, None
                site.nodes.append(feeds)
                seen_targets.add(feeds.target)
            sites.append(site)
    sites.sort(key=lambda s: s.order)
    return sites


def _share_groups(graph: fx.Graph, sites: list[_Site], report: ConversionReport) -> list[list[int]]:
    """Share groups of sites: resizers local to different inputs of one add/cat/mul share a scale."""
    site_of: dict[fx.Node, int] = {}
    for i, s in enumerate(sites):
        for n in s.nodes:
            site_of[n] = i
    pairs: list[tuple[int, int]] = []
    ancestors: dict[fx.Node, frozenset[int]] = {}
    for node in graph.nodes:
        inputs = node.all_input_nodes
        acc: set[int] = set()
        for a in inputs:
            acc |= ancestors[a]
        if node in site_of:
            acc.add(site_of[node])
        ancestors[node] = frozenset(acc)
        is_join = (node.op == "call_function" and node.target in _JOIN_FUNCTIONS) or (
            node.op == "call_method" and node.target in _JOIN_METHODS)
        if not is_join or len(inputs) < 2:
            continue
        first = ancestors[inputs[0]]
        for other_node in inputs[1:]:
            other = ancestors[other_node]
            local_a = sorted(first - other, key=lambda i: sites[i].order)
            local_b = sorted(other - first, key=lambda i: sites[i].order)
            if not local_a or not local_b:
                continue
            if len(local_a) != len(local_b):
                report.notes.append(
                    f"{node.name}: branches resize {len(local_a)} vs {len(local_b)} times; scales not shared "
                    f"({[sites[i].info.name for i in local_a]} / {[sites[i].info.name for i in local_b]})")
                continue
            pairs += zip(local_a, local_b)
    return share_groups(len(sites), pairs)


def _input_size(example_input: Tensor | Sequence[int]) -> Tensor:
    if isinstance(example_input, Tensor):
        return example_input
    size = tuple(int(s) for s in example_input)
    if len(size) != 4:
        raise ValueError(f"example_input must be a tensor or a size (N, C, H, W), got {example_input!r}")
    return torch.zeros(size)


def _match_sizes(model: nn.Module, sites: list[_Site], example_input, rule: str) -> None:
    """Set each site's initial scale to ``out/in`` of the original layers at ``example_input``."""
    x = _input_size(example_input)
    record: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
    hooks = []
    names = {n for s in sites for n in (s.conv, s.pool) if n}
    for name in names:
        def hook(mod, inp, out, name=name):
            record.setdefault(name, (tuple(inp[0].shape[-2:]), tuple(out.shape[-2:])))
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            param = next(model.parameters(), None)
            model(x if param is None else x.to(param.device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for s in sites:
        final = record.get(s.pool or s.conv)
        if final is None:
            continue
        if s.conv is not None:
            # the converted conv keeps the size (see _make_stride_one_same): the resizer maps the
            # conv's input size to the original output size, before (rule C) or after (rule B) it
            (h, w), _ = record[s.conv]
            resize_in, resize_out = (h, w), final[1]
        else:
            resize_in, resize_out = final
        if min(resize_out) >= 1:
            s.info.init_scale = (resize_out[0] / resize_in[0], resize_out[1] / resize_in[1])


def _apply_overrides(sites: list[_Site], init_scales) -> None:
    if init_scales is None:
        return
    if isinstance(init_scales, Mapping):
        known = {n for s in sites for n in (s.info.name, s.info.merged) if n}
        unknown = set(init_scales) - known
        if unknown:
            raise ValueError(f"init_scales keys must be converted layer names {sorted(known)}, got {sorted(unknown)}")
        for s in sites:
            key = s.info.name if s.info.name in init_scales else s.info.merged
            if key in init_scales:
                s.info.init_scale = to_pair(init_scales[key], f"init_scales[{key!r}]")
                s.explicit = True
    elif isinstance(init_scales, (int, float)) and not isinstance(init_scales, bool):
        for s in sites:  # one number: every site
            s.info.init_scale = to_pair(init_scales, "init_scales")
            s.explicit = True
    elif isinstance(init_scales, Sequence) and not isinstance(init_scales, str):
        if len(init_scales) != len(sites):
            raise ValueError(f"init_scales must have one entry per converted site ({len(sites)}), got {len(init_scales)}")
        for s, v in zip(sites, init_scales):
            if v is not None:
                s.info.init_scale = to_pair(v, "init_scales")
                s.explicit = True
    else:
        raise TypeError(f"init_scales must be a number, a mapping name -> scale or a sequence, "
                        f"got {type(init_scales).__name__}")


def _build(model: nn.Module, sites: list[_Site], groups: list[list[int]], method: str, rule: str,
           report: ConversionReport) -> None:
    """Create the resizers (one leader per share group, the rest sharing its scale) and rewire."""
    for gi, group in enumerate(groups):
        leader = None
        explicit = {sites[i].info.init_scale for i in group if sites[i].explicit}
        if len(explicit) > 1:
            raise ValueError(f"init_scales of layers sharing one scale must agree: "
                             f"{[(sites[i].info.name, sites[i].info.init_scale) for i in group]}")
        shared_scale = explicit.pop() if explicit else sites[group[0]].info.init_scale
        for i in group:  # an override of one member sets the whole group
            sites[i].info.init_scale = shared_scale
        for i in group:
            site = sites[i]
            resizer = make_pool(method, site.info.stride, init_scale=site.info.init_scale,
                                channels=site.channels, share_with=leader)
            leader = leader or resizer
            if site.conv is not None:
                _make_stride_one_same(model.get_submodule(site.conv))
            if site.pool is not None:
                model.set_submodule(site.pool, resizer)
                site.info.resizer, site.info.placement = site.pool, f"replaces {site.pool}"
            elif rule == "B":
                host = model.get_submodule(site.after)
                model.set_submodule(site.after, nn.Sequential(host, resizer))
                site.info.resizer, site.info.placement = f"{site.after}.1", f"after {site.after}"
            else:
                conv = model.get_submodule(site.conv)
                model.set_submodule(site.conv, nn.Sequential(resizer, conv))
                site.info.resizer, site.info.placement = f"{site.conv}.0", f"before {site.conv}"
            site.info.group = gi
    report.sites = [s.info for s in sites]
    report.groups = [[sites[i].info.resizer for i in g] for g in groups]
