"""Networks of the multi-resolution-block paper (WACV submission 832) ("CNNs without pooling or fixed filter sizes") and their baselines.

* :class:`MultiResNet` -- ``num_layers`` (L, default 10) multi-resolution blocks
  (:class:`poolarch.layers.multires.MultiResBlock`) of ``channels`` (C, default 64) channels, global
  average pooling and one linear classifier. ``block="conv"``: Conv3x3-ReLU-BN (Sec. 4.1);
  ``block="mbconv"``: MBConv6 with squeeze-excitation ("Eff-Conv", Table 4). The net runs at full
  resolution throughout; resolutions only change inside the pooled branches of each block.
  ``learn_depth=True``: the classifier reads ``sum_l softmax(beta)_l * GAP(h_l)`` (Eq. 6; GAP is
  linear, so this equals GAP of the beta-weighted sum of the layer outputs).
* :class:`PoolingCNN` -- an ordinary CNN with one resolution per layer (a *schedule*: layer ``l``
  runs at level ``s_l``, i.e. ``2**-s_l`` of the input size), pooling where the level rises and
  (only for non-monotone schedules, ``on_rise="upsample"``) upsampling where it falls. It is the
  "one resolution" export (:func:`export_one_resolution`), and the "no pooling" (all zeros) and
  "predefined pooling" (:func:`predefined_schedule`) baselines.

Registered names (``poolarch.models.create_model``) and their kwargs:

* ``multires_net`` / ``multires_effconv`` / ``multires_scale_invariant`` (uniform fixed weights):
  ``channels``, ``num_layers``, ``resolutions`` (R, default 3), ``learn_depth`` (bool),
  ``upsample`` ("nearest"|"bilinear"), ``temperature``, ``share_weights``, ``first_layer_full_res``,
  ``block`` ("conv"|"mbconv"); ``pool`` ("max"|"avg") is the pooling of the branches.
* ``pool="human"`` (the builders' default) is ``"max"`` for all of them: the paper names pooling
  without the operator; poolarch pools with 2x max-pooling (as its predefined-pooling baseline and
  the search spaces of Javan et al. 2023). ``"strided"`` and the learnable kinds are refused.
* ``multires_no_pool``, ``multires_predefined`` (``every``: layers per resolution, default 3),
  ``multires_one_res`` (``schedule``: list of levels, required): ``channels``, ``num_layers``,
  ``resolutions``, ``block``, ``learn_depth``, ``pool``.

After training: :meth:`MultiResNet.prune` (threshold; kept weights renormalise),
:meth:`MultiResNet.keep_argmax`, :func:`export_one_resolution`; :func:`plot_multires` draws the
alpha heat-map (layers x resolutions, Fig. 3) and the learned depth weights.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from .._validate import check_choice, check_int
from ..plots import plot_mixing_weights
from ..layers.factory import HUMAN, resolve_pool
from ..layers.multires import POOL_MODES, UPSAMPLE_MODES, MultiResBlock
from ._blocks import MBConv, ConvNormAct, SqueezeExcite
from .registry import register_model

__all__ = [
    "conv_relu_bn",
    "MBConv",
    "SqueezeExcite",
    "make_block",
    "DepthMixing",
    "MultiResNet",
    "PoolingCNN",
    "predefined_schedule",
    "export_one_resolution",
    "plot_multires",
    "architecture_from_metrics",
    "BLOCK_KINDS",
]

BLOCK_KINDS = ("conv", "mbconv")


# -- blocks ----------------------------------------------------------------------------------
def conv_relu_bn(in_chans: int, out_chans: int) -> nn.Sequential:
    """Conv3x3 (padding 1, with bias) -> ReLU -> BatchNorm: the basic block of the multi-resolution-block paper (WACV submission 832) Sec. 4.1."""
    return ConvNormAct(in_chans, out_chans, 3, order="conv-relu-bn", bias=True)


def make_block(kind: str, in_chans: int, out_chans: int) -> nn.Module:
    """``"conv"``: :func:`conv_relu_bn`; ``"mbconv"``: :class:`MBConv` (expansion 6, SE)."""
    if kind == "conv":
        return conv_relu_bn(in_chans, out_chans)
    if kind == "mbconv":
        return MBConv(in_chans, out_chans)
    raise ValueError(f"block must be one of {BLOCK_KINDS}, got {kind!r}")


class DepthMixing(nn.Module):
    """Learned depth (Eq. 6): ``sum_l softmax(beta)_l * taps[l]``; ``beta`` starts uniform.
    Input: a list of ``L`` tensors of equal shape; output: one tensor of that shape."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(num_layers))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.beta]

    def weights(self) -> Tensor:
        return torch.softmax(self.beta, dim=0)

    def learned_depth(self) -> int:
        """The layer (1-based) the classifier relies on most: ``argmax_l beta_l + 1``."""
        return int(torch.argmax(self.beta)) + 1

    def forward(self, taps: Sequence[Tensor]) -> Tensor:
        if len(taps) != self.beta.numel():
            raise ValueError(f"taps must have {self.beta.numel()} entries, got {len(taps)}")
        w = self.weights()
        return sum(w[i].to(t.dtype) * t for i, t in enumerate(taps))

    def extra_repr(self) -> str:
        return f"layers={self.beta.numel()}, learned_depth={self.learned_depth()}"


