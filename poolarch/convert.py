"""Turn any 2-D CNN's fixed resizing into learnable resizing (Jang et al. 2023, Sec. 4.4 and appendix A.1).

``convert(model)`` traces ``model`` with :mod:`torch.fx` (analysis only; the returned model keeps its
class and module names) and rewrites it:

* rule A -- every ``MaxPool2d``/``AvgPool2d`` with stride > 1 becomes a learnable resizer;
* rule B -- every strided ``Conv2d`` gets stride 1 and is followed by a learnable resizer, placed
  after the block's activation (Jang et al. 2023, appendix A.1: ``ReLU o Conv_s -> DynOPool_s o ReLU o
  Conv_1``). The resizer follows the last module of the conv's single-user chain of
  BatchNorm/activation/dropout modules that is called only once. An activation that cannot carry it
  -- a module reused elsewhere, like torchvision ResNet's shared ``relu``, or a functional ``relu`` --
  is copied in front of the resizer when it is a ReLU/ReLU6 (``Sequential(bn2, ReLU(), resizer)``;
  the shared ReLU that follows is then the identity on the resizer's output, which stays in the
  activation's range for DynOPool and Shape Adaptor: interpolation and max/avg keep it), so the
  network computes exactly rule B (DiffStride's spectral crop can leave that range; the shared ReLU
  then also clips the resizer's output). Any other shared activation (SiLU, GELU, ...) is not copied; the
  resizer then sits after the BatchNorm, before that activation, and the report says so;
* rule C (``rule="C"``) -- the resizer is placed *before* the stride-1 conv (``Conv_1 o DynOPool``);
* a strided conv whose chain runs straight into a pooling layer (ResNet stem) becomes one resizer
  with the product of the strides (initial scale 0.25) in place of the pool;
* global pooling (``AdaptiveAvgPool2d`` etc.) stays;
* resizers whose outputs meet in an ``add``/``cat``/``mul`` -- e.g. a residual block's main path and
  its projection shortcut -- share one scale (``share_with``), so every alpha still gives a valid net;
* residual form (``method="shape_adaptor"``, any kind with :func:`~poolarch.layers.has_residual_form`):
  a downsampling residual block -- an ``add`` of a main path and a shortcut, each with one strided
  conv of the same stride, the shortcut's a 1x1 projection (torchvision/timm ``BasicBlock`` and
  ``Bottleneck`` with a ``downsample`` branch, the zoo's blocks) -- is rewritten as its authors build it
  (Liu et al. 2020): the main path's conv runs at stride 1, the shortcut keeps its strided projection
  (the ``1/stride`` branch), and one residual adaptor, a new child ``mix`` of the block, replaces the
  sum: ``mix(shortcut, main) = 2(1-s) resize(shortcut) + 2s resize(main)`` (one ``residual_block``
  site in the report). A zoo block takes ``mix`` natively and keeps its class; any other block becomes
  a :class:`torch.fx.GraphModule` with the same class name and submodule names; a block that cannot
  be traced alone keeps the two resizers sharing a scale.

Initial scales keep every feature-map size of the original network at its *nominal input size*:
an ``example_input`` if given, else timm's ``pretrained_cfg["input_size"]``, a ``VisionTransformer``'s
``image_size``, the crop size of the torchvision builder's default weights (read from the weights
enum, nothing is downloaded; e.g. 299 for ``inception_v3``), else 224. The original network is run
once at that size (shapes only, on the meta device when possible) to record what every converted
layer maps its input to -- floor for pooling, ceil with ``ceil_mode``, the conv formula with
padding/dilation for strided convs -- and each share group gets the first scale for which every
member's resizer (its own ``output_size`` rule) gives exactly those sizes: ``1/stride`` when it does
(DynOPool's ``round(H/2)`` = ``ceil(H/2)`` equals a stride-2 "same" conv at every ``H``), else the
middle of the interval of scales that round to the original sizes (e.g. AlexNet's stem at 224:
``27/224``; Inception-v3's ``299 -> 149``: ``149/299``). ``init_scales`` overrides that. The report
says which input size was used and where it came from, and notes any layer whose size cannot be
kept (DynOPool never outputs fewer than 2 cells per axis, ``min_size=1.5``: a map the original
shrinks to 1 stays at 2).

Existing learnable resizers are left alone (converting twice changes nothing). Only 2-D
``Conv2d``/``MaxPool2d``/``AvgPool2d`` modules are converted; functional pooling calls are not.
"""
from __future__ import annotations

