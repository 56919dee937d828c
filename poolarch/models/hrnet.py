"""HRNet for semantic segmentation, with learnable resizing (Jang et al. 2023 Sec. 5.5, appendix A.1).

Layout (Wang et al., TPAMI 2019): a stem of two stride-2 3x3 convolutions, then stages with 1, 2,
3, 4 parallel streams, each stream at half the resolution of the previous one; *fuse* layers
exchange information between streams (down: chains of stride-2 3x3 convs; up: 1x1 conv +
bilinear upsampling); the segmentation head upsamples every stream to the first one, concatenates
and classifies, and the logits are upsampled to the input size.

Resizing (``pool=``):

* ``"human"`` (the default) = ``"strided"``: the network as Wang et al. built it (stride-2
  convolutions; HRNet-W48 at 480x480: 82.55 GMACs, Jang et al. 2023 Table 4).
* any learnable or fixed kind of :func:`poolarch.layers.make_pool` (``"dynopool"``, ...): rule C of
  the paper -- every ``Conv_s`` becomes ``Conv_1 o Resize_s``. There is exactly **one** resizer per
  resolution step (two in the stem, one per additional stream), kept in ``model.resizers``;
  every place that produces stream ``k`` from stream ``k-1`` calls ``model.resizers[k]``, so all
  paths into a stream always meet at the same size. Upsampling stays bilinear, sized to the actual
  (learned) size of the target stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import check_int
from ..layers.factory import HUMAN, STRIDED, make_pool, resolve_pool
from ._blocks import BasicBlock, Bottleneck, ConvNormAct
from .registry import register_model

__all__ = ["HRNetSpec", "HRNet", "hrnet_w48", "hrnet_w18_small", "HRNET_SPECS"]

@dataclass(frozen=True)
class HRNetSpec:
    """Widths and depths of an HRNet.

    Attributes:
        widths: channels of streams 1..4 (W48: 48, 96, 192, 384).
        stage1_planes: bottleneck planes of stage 1 (output ``4 * stage1_planes`` channels).
        stage1_blocks: bottleneck blocks in stage 1.
        modules: number of multi-resolution modules in stages 2, 3, 4.
        blocks: basic blocks per branch in every module of stages 2, 3, 4.
        stem_width: channels of the stem convolutions.
    """

    widths: tuple[int, ...] = (48, 96, 192, 384)
    stage1_planes: int = 64
    stage1_blocks: int = 4
    modules: tuple[int, ...] = (1, 4, 3)
    blocks: tuple[int, ...] = (4, 4, 4)
    stem_width: int = 64

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or len(self.modules) != len(self.widths) - 1 or len(self.blocks) != len(self.modules):
            raise ValueError(
                "HRNetSpec: widths must list >= 2 streams and modules/blocks one entry per stage after the "
                f"first (len(widths) - 1 = {len(self.widths) - 1}), got widths={self.widths}, "
                f"modules={self.modules}, blocks={self.blocks}"
            )


HRNET_SPECS = {
    "hrnet_w48": HRNetSpec(),
    "hrnet_w18_small": HRNetSpec(widths=(18, 36, 72, 144), stage1_planes=32, stage1_blocks=1, modules=(1, 1, 1), blocks=(2, 2, 2)),
}


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> ConvNormAct:
    return ConvNormAct(cin, cout, kernel, stride, act=nn.ReLU if relu else None)


class _DownPath(nn.Module):
    """Stream ``src`` -> stream ``dst > src``: ``dst - src`` steps of (resize, 3x3 conv, BN[, ReLU]).

    With ``pooled=False`` each step is a stride-2 conv; otherwise a stride-1 conv after the shared
    resizer of the stream the step enters (passed to :meth:`forward`)."""

    def __init__(self, src: int, dst: int, cin: int, cout: int, mid: int, pooled: bool, relu_last: bool) -> None:
        super().__init__()
        self.steps = list(range(src + 1, dst + 1))
        self.pooled = pooled
        convs = []
        for i, _ in enumerate(self.steps):
            last = i == len(self.steps) - 1
            convs.append(
                _conv_bn(cin if i == 0 else mid, cout if last else mid, 3, 1 if pooled else 2, relu=relu_last or not last)
            )
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor, resizers: nn.ModuleList) -> Tensor:
        for stream, conv in zip(self.steps, self.convs):
            if self.pooled:
                x = resizers[stream + 1](x)  # resizers[0:2] are the stem's; stream k uses k + 1
            x = conv(x)
        return x


class _UpPath(nn.Module):
    """Stream ``src`` -> stream ``dst < src``: 1x1 conv + BN, then bilinear resize to ``size``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = _conv_bn(cin, cout, 1, relu=False)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(self.conv(x), size=tuple(size), mode="bilinear", align_corners=False)