def _classify(layers: Sequence[nn.Module], depth: DepthMixing | None, head: nn.Linear, x: Tensor) -> Tensor:
    """Run ``layers``; the head reads GAP of the last layer, or the beta mix of every layer's GAP."""
    taps = []
    for layer in layers:
        x = layer(x)
        if depth is not None:
            taps.append(x.mean((2, 3)))
    return head(depth(taps) if depth is not None else x.mean((2, 3)))


# -- the multi-resolution network -----------------------------------------------------------
class MultiResNet(nn.Module):
    """L-layer, C-channel multi-resolution network (the multi-resolution-block paper (WACV submission 832)). See the module docstring.

    Args:
        num_classes, in_chans: classifier outputs and input channels.
        channels: C, channels of every layer.
        num_layers: L.
        resolutions: R per block (levels ``0 .. R-1``).
        block: ``"conv"`` (Conv-ReLU-BN) or ``"mbconv"`` (Eff-Conv).
        pool, upsample, temperature, mixing, share_weights: see :class:`MultiResBlock`
            (``mixing="uniform"`` is the *scale invariant* baseline).
        learn_depth: Eq. 6 (``beta`` over the L layer outputs).
        first_layer_full_res: the first layer has one resolution (Javan et al. 2023 appendix C).

    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``; ``H, W`` divisible by ``2**(R-1)`` make
    the one-resolution export exact.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        channels: int = 64,
        num_layers: int = 10,
        resolutions: int = 3,
        block: str = "conv",
        pool: str = "max",
        upsample: str = "nearest",
        temperature: float = 1.0,
        mixing: str = "learned",
        learn_depth: bool = False,
        share_weights: bool = True,
        first_layer_full_res: bool = False,
    ) -> None:
        super().__init__()
        for value, name in ((num_classes, "num_classes"), (in_chans, "in_chans"), (channels, "channels"), (num_layers, "num_layers")):
            check_int(value, name, 1)
        check_int(resolutions, "resolutions", 1)
        check_choice(block, BLOCK_KINDS, "block")
        self.block_kind = block
        self.channels = channels
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.resolutions = resolutions
        self.layers = nn.ModuleList(
            MultiResBlock(
                make_block(block, in_chans if i == 0 else channels, channels),
                resolutions=1 if (i == 0 and first_layer_full_res) else resolutions,
                pool=pool,
                upsample=upsample,
                temperature=temperature,
                mixing=mixing,
                share_weights=share_weights,
            )
            for i in range(num_layers)
        )
        self.depth = DepthMixing(num_layers) if learn_depth else None
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        self._last_in_size = tuple(int(v) for v in x.shape[2:])
        return _classify(self.layers, self.depth, self.head, x)

    def feature_sizes(self) -> list[tuple[int, ...]]:
        """Sizes a report lists (Jang et al. 2023 Table 1 style) once every layer runs at one resolution
        (after :meth:`keep_argmax`, or pruning down to one branch): the size at each change of
        level, ``ceil(H / 2^level)`` of the last forward's input. ``[]`` while some layer still
        mixes several resolutions, or before the first forward."""
        in_size = getattr(self, "_last_in_size", None)
        levels = [layer.active_levels() for layer in self.layers]
        if in_size is None or any(len(active) != 1 for active in levels):
            return []
        sizes, previous = [], 0
        for (level,) in levels:
            if level != previous:
                sizes.append(tuple(-(-n // 2**level) for n in in_size))
                previous = level
        return sizes

    # -- architecture ------------------------------------------------------------------
    def resolution_weights(self) -> Tensor:
        """``(L, R)`` mixing weights (0 for pruned or absent resolutions), detached."""
        out = torch.zeros(len(self.layers), self.resolutions)
        for i, layer in enumerate(self.layers):
            out[i, : layer.resolutions] = layer.weights().detach().float().cpu()
        return out

    def schedule(self) -> list[int]:
        """Level of the largest weight per layer (the "one resolution" choice)."""
        return [int(torch.argmax(layer.weights())) for layer in self.layers]

    def prune(self, threshold: float) -> dict[int, list[int]]:
        """Remove, per layer, resolutions with weight ``< threshold`` (kept weights renormalise).
        Returns ``{layer index: removed levels}``."""
        return {i: layer.prune(threshold) for i, layer in enumerate(self.layers)}

    def keep_argmax(self) -> list[int]:
        """Keep only the largest-weight resolution of every layer; returns the schedule."""
        return [layer.keep_only() for layer in self.layers]

    def architecture(self) -> dict[str, Any]:
        """Plain-Python record of the learned architecture (for YAML and :func:`plot_multires`)."""
        weights = self.resolution_weights()
        arch: dict[str, Any] = {
            "kind": "multires",
            "block": self.block_kind,
            "resolutions": self.resolutions,
            "num_layers": len(self.layers),
            "alpha": [[round(float(v), 6) for v in row] for row in weights],
            "active": [[bool(layer.active[r]) if r < layer.resolutions else False for r in range(self.resolutions)] for layer in self.layers],
            "schedule": self.schedule(),
        }
        if self.depth is not None:
            beta = self.depth.weights().detach().float().cpu()
            arch["depth_weights"] = [round(float(v), 6) for v in beta]
            arch["learned_depth"] = self.depth.learned_depth()
            arch["expected_depth"] = round(float((beta * torch.arange(1, beta.numel() + 1)).sum()), 4)
        return arch


# -- ordinary CNNs: one resolution per layer -------------------------------------------------
def predefined_schedule(num_layers: int = 10, resolutions: int = 3, every: int = 3) -> list[int]:
    """The rule of thumb of the multi-resolution-block paper (WACV submission 832) Sec. 4.2: the resolution halves every ``every`` layers,
    never below level ``resolutions - 1``. ``(10, 3, 3) -> [0,0,0,1,1,1,2,2,2,2]``."""
    check_int(num_layers, "num_layers", 1)
    check_int(resolutions, "resolutions", 1)
    check_int(every, "every", 1)
    return [min(i // every, resolutions - 1) for i in range(num_layers)]


def _resize_between(prev: int, level: int, pool: str, upsample: str, on_rise: str) -> nn.Module | None:
    if level > prev:
        k = 2 ** (level - prev)
        return nn.MaxPool2d(k, k, ceil_mode=True) if pool == "max" else nn.AvgPool2d(k, k, ceil_mode=True)
    if level < prev:
        if on_rise == "error":
            raise ValueError(f"schedule must be non-decreasing with on_rise='error' (level {prev} -> {level})")
        if upsample == "nearest":
            return nn.Upsample(scale_factor=2 ** (prev - level), mode="nearest")
        return nn.Upsample(scale_factor=2 ** (prev - level), mode="bilinear", align_corners=False)
    return None


class PoolingCNN(nn.Module):
    """Ordinary CNN with one resolution per layer: layer ``l`` is ``[resize] + block`` where the
    resize pools by ``2**(s_l - s_{l-1})`` when the level rises (``s_{-1} = 0``) and -- only for
    schedules that go back to a finer level -- upsamples (``on_rise="upsample"``) or raises
    (``on_rise="error"``). GAP + linear head (or the Eq. 6 depth mix with ``learn_depth``).

    Shapes: ``(N, in_chans, H, W) -> (N, num_classes)``.
    """

    def __init__(
        self,
        schedule: Sequence[int],
        num_classes: int = 10,
        in_chans: int = 3,
        channels: int = 64,
        block: str = "conv",
        pool: str = "max",
        upsample: str = "nearest",
        learn_depth: bool = False,
        on_rise: str = "upsample",
    ) -> None:
        super().__init__()
        if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence) or not schedule:
            raise TypeError(f"schedule must be a non-empty sequence of ints >= 0, got {schedule!r}")
        for s in schedule:
            check_int(s, "schedule entries", 0)
        check_choice(pool, POOL_MODES, "pool")
        check_choice(upsample, UPSAMPLE_MODES, "upsample")
        check_choice(on_rise, ("upsample", "error"), "on_rise")
        check_int(channels, "channels", 1)
        self.schedule = [int(s) for s in schedule]
        layers = []
        prev = 0
        for i, level in enumerate(self.schedule):
            resize = _resize_between(prev, level, pool, upsample, on_rise)
            blk = make_block(block, in_chans if i == 0 else channels, channels)
            layers.append(nn.Sequential(resize, blk) if resize is not None else nn.Sequential(blk))
            prev = level
        self.layers = nn.ModuleList(layers)
        self.depth = DepthMixing(len(layers)) if learn_depth else None
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return _classify(self.layers, self.depth, self.head, x)

    def architecture(self) -> dict[str, Any]:
        arch: dict[str, Any] = {"kind": "pooling_cnn", "schedule": list(self.schedule)}
        if self.depth is not None:
            arch["depth_weights"] = [round(float(v), 6) for v in self.depth.weights().detach().cpu()]
            arch["learned_depth"] = self.depth.learned_depth()
        return arch

    def extra_repr(self) -> str:
        return f"schedule={self.schedule}"


def export_one_resolution(model: MultiResNet, copy_weights: bool = True, on_rise: str = "upsample") -> PoolingCNN:
    """"One resolution" (the multi-resolution-block paper (WACV submission 832) Table 1 row 7): keep the largest-weight resolution of each
    layer and build the ordinary CNN that computes it -- pooling where the level rises, no
    upsample-and-sum. Non-monotone choices (a finer level after a coarser one, Javan et al. 2023 Fig. 4a)
    get an ``nn.Upsample`` (``on_rise="upsample"``) or raise (``"error"``).

    With ``copy_weights`` the trained blocks (and ``beta``) are copied; then, in eval mode, with
    nearest upsampling and input sizes divisible by ``2**(R-1)``, the export computes exactly what
    ``model`` computes after :meth:`MultiResNet.keep_argmax`. ``model`` is not modified.
    """
    if not isinstance(model, MultiResNet):
        raise TypeError(f"model must be a MultiResNet, got {type(model).__name__}")
    schedule = model.schedule()
    first = model.layers[0]
    plain = PoolingCNN(
        schedule,
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        channels=model.channels,
        block=model.block_kind,
        pool=first.pool,
        upsample=first.upsample,
        learn_depth=model.depth is not None,
        on_rise=on_rise,
    )
    if copy_weights:
        with torch.no_grad():
            for layer, target, level in zip(model.layers, plain.layers, schedule):
                target[-1].load_state_dict(layer.block_at(level).state_dict())
            plain.head.load_state_dict(model.head.state_dict())
            if model.depth is not None:
                plain.depth.load_state_dict(model.depth.state_dict())
    return plain.to(next(model.parameters()).device)


def architecture_from_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild the :meth:`MultiResNet.architecture` fields ``alpha`` / ``schedule`` /
    ``depth_weights`` / ``learned_depth`` from a metrics row of the ``multires`` method
    (columns ``alpha/l{l}_r{r}``, ``beta/l{l}``, ``learned_depth``; see
    :meth:`poolarch.train.multires_method.MultiResMethod.metrics`)."""
    import re

    cells: dict[tuple[int, int], float] = {}
    betas: dict[int, float] = {}
    for key, value in row.items():
        m = re.fullmatch(r"alpha/l(\d+)_r(\d+)", str(key))
        if m and value not in (None, ""):
            cells[(int(m.group(1)), int(m.group(2)))] = float(value)
        m = re.fullmatch(r"beta/l(\d+)", str(key))
        if m and value not in (None, ""):
            betas[int(m.group(1))] = float(value)
    if not cells:
        raise ValueError("row has no 'alpha/l{l}_r{r}' entries")
    num_layers = max(l for l, _ in cells)
    resolutions = max(r for _, r in cells) + 1
    alpha = [[cells.get((l, r), 0.0) for r in range(resolutions)] for l in range(1, num_layers + 1)]
    arch: dict[str, Any] = {
        "kind": "multires",
        "resolutions": resolutions,
        "num_layers": num_layers,
        "alpha": alpha,
        "schedule": [max(range(resolutions), key=lambda r: a[r]) for a in alpha],
    }
    if betas:
        arch["depth_weights"] = [betas.get(l, 0.0) for l in range(1, max(betas) + 1)]
        arch["learned_depth"] = int(row.get("learned_depth") or 0) or None
    return arch