import copy
import operator
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.fx as fx
from torch import Tensor, nn

from .architecture import apply_architecture, copy_model, freeze, load_architecture, save_architecture
from .layers.base import LearnableResize, to_pair
from .layers.factory import FIXED_POOLS, has_residual_form, list_pools, make_pool, make_residual_pool
from .layers.grouping import share_groups

__all__ = ["convert", "ConversionReport", "ReplacedSite", "RULES", "freeze", "save_architecture",
           "load_architecture", "apply_architecture"]

RULES = ("B", "C")
_POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d)
_ELEMENTWISE_TYPES = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU,
    nn.PReLU, nn.ELU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d,
)
_ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU, nn.PReLU,
                     nn.ELU, nn.Mish, nn.Sigmoid, nn.Tanh)
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
        kind: ``"pool"`` (rule A), ``"strided_conv"`` (rule B/C), ``"strided_conv+pool"`` (merged) or
            ``"residual_block"`` (a residual form mixing the shortcut and the main path; ``name`` is
            the main path's conv, made stride 1, ``merged`` the shortcut's strided conv, kept).
        stride: the original stride (product for merged sites).
        init_scale: initial scale ``(r_h, r_w)`` of the new resizer.
        resizer: module path of the new resizer in the converted model.
        placement: where it went and why, e.g. ``"replaces maxpool"``, ``"after layer1.0.act2 (the
            activation)"``, ``"after a copy of the activation layer2.0.relu (called several times),
            placed after layer2.0.bn2"``, ``"after layer2.0.downsample.1 (no activation follows)"``
            or ``"before conv"`` (rule C).
        in_size: the resizer's input size ``(H, W)`` at the report's input size (``None``: not reached).
        out_size: the original layer's output size there, which the initial scale reproduces.
        group: index into :attr:`ConversionReport.groups` (resizers sharing one scale).
        merged: the pool merged into this site (``strided_conv+pool``), or the shortcut conv
            (``residual_block``).
    """

    name: str
    kind: str
    stride: tuple[int, int]
    init_scale: tuple[float, float]
    resizer: str = ""
    placement: str = ""
    group: int = -1
    merged: str | None = None
    in_size: tuple[int, int] | None = None
    out_size: tuple[int, int] | None = None


@dataclass
class ConversionReport:
    """What :func:`convert` did: replaced sites, share groups (lists of resizer paths), skipped
    layers, and the input size ``(H, W)`` at which the initial scales keep the original sizes
    (``input_size_source`` says where that size came from)."""

    method: str
    rule: str
    input_size: tuple[int, int] | None = None
    input_size_source: str = ""
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
        if self.input_size is not None:
            lines.append(f"  sizes kept at input {self.input_size[0]}x{self.input_size[1]} ({self.input_size_source})")
        for s in self.sites:
            scale = ",".join(f"{v:.4g}" for v in s.init_scale)
            merged = f" (+{s.merged})" if s.merged else ""
            sizes = "" if s.in_size is None else (
                f" {s.in_size[0]}x{s.in_size[1]}->{s.out_size[0]}x{s.out_size[1]}" if s.out_size else "")
            lines.append(f"  [{s.group}] {s.kind:<18} {s.name}{merged} stride={s.stride} scale=({scale}){sizes} "
                         f"-> {s.resizer} ({s.placement})")
        for name, reason in self.skipped:
            lines.append(f"  kept {name}: {reason}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class _Tracer(fx.Tracer):
    """FX tracer that keeps existing learnable resizers (their forward is not traceable) and every
    ``BatchNorm2d`` subclass (e.g. timm's ``BatchNormAct2d``, BatchNorm + activation in one module,
    which rule B can then follow) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (LearnableResize, nn.BatchNorm2d)) or super().is_leaf_module(m, qualname)


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
    activation: nn.Module | None = None  # copy of a shared activation put before the resizer (rule B)
    placement: str = ""
    block: str | None = None  # residual_block: the block module rewritten with a residual form
    shortcut: str | None = None  # residual_block: the shortcut's strided conv (kept)


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
            order (the report's order). Default: the scales that keep the original sizes at the
            nominal input size (``1/stride`` where that does).
        exclude: module names (or prefixes) to keep fixed.
        rule: ``"B"`` (resizer after the conv's activation) or ``"C"`` (before the stride-1 conv).
        example_input: a tensor or a size ``(N, C, H, W)`` at which the initial scales keep every
            original feature-map size. Default: the model's nominal input size (timm
            ``pretrained_cfg["input_size"]``, ``image_size``, the torchvision builder's weights crop
            size, else 224; see the module docstring); ``report.input_size_source`` says which.
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
    if has_residual_form(method):
        sites = _residual_blocks(graph, modules, sites, report)
    _apply_overrides(sites, init_scales)
    if not sites:
        warnings.warn(f"convert() found nothing to convert in {type(model).__name__}: "
                      f"{_nothing_to_convert_reason(model, graph, modules, report)}", stacklevel=2)
        return model, report
    groups = _share_groups(graph, sites, report)
    size, report.input_size_source = _nominal_input_size(model, graph, modules, example_input)
    report.input_size = (int(size[2]), int(size[3]))
    _record_sizes(model, sites, size, report)
    _build(model, sites, groups, method, rule, report)
    return model, report


_FUNCTIONAL_RESIZES = {torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d, torch.max_pool2d,
                       torch.nn.functional.interpolate, torch.nn.functional.conv2d}


def _nothing_to_convert_reason(model: nn.Module, graph: fx.Graph, modules: dict[str, nn.Module],
                               report: ConversionReport) -> str:
    """Why :func:`_find_sites` found no site, for the warning."""
    reasons = []
    existing = [n for n, m in modules.items() if isinstance(m, LearnableResize)]
    if existing:
        reasons.append(f"it already has {len(existing)} learnable resizer(s) ({existing[0]}, ...), which are "
                       f"left alone")
    if report.skipped:
        reasons.append("every candidate layer was skipped: " + "; ".join(f"{n} ({r})" for n, r in report.skipped))
    functional = sorted({getattr(n.target, "__name__", str(n.target)) for n in graph.nodes
                         if n.op == "call_function" and n.target in _FUNCTIONAL_RESIZES})
    if functional:
        reasons.append(f"its forward resizes with functional calls ({', '.join(functional)}), which are not "
                       f"replaced")
    if not reasons:
        reasons.append("it has no MaxPool2d/AvgPool2d or Conv2d with stride > 1")
    return "; ".join(reasons) + ". The model is returned unchanged (0 resizers)."


def _module_of(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    return modules.get(node.target) if node.op == "call_module" else None


def _is_activation(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _ACTIVATION_TYPES)
    return node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS


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
                         _channels_before(node, modules), order[node], placement=f"replaces {name}")
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
            after, activation, placement = None, None, f"before {name}"
            if rule == "B":
                after, activation, placement = _rule_b_host(name, chain, modules, calls)
            channels = m.out_channels if rule == "B" else m.in_channels
            site = _Site(ReplacedSite(name, "strided_conv", stride, (1 / stride[0], 1 / stride[1])),
                         name, None, after, [node], channels, order[node], activation=activation,
                         placement=placement)
            # a strided conv running straight into a pool: one resizer with the product stride
            fm = _module_of(feeds, modules) if feeds is not None else None
            if (rule == "B" and isinstance(fm, _POOL_TYPES) and _pair_int(fm.stride) != (1, 1)
                    and calls[feeds.target] == 1 and not _excluded(feeds.target, exclude)):
                pstride = _pair_int(fm.stride)
                total = (stride[0] * pstride[0], stride[1] * pstride[1])
                site.info = ReplacedSite(name, "strided_conv+pool", total, (1 / total[0], 1 / total[1]),
                                         merged=feeds.target)
                site.pool, site.after, site.activation = feeds.target, None, None
                site.placement = f"replaces {feeds.target}; {name} runs at stride 1"
                site.nodes.append(feeds)
                seen_targets.add(feeds.target)
            sites.append(site)
    sites.sort(key=lambda s: s.order)
    return sites


def _activation_name(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    return f"functional {getattr(node.target, '__name__', node.target)}"


def _activation_copy(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """A module computing the ReLU/ReLU6 ``node`` computes (``None`` for other activations): those
    are idempotent and their range is kept by interpolation and max/avg pooling."""
    if node.op == "call_module":
        m = modules[node.target]
        return copy.deepcopy(m) if type(m) in (nn.ReLU, nn.ReLU6) else None
    if node.target in (torch.relu, torch.nn.functional.relu):
        return nn.ReLU()
    if node.target is torch.nn.functional.relu6:
        return nn.ReLU6()
    return None


def _rule_b_host(conv: str, chain: list[fx.Node], modules: dict[str, nn.Module], calls: dict[str, int]
                 ) -> tuple[str, nn.Module | None, str]:
    """Where rule B puts the resizer after strided ``conv``: ``(host module, activation copy or None,
    placement text)``. The host is the last module of the conv's elementwise chain that is called
    once; an activation after it that cannot carry the resizer (shared module, function) is copied
    into the host's ``Sequential`` when it is a ReLU/ReLU6, so the resizer follows the activation."""
    after, pending = conv, None
    for c in chain:
        m = modules.get(c.target) if c.op == "call_module" else None
        if m is not None and calls[c.target] == 1 and not isinstance(m, _PASS_THROUGH_TYPES):
            after, pending = c.target, None
        elif _is_activation(c, modules):
            pending = c
    if pending is None:
        host = modules[after]
        if isinstance(host, _ACTIVATION_TYPES):
            why = "the activation"
        elif isinstance(getattr(host, "act", None), _ACTIVATION_TYPES):
            why = "its BatchNorm + activation"
        else:
            why = "no activation follows"
        return after, None, f"after {after} ({why})"
    name = _activation_name(pending)
    shared = "called several times" if pending.op == "call_module" else "a function call"
    act = _activation_copy(pending, modules)
    if act is not None:
        return after, act, f"after a copy of the activation {name} ({shared}), placed after {after}"
    return after, None, f"after {after}, before the activation {name} ({shared}; not copied: rule B not reached)"


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


def _first_conv_channels(graph: fx.Graph, modules: dict[str, nn.Module]) -> int:
    for node in graph.nodes:
        m = _module_of(node, modules)
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def _nominal_input_size(model: nn.Module, graph: fx.Graph, modules: dict[str, nn.Module],
                        example_input: Tensor | Sequence[int] | None) -> tuple[tuple[int, ...], str]:
    """``((1, C, H, W), where it came from)``: the input size at which the sizes are kept."""
    if example_input is not None:
        if isinstance(example_input, Tensor):
            if example_input.dim() != 4:
                raise ValueError(f"example_input must be a 4-d tensor (N, C, H, W), got shape "
                                 f"{tuple(example_input.shape)}")
            return tuple(example_input.shape), "example_input"
        if isinstance(example_input, Sequence) and not isinstance(example_input, str) and len(example_input) == 4 \
                and all(isinstance(v, int) and v > 0 for v in example_input):
            return tuple(example_input), "example_input"
        raise ValueError(f"example_input must be a tensor or a size (N, C, H, W) of positive ints, got {example_input!r}")
    channels = _first_conv_channels(graph, modules)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("input_size"):
        c, h, w = (int(v) for v in cfg["input_size"])
        arch = cfg.get("architecture") or type(model).__name__
        return (1, channels, h, w), f"timm pretrained_cfg['input_size'] of {arch}"
    image_size = getattr(model, "image_size", None)
    if isinstance(image_size, int) and not isinstance(image_size, bool) and image_size > 0:
        return (1, channels, image_size, image_size), f"{type(model).__name__}.image_size"
    found = _torchvision_input_size(model)
    if found is not None:
        return (1, channels, found[0], found[0]), found[1]
    return (1, channels, 224, 224), f"default 224: no nominal input size known for {type(model).__name__}"


def _params_at_1000_classes(model: nn.Module) -> int:
    """Parameter count with every classifier ``Linear`` (same ``out_features`` as the last one)
    resized to 1000 outputs: what torchvision's weights ``meta["num_params"]`` counts."""
    total = sum(p.numel() for p in model.parameters())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        k = linears[-1].out_features
        for m in linears:
            if m.out_features == k:
                bias = m.bias is not None
                total += (m.in_features + bias) * 1000 - (m.in_features + bias) * k
    return total


def _torchvision_input_size(model: nn.Module) -> tuple[int, str] | None:
    """Crop size of the default weights of the torchvision builder that made ``model`` (``None``
    when ``model`` is not a torchvision classifier or the builder is not identified). Reads the
    weights enums only: nothing is built or downloaded."""
    module = type(model).__module__
    if not module.startswith("torchvision.models"):
        return None
    try:
        import torchvision
    except ImportError:  # pragma: no cover - the model's own package
        return None
    crops: dict[str, int] = {}
    weights: dict[str, list[Any]] = {}
    for name in torchvision.models.list_models(module=torchvision.models):
        if torchvision.models.get_model_builder(name).__module__ != module:
            continue
        enum = torchvision.models.get_model_weights(name)
        crop = getattr(enum.DEFAULT.transforms, "keywords", {}).get("crop_size")
        if isinstance(crop, int):
            crops[name], weights[name] = crop, list(enum)
    if not crops:
        return None
    if len(set(crops.values())) == 1:
        crop = next(iter(crops.values()))
        return crop, f"crop size of the default weights of every torchvision builder in {module}"
    n = _params_at_1000_classes(model)
    matches = [name for name, ws in weights.items() if any(w.meta.get("num_params") == n for w in ws)]
    if len({crops[m] for m in matches}) != 1:
        return None
    name = matches[0]
    default = torchvision.models.get_model_weights(name).DEFAULT
    return crops[name], f"crop size of torchvision {name}'s default weights {default}"


def _record_sizes(model: nn.Module, sites: list[_Site], size: tuple[int, ...], report: ConversionReport) -> None:
    """Run the original ``model`` once at ``size`` (eval mode; on the meta device -- shapes only --
    when the model allows it) and record each site's resizer input and original output sizes."""
    record: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
    hooks = []
    names = {n for s in sites for n in (s.conv, s.pool) if n}
    for name in names:
        def hook(mod, inp, out, name=name):
            record.setdefault(name, (tuple(int(v) for v in inp[0].shape[-2:]), tuple(int(v) for v in out.shape[-2:])))
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            try:  # shapes only: every parameter, buffer and the input on the meta device
                state = {k: torch.empty_like(v, device="meta")
                         for k, v in [*model.named_parameters(), *model.named_buffers()]}
                torch.func.functional_call(model, state, (torch.empty(size, device="meta"),), strict=False)
            except Exception:  # noqa: BLE001 -- e.g. data-dependent code: run it for real
                record.clear()
                model(torch.zeros(size, device=device))
    except Exception as exc:  # noqa: BLE001 -- the model cannot run at that size
        note = (f"the original model does not run at input {tuple(size)} ({report.input_size_source}): "
                f"{type(exc).__name__}: {exc}; initial scales are 1/stride -- pass example_input= to keep the "
                f"sizes at another input size")
        report.notes.append(note)
        warnings.warn(f"convert(): {note}", stacklevel=3)
        return
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for s in sites:
        final = record.get(s.pool or s.conv)  # residual_block: the main conv's output size
        if final is None:
            continue  # not reached in eval mode (e.g. an auxiliary head)
        # a converted conv keeps the size (see _make_stride_one_same): the resizer maps the conv's
        # input size to the original output size, before (rule C) or after (rule B) it
        s.info.in_size = record[s.conv][0] if s.conv is not None else final[0]
        s.info.out_size = final[1]


def _candidate_scales(members: list[_Site]) -> list[tuple[float, float]]:
    """Scales to try for a share group, best first: ``1/stride``, the middle of the interval of
    scales that round (halves up) to every member's original size, each member's ``out/in``."""
    first = members[0].info
    candidates = [(1 / first.stride[0], 1 / first.stride[1])]
    sized = [m.info for m in members if m.info.in_size is not None]
    middle = []
    for axis in range(2):
        lo = max((i.out_size[axis] - 0.5) / i.in_size[axis] for i in sized)
        hi = min((i.out_size[axis] + 0.5) / i.in_size[axis] for i in sized)
        middle.append((lo + hi) / 2 if lo < hi else None)
    if None not in middle:
        candidates.append((middle[0], middle[1]))
    candidates += [(i.out_size[0] / i.in_size[0], i.out_size[1] / i.in_size[1]) for i in sized]
    return candidates


def _fit_group_scale(members: list[_Site], resizers: list[LearnableResize]) -> tuple[float, float] | None:
    """The first candidate scale at which every member's resizer gives the original output size
    (checked with the resizer's own ``output_size``); ``None`` if there is none."""
    pairs = [(m.info, r) for m, r in zip(members, resizers) if m.info.in_size is not None]
    for scale in _candidate_scales(members):
        try:
            resizers[0].set_scale(scale)
        except (ValueError, TypeError):  # a scale this kind of resizer cannot have
            continue
        if all(tuple(r.output_size(info.in_size)) == tuple(info.out_size) for info, r in pairs):
            return scale
    return None


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
    """Create the resizers (one leader per share group, the rest sharing its scale), fit each
    group's initial scale to the recorded sizes, and rewire."""
    unmatched: list[str] = []
    for gi, group in enumerate(groups):
        if sites[group[0]].block is not None:  # a residual form: always a group of its own
            _build_residual(model, sites[group[0]], method, report, unmatched)
            sites[group[0]].info.group = gi
            continue
        leader = None
        explicit = {sites[i].info.init_scale for i in group if sites[i].explicit}
        if len(explicit) > 1:
            raise ValueError(f"init_scales of layers sharing one scale must agree: "
                             f"{[(sites[i].info.name, sites[i].info.init_scale) for i in group]}")
        explicit_group = bool(explicit)
        shared_scale = explicit.pop() if explicit else sites[group[0]].info.init_scale
        for i in group:  # an override of one member sets the whole group
            sites[i].info.init_scale = shared_scale
        resizers = []
        for i in group:
            site = sites[i]
            resizer = make_pool(method, site.info.stride, init_scale=site.info.init_scale,
                                channels=site.channels, share_with=leader)
            leader = leader or resizer
            resizers.append(resizer)
            if site.conv is not None:
                _make_stride_one_same(model.get_submodule(site.conv))
            if site.pool is not None:
                model.set_submodule(site.pool, resizer)
                site.info.resizer, site.info.placement = site.pool, site.placement
            elif rule == "B":
                parts = [model.get_submodule(site.after)]
                parts += [site.activation] if site.activation is not None else []
                model.set_submodule(site.after, nn.Sequential(*parts, resizer))
                site.info.resizer, site.info.placement = f"{site.after}.{len(parts)}", site.placement
            else:
                conv = model.get_submodule(site.conv)
                model.set_submodule(site.conv, nn.Sequential(resizer, conv))
                site.info.resizer, site.info.placement = f"{site.conv}.0", site.placement
            site.info.group = gi
        members = [sites[i] for i in group]
        if explicit_group or all(m.info.in_size is None for m in members):
            continue
        fitted = _fit_group_scale(members, resizers)
        if fitted is None:
            leader.set_scale(shared_scale)
            names = [m.info.name for m in members]
            sizes = [f"{m.info.in_size}->{m.info.out_size}" for m in members if m.info.in_size is not None]
            note = (f"{names}: no {method} scale gives the original sizes {sizes} at input {report.input_size}; "
                    f"kept {tuple(round(v, 4) for v in shared_scale)}, so the sizes differ there")
            report.notes.append(note)
            unmatched.append(note)
        else:
            for m in members:
                m.info.init_scale = fitted
    if unmatched:
        warnings.warn("convert(): " + " | ".join(unmatched), stacklevel=3)
    report.sites = [s.info for s in sites]
    report.groups = [[sites[i].info.resizer for i in g] for g in groups]


_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_"))


def _site_ancestors(graph: fx.Graph, site_of: dict[fx.Node, Any]) -> dict[fx.Node, frozenset]:
    """For every node, the set of ``site_of`` values among its ancestors (itself included)."""
    out: dict[fx.Node, frozenset] = {}
    for node in graph.nodes:
        acc: set = set()
        for a in node.all_input_nodes:
            acc |= out[a]
        if node in site_of:
            acc.add(site_of[node])
        out[node] = frozenset(acc)
    return out


def _common_prefix(a: str, b: str) -> str:
    parts = []
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        parts.append(x)
    return ".".join(parts)


def _residual_blocks(graph: fx.Graph, modules: dict[str, nn.Module], sites: list[_Site],
                     report: ConversionReport) -> list[_Site]:
    """Find downsampling residual blocks (see the module doc) among the strided-conv sites: each
    becomes one ``residual_block`` site (the main conv's site, with ``block`` and ``shortcut`` set) and
    the shortcut conv's site is dropped. Returns the new site list."""
    index = {id(s): i for i, s in enumerate(sites)}
    site_of = {n: i for i, s in enumerate(sites) for n in s.nodes}
    ancestors = _site_ancestors(graph, site_of)
    used: set[int] = set()
    for node in graph.nodes:
        if not _is_add(node) or len(node.all_input_nodes) != 2:
            continue
        left, right = (ancestors[a] for a in node.all_input_nodes)
        local_a, local_b = left - right, right - left
        if len(local_a) != 1 or len(local_b) != 1:
            continue
        a, b = sites[next(iter(local_a))], sites[next(iter(local_b))]
        if used & {index[id(a)], index[id(b)]} or a.info.kind != "strided_conv" or b.info.kind != "strided_conv":
            continue
        if a.info.stride != b.info.stride or a.info.stride[0] != a.info.stride[1]:
            continue
        ka, kb = (_pair_int(modules[s.conv].kernel_size) == (1, 1) for s in (a, b))
        if ka == kb:
            continue  # which branch is the shortcut (the 1x1 projection) is not clear
        main, shortcut = (b, a) if ka else (a, b)
        block = _common_prefix(main.conv, shortcut.conv)
        if not block or any(s.conv != main.conv and s.conv != shortcut.conv
                            and any(n and n.startswith(block + ".") for n in (s.conv, s.pool, s.after))
                            for s in sites):
            continue
        if not _native_mix(modules[block], shortcut.conv[len(block) + 1:]) and _block_graph(
                modules[block], main.conv[len(block) + 1:], shortcut.conv[len(block) + 1:]) is None:
            report.notes.append(f"{block}: not rewritten with the residual form (the block alone cannot be "
                                f"traced or its sum is not found); its resizers share a scale instead")
            continue
        used |= {index[id(main)], index[id(shortcut)]}
        main.block, main.shortcut = block, shortcut.conv
        main.info = ReplacedSite(main.conv, "residual_block", main.info.stride, main.info.init_scale,
                                 merged=shortcut.conv)
        main.after, main.activation = None, None
        main.placement = (f"{block}.mix replaces the sum of {block}: mixes the shortcut ({shortcut.conv}, "
                          f"stride kept) and the main path ({main.conv} at stride 1)")
    return [s for i, s in enumerate(sites) if i not in used or s.block is not None]


def _block_graph(block: nn.Module, main_conv: str, shortcut_conv: str) -> tuple[fx.Graph, fx.Node] | None:
    """The block's own fx graph and its ``add`` of the main path (through ``main_conv``) and the
    shortcut (through ``shortcut_conv``); ``None`` if the block cannot be traced or has no such add."""
    try:
        graph = _Tracer().trace(block)
    except Exception:  # noqa: BLE001 -- the caller falls back to shared scales
        return None
    tags = {n: n.target for n in graph.nodes if n.op == "call_module" and n.target in (main_conv, shortcut_conv)}
    ancestors = _site_ancestors(graph, tags)
    for node in graph.nodes:
        if _is_add(node) and len(node.all_input_nodes) == 2:
            left, right = (ancestors[a] for a in node.all_input_nodes)
            if {left, right} == {frozenset({main_conv}), frozenset({shortcut_conv})}:
                return graph, node
    return None


def _build_residual(model: nn.Module, site: _Site, method: str, report: ConversionReport,
                    unmatched: list[str]) -> None:
    """Rewrite ``site.block`` with the residual form: main conv at stride 1, a child ``mix``
    (:func:`~poolarch.layers.make_residual_pool`) in place of the sum, initial scale fitted to the
    recorded sizes (as :func:`_fit_group_scale`)."""
    block = model.get_submodule(site.block)
    prefix = len(site.block) + 1
    name = "mix"
    mix = make_residual_pool(method, site.info.stride, init_scale=site.info.init_scale if site.explicit else None)
    if _native_mix(block, site.shortcut[prefix:]):
        block.mix = mix  # the block computes act(mix(shortcut(x), main(x))) itself
    else:
        found = _block_graph(block, site.conv[prefix:], site.shortcut[prefix:])
        if found is None:  # _residual_blocks only lists blocks whose graph it found
            raise RuntimeError(f"convert(): block {site.block!r} no longer has the main/shortcut add it was chosen for")
        graph, add = found
        while hasattr(block, name):
            name += "_"
        shortcut_first = site.shortcut[prefix:] in _arg_modules(add.all_input_nodes[0])
        shortcut_in, main_in = add.all_input_nodes if shortcut_first else add.all_input_nodes[::-1]
        with graph.inserting_after(add):
            node = graph.call_module(name, (shortcut_in, main_in))
        add.replace_all_uses_with(node)
        graph.erase_node(add)
        for n in graph.nodes:  # annotations such as ``x: Tensor`` print as names TorchScript cannot resolve
            n.type = None
        block.add_module(name, mix)
        rewritten = fx.GraphModule(block, graph, class_name=type(block).__name__)
        # the block's own children (containers such as ``downsample`` keep their classes), order and
        # direct parameters/buffers, rather than the plain containers GraphModule rebuilds
        rewritten._modules = type(block._modules)(block._modules)
        rewritten._parameters = type(block._parameters)(block._parameters)
        rewritten._buffers = type(block._buffers)(block._buffers)
        rewritten.train(block.training)
        model.set_submodule(site.block, rewritten)
    _make_stride_one_same(model.get_submodule(site.conv))
    site.info.resizer = f"{site.block}.{name}"
    site.info.placement = site.placement
    if site.explicit or site.info.in_size is None:
        return
    fitted = _fit_residual_scale(mix, site.info)
    if fitted is None:
        note = (f"{site.block}: no {method} scale gives the original size {site.info.in_size}->{site.info.out_size} "
                f"at input {report.input_size}; kept {float(mix.ratio):.4g}, so the sizes differ there")
        report.notes.append(note)
        unmatched.append(note)
    else:
        site.info.init_scale = (fitted, fitted)


def _native_mix(block: nn.Module, shortcut_conv: str) -> bool:
    """Whether ``block`` takes a residual resizer itself: the zoo's ``BasicBlock``/``Bottleneck``
    (an attribute ``mix`` that is ``None``, the strided projection under ``shortcut``), which then
    keep their class."""
    return "mix" in vars(block) and block.mix is None and shortcut_conv.startswith("shortcut.")


def _arg_modules(node: fx.Node) -> set[str]:
    """Targets of the ``call_module`` ancestors of ``node`` (itself included)."""
    out: set[str] = set()
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_module":
            out.add(str(n.target))
        stack.extend(n.all_input_nodes)
    return out


def _fit_residual_scale(mix: nn.Module, info: ReplacedSite) -> float | None:
    """The residual adaptor's initial ratio giving the recorded output size: its default (``1/stride``
    kept inside the sigmoid's range) if that does, else the middle of the interval of ratios that do
    (``int(H s)`` in the authors' local rule), else ``None`` (default kept)."""
    if tuple(mix.output_size(info.in_size)) == tuple(info.out_size):
        return float(mix.ratio.detach())
    default = mix.alpha.detach().clone()
    lo = max(o / i for o, i in zip(info.out_size, info.in_size))
    hi = min((o + 1) / i for o, i in zip(info.out_size, info.in_size))
    for ratio in ((lo + hi) / 2, lo):
        try:
            mix.set_scale(ratio)
        except ValueError:
            continue
        if tuple(mix.output_size(info.in_size)) == tuple(info.out_size):
            return ratio
    with torch.no_grad():
        mix.alpha.copy_(default)
    return None