class _HRModule(nn.Module):
    """Parallel branches of basic blocks followed by all-to-all fusion."""

    def __init__(self, widths: Sequence[int], num_blocks: int, pooled: bool) -> None:
        super().__init__()
        n = len(widths)
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(w, w) for _ in range(num_blocks)]) for w in widths)
        fuse: dict[str, nn.Module] = {}
        for dst in range(n):
            for src in range(n):
                if src > dst:
                    fuse[f"{src}_{dst}"] = _UpPath(widths[src], widths[dst])
                elif src < dst:
                    fuse[f"{src}_{dst}"] = _DownPath(src, dst, widths[src], widths[dst], widths[src], pooled, relu_last=False)
        self.fuse = nn.ModuleDict(fuse)
        self.num_streams = n

    def forward(self, xs: list[Tensor], resizers: nn.ModuleList) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for dst in range(self.num_streams):
            total = xs[dst]
            for src in range(self.num_streams):
                if src > dst:
                    total = total + self.fuse[f"{src}_{dst}"](xs[src], xs[dst].shape[2:])
                elif src < dst:
                    total = total + self.fuse[f"{src}_{dst}"](xs[src], resizers)
            out.append(F.relu(total))
        return out


class HRNet(nn.Module):
    """HRNet segmentation network; output logits ``(N, num_classes, H, W)`` at the input size.

    Args:
        spec: widths and depths (:data:`HRNET_SPECS`).
        num_classes: segmentation classes (PASCAL VOC: 21).
        pool: ``"human"`` = ``"strided"`` (the authors' design) or a kind of
            :func:`poolarch.layers.make_pool` (rule C).
        in_chans: input channels.
        init_scales: optional initial scale of every resizer (one number) or per resizer
            (``2 + streams - 1`` entries: stem 1, stem 2, stream 2, ...); default 0.5 everywhere.
    """

    def __init__(
        self,
        spec: HRNetSpec = HRNetSpec(),
        num_classes: int = 21,
        pool: str = HUMAN,
        in_chans: int = 3,
        init_scales: Sequence[float | tuple[float, float]] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(spec, HRNetSpec):
            raise TypeError(f"spec must be an HRNetSpec, got {type(spec).__name__}")
        check_int(num_classes, "num_classes", 1)
        check_int(in_chans, "in_chans", 1)
        self.spec = spec
        self.pool = pool = resolve_pool(pool, STRIDED)
        widths = spec.widths
        n_resizers = 2 + len(widths) - 1
        self.pooled = pool != STRIDED
        if isinstance(init_scales, (int, float)) and not isinstance(init_scales, bool):
            init_scales = [init_scales] * n_resizers  # one number: every resizer
        if init_scales is not None and len(init_scales) != n_resizers:
            raise ValueError(f"init_scales must have {n_resizers} entries (stem 1, stem 2, streams 2..), got {len(init_scales)}")
        if self.pooled:
            self.resizers = nn.ModuleList(
                make_pool(pool, 2, init_scale=None if init_scales is None else init_scales[i]) for i in range(n_resizers)
            )
        else:
            if init_scales is not None:
                raise ValueError("init_scales needs a resizing layer: pool='strided' has none")
            self.resizers = nn.ModuleList()
        stride = 1 if self.pooled else 2
        self.stem = nn.ModuleList(
            [_conv_bn(in_chans, spec.stem_width, 3, stride), _conv_bn(spec.stem_width, spec.stem_width, 3, stride)]
        )
        planes = spec.stage1_planes
        blocks = [Bottleneck(spec.stem_width, 4 * planes, mid=planes)]
        blocks += [Bottleneck(4 * planes, 4 * planes, mid=planes) for _ in range(spec.stage1_blocks - 1)]
        self.stage1 = nn.Sequential(*blocks)

        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev = [4 * spec.stage1_planes]
        for stage, (n_modules, n_blocks) in enumerate(zip(spec.modules, spec.blocks), start=2):
            cur = list(widths[:stage])
            trans = nn.ModuleList()
            for i, w in enumerate(cur):
                if i < len(prev):
                    trans.append(nn.Identity() if prev[i] == w else _conv_bn(prev[i], w, 3))
                else:  # new stream from the last existing one
                    trans.append(_DownPath(len(prev) - 1, i, prev[-1], w, prev[-1], self.pooled, relu_last=True))
            self.transitions.append(trans)
            self.stages.append(nn.ModuleList(_HRModule(cur, n_blocks, self.pooled) for _ in range(n_modules)))
            prev = cur
        total = sum(widths)
        self.head = nn.Sequential(_conv_bn(total, total, 1), nn.Conv2d(total, num_classes, 1))

    @property
    def stage_strides(self) -> list[int]:
        """Reduction of the stem steps and of each stream relative to the previous one (human design)."""
        return [2] * (2 + len(self.spec.widths) - 1)

    def _stem_step(self, i: int, x: Tensor) -> Tensor:
        if self.pooled:
            x = self.resizers[i](x)
        return self.stem[i](x)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stream outputs, highest resolution first."""
        stem1 = self._stem_step(0, x)
        x = self._stem_step(1, stem1)
        xs = [self.stage1(x)]
        for trans, modules in zip(self.transitions, self.stages):
            xs = [
                t(xs[i]) if i < len(xs) else t(xs[-1], self.resizers)
                for i, t in enumerate(trans)
            ]
            for module in modules:
                xs = module(xs, self.resizers)
        self._last_sizes = [tuple(stem1.shape[2:])] + [tuple(f.shape[2:]) for f in xs]
        return xs

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[2:]
        xs = self.forward_features(x)
        top = xs[0].shape[2:]
        feats = [xs[0]] + [F.interpolate(f, size=top, mode="bilinear", align_corners=False) for f in xs[1:]]
        logits = self.head(torch.cat(feats, dim=1))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def stream_sizes(self) -> list[tuple[int, ...]]:
        """Spatial sizes after the last forward, as Jang et al. 2023 Table 4 lists them: the first stem
        step, then every stream (stream 1 = second stem step), highest resolution first.
        Empty before the first forward."""
        return list(getattr(self, "_last_sizes", []))

    def feature_sizes(self) -> list[tuple[int, ...]]:
        """What a report lists after the input (Jang et al. 2023 Table 4): :meth:`stream_sizes`."""
        return self.stream_sizes()


def _build(name: str, num_classes: int = 21, pool: str = HUMAN, in_chans: int = 3, init_scales=None, **overrides) -> HRNet:
    base = HRNET_SPECS[name]
    spec = HRNetSpec(**{**base.__dict__, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}})
    return HRNet(spec, num_classes=num_classes, pool=pool, in_chans=in_chans, init_scales=init_scales)


@register_model("hrnet_w48", input_size=480)
def hrnet_w48(num_classes: int = 21, pool: str = HUMAN, in_chans: int = 3, init_scales=None, **overrides) -> HRNet:
    """HRNet-W48 (Jang et al. 2023 Table 4 backbone). ``overrides``: any :class:`HRNetSpec` field."""
    return _build("hrnet_w48", num_classes, pool, in_chans, init_scales, **overrides)


@register_model("hrnet_w18_small", input_size=480)
def hrnet_w18_small(num_classes: int = 21, pool: str = HUMAN, in_chans: int = 3, init_scales=None, **overrides) -> HRNet:
    """HRNet-W18-Small-v1. ``overrides``: any :class:`HRNetSpec` field."""
    return _build("hrnet_w18_small", num_classes, pool, in_chans, init_scales, **overrides)