# -- plots -----------------------------------------------------------------------------------
def plot_multires(model_or_arch: MultiResNet | Mapping[str, Any], path: str) -> str:
    """Draw the mixing weights as a layers x resolutions heat-map (the multi-resolution-block paper (WACV submission 832) Fig. 3) and, when
    depth is learned, the depth weights ``softmax(beta)`` per layer (drawn by
    :func:`poolarch.plots.plot_mixing_weights`). Writes a PNG to ``path``.

    ``model_or_arch``: a :class:`MultiResNet` or its :meth:`~MultiResNet.architecture` record
    (e.g. loaded from a run's ``architecture.yaml``)."""
    if isinstance(model_or_arch, MultiResNet):
        arch = model_or_arch.architecture()
    elif isinstance(model_or_arch, Mapping) and "alpha" in model_or_arch:
        arch = dict(model_or_arch)
    elif isinstance(model_or_arch, Mapping) and any(str(k).startswith("alpha/") for k in model_or_arch):
        arch = architecture_from_metrics(model_or_arch)
    else:
        raise ValueError(
            "model_or_arch must be a MultiResNet, a MultiResNet.architecture() record or a metrics row "
            "with 'alpha/l{l}_r{r}' columns"
        )
    return str(plot_mixing_weights(arch["alpha"], path, arch.get("depth_weights"), arch.get("learned_depth")))


# -- registry ---------------------------------------------------------------------------------
_MULTIRES_NET_KEYS = (
    "channels",
    "num_layers",
    "resolutions",
    "block",
    "upsample",
    "temperature",
    "learn_depth",
    "share_weights",
    "first_layer_full_res",
)
_POOLING_CNN_KEYS = ("channels", "block", "upsample", "learn_depth")


MULTIRES_HUMAN_POOL = "max"  # what pool="human" means for the multi-resolution models


def _check_common(pool: str, init_scales: Any, kwargs: Mapping[str, Any], allowed: Sequence[str]) -> str:
    """The concrete branch pooling (``"human"`` resolved) after checking the common arguments."""
    pool = resolve_pool(pool, MULTIRES_HUMAN_POOL, POOL_MODES)
    if init_scales is not None:
        raise ValueError("init_scales is not supported by multi-resolution models (no learnable resizers)")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"unknown model argument(s) {unknown}; allowed: {sorted(allowed)}")
    return pool


def _multires_builder(defaults: Mapping[str, Any]):
    def build(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales: Any = None, **kwargs: Any) -> MultiResNet:
        pool = _check_common(pool, init_scales, kwargs, _MULTIRES_NET_KEYS)
        return MultiResNet(num_classes=num_classes, in_chans=in_chans, pool=pool, **{**defaults, **kwargs})

    return build


def _pooling_builder(kind: str):
    def build(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales: Any = None, **kwargs: Any) -> PoolingCNN:
        extra = {"no_pool": ("num_layers",), "predefined": ("num_layers", "resolutions", "every"), "one_res": ("schedule", "resolutions", "num_layers")}[kind]
        pool = _check_common(pool, init_scales, kwargs, _POOLING_CNN_KEYS + extra)
        num_layers = kwargs.pop("num_layers", 10)
        if kind == "no_pool":
            schedule = [0] * check_int(num_layers, "num_layers", 1)
        elif kind == "predefined":
            schedule = predefined_schedule(num_layers, kwargs.pop("resolutions", 3), kwargs.pop("every", 3))
        else:
            if "schedule" not in kwargs:
                raise ValueError("multires_one_res needs schedule= (levels per layer, e.g. [0,0,1,1,2])")
            schedule = kwargs.pop("schedule")
            kwargs.pop("resolutions", None)
            kwargs.pop("num_layers", None)
        return PoolingCNN(schedule, num_classes=num_classes, in_chans=in_chans, pool=pool, **kwargs)

    return build


REGISTERED_MODELS = {
    "multires_net": _multires_builder({"block": "conv"}),
    "multires_effconv": _multires_builder({"block": "mbconv"}),
    "multires_scale_invariant": _multires_builder({"block": "conv", "mixing": "uniform"}),
    "multires_no_pool": _pooling_builder("no_pool"),
    "multires_predefined": _pooling_builder("predefined"),
    "multires_one_res": _pooling_builder("one_res"),
}


for _name, _builder in REGISTERED_MODELS.items():
    register_model(_name, input_size=32)(_builder)  # the paper's CIFAR-10 networks
