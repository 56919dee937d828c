"""Building blocks shared by every network of the package (zoo, HRNet, search supernets,
multi-resolution nets): conv/norm/activation units, ResNet basic/bottleneck blocks, squeeze-excitation,
inverted residuals (MobileNetV2 / MBConv) and the classifier head.

A block that downsamples takes the resizing layer as an argument (``resize=``): with it, the
convolutions run at stride 1 and the block calls the resizer where the strided conv was (rule B of
Jang et al. 2023, A.1); without it, the conv strides (the human design). A residual block may instead
take a *residual resizer* (``mix=``, e.g. Shape Adaptor's residual form, Liu et al. 2020): the main path
runs at stride 1, the shortcut keeps its strided 1x1 projection, and ``mix(shortcut(x), main(x))``
replaces the sum.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "ConvNormAct",
    "ClassifierHead",
    "BasicBlock",
    "Bottleneck",
    "SqueezeExcite",
    "InvertedResidual",
    "MBConv",
    "ORDERS",
    "scaled_width",
]

ORDERS = ("conv-bn-relu", "conv-relu-bn")


def scaled_width(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


class ConvNormAct(nn.Sequential):
    """``kxk`` convolution with BatchNorm and an activation, in the order ``order``
    (children ``0, 1, 2``: conv, then BN/act as ordered; no activation with ``act=None``).

    Shapes: ``(N, in_ch, H, W) -> (N, out_ch, ceil(H / stride), ceil(W / stride))`` for odd ``kernel``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        order: str = "conv-bn-relu",
        act: type[nn.Module] | None = nn.ReLU,
        bias: bool = False,
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=bias)
        bn = nn.BatchNorm2d(out_ch)
        layers: list[nn.Module] = [conv]
        activation = [act()] if act is not None else []
        layers += [bn, *activation] if order == "conv-bn-relu" else [*activation, bn]
        super().__init__(*layers)


class ClassifierHead(nn.Module):
    """Global average pooling and one fully-connected layer: ``(N, C, H, W) -> (N, num_classes)``."""

    def __init__(self, in_ch: int, num_classes: int) -> None:
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.global_pool(x).flatten(1))


class _Shortcut(nn.Sequential):
    """Identity (no children), or ``[resize] -> 1x1 conv (stride) -> BN`` when the block changes size
    or width; the resizer goes first (a 1x1 conv commutes with subsampling, so this is the cheap order)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, resize: nn.Module | None) -> None:
        layers: list[nn.Module] = []
        if resize is not None:
            layers.append(resize)
        if in_ch != out_ch or (stride > 1 and resize is None):
            layers += [nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)]
        super().__init__(*layers)


def _check_mix(mix: nn.Module | None, resize: nn.Module | None, resize_shortcut: nn.Module | None,
               stride: int) -> None:
    """A residual resizer replaces both resizers and needs a downsampling block."""
    if mix is None:
        return
    if resize is not None or resize_shortcut is not None:
        raise ValueError("mix (a residual resizer) replaces resize and resize_shortcut: pass one or the other")
    if stride < 2:
        raise ValueError(f"mix needs a downsampling block (stride >= 2), got stride={stride}")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN (ReLU after the first) + shortcut, ReLU after the sum (He et al. 2016).

    ``resize``/``resize_shortcut`` given: the first conv runs at stride 1 and ``resize`` follows its
    ReLU, ``resize_shortcut`` precedes the projection; otherwise the first conv strides by ``stride``.
    ``mix`` given (a residual resizer, ``forward(shortcut, main)``; not with ``resize``): both convs
    run at stride 1, the shortcut is the strided 1x1 projection + BN, and the output is
    ``relu(mix(shortcut(x), main(x)))`` (Shape Adaptor's residual blocks, Liu et al. 2020).
    Shapes: ``(N, in_ch, H, W) -> (N, out_ch, H', W')``.
    """

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, resize: nn.Module | None = None,
                 resize_shortcut: nn.Module | None = None, mix: nn.Module | None = None) -> None:
        super().__init__()
        _check_mix(mix, resize, resize_shortcut, stride)
        conv_stride = 1 if resize is not None or mix is not None else stride
        self.conv1 = ConvNormAct(in_ch, out_ch, 3, conv_stride)
        self.resize = resize if resize is not None else nn.Identity()
        self.conv2 = ConvNormAct(out_ch, out_ch, 3, 1, act=None)
        self.shortcut = _Shortcut(in_ch, out_ch, 1 if resize is not None else stride, resize_shortcut)
        self.mix = mix
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        main = self.conv2(self.resize(self.conv1(x)))
        if self.mix is not None:
            return self.act(self.mix(self.shortcut(x), main))
        return self.act(main + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 (``mid``) -> 3x3 (``mid``, carries the stride: torchvision "v1.5") -> 1x1 (``out_ch``), BN
    after each, ReLU after the first two and after the sum with the shortcut.

    ``mid`` defaults to ``out_ch // 4`` (at least 1). ``resize``/``resize_shortcut``/``mix`` as in
    :class:`BasicBlock` (the resizer follows the 3x3 conv's ReLU; with ``mix`` every conv runs at
    stride 1 and ``mix`` replaces the sum).
    """

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, resize: nn.Module | None = None,
                 resize_shortcut: nn.Module | None = None, mid: int | None = None,
                 mix: nn.Module | None = None) -> None:
        super().__init__()
        _check_mix(mix, resize, resize_shortcut, stride)
        mid = mid if mid is not None else max(out_ch // self.expansion, 1)
        conv_stride = 1 if resize is not None or mix is not None else stride
        self.conv1 = ConvNormAct(in_ch, mid, 1)
        self.conv2 = ConvNormAct(mid, mid, 3, conv_stride)
        self.resize = resize if resize is not None else nn.Identity()
        self.conv3 = ConvNormAct(mid, out_ch, 1, act=None)
        self.shortcut = _Shortcut(in_ch, out_ch, 1 if resize is not None else stride, resize_shortcut)
        self.mix = mix
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        main = self.conv3(self.resize(self.conv2(self.conv1(x))))
        if self.mix is not None:
            return self.act(self.mix(self.shortcut(x), main))
        return self.act(main + self.shortcut(x))


class SqueezeExcite(nn.Module):
    """Channel gating ``x * sigmoid(W2 silu(W1 GAP(x)))`` (Hu et al. 2018; SiLU as in EfficientNet).
    Shape-preserving."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(nn.functional.silu(self.reduce(s))))

    def extra_repr(self) -> str:
        return f"channels={self.reduce.in_channels}, reduced={self.reduce.out_channels}"


class InvertedResidual(nn.Module):
    """Inverted residual (MobileNetV2, Sandler et al. 2018; MBConv with ``se_ratio``): 1x1 expansion by
    ``expansion`` (skipped when 1) -> 3x3 depthwise (``stride``) -> [``resize``] -> [squeeze-excitation
    with ``int(in_ch * se_ratio)`` channels] -> 1x1 projection with BN and no activation; identity
    shortcut when ``stride == 1`` and ``in_ch == out_ch``. ``act``: ReLU6 (MobileNetV2) or SiLU (MBConv).

    With ``resize`` the depthwise conv runs at stride 1 and the resizer follows its activation (rule B).
    Children of ``conv`` in order: expansion, depthwise, resize, SE, projection (absent ones skipped).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expansion: int = 6,
                 resize: nn.Module | None = None, act: type[nn.Module] = nn.ReLU6,
                 se_ratio: float | None = None) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvNormAct(in_ch, hidden, 1, act=act))
        dw_stride = 1 if resize is not None else stride
        layers.append(ConvNormAct(hidden, hidden, 3, dw_stride, groups=hidden, act=act))
        if resize is not None:
            layers.append(resize)
        if se_ratio is not None:
            layers.append(SqueezeExcite(hidden, max(1, int(in_ch * se_ratio))))
        layers.append(ConvNormAct(hidden, out_ch, 1, act=None))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MBConv(InvertedResidual):
    """MBConv (EfficientNet, Tan & Le 2019): :class:`InvertedResidual` with SiLU and squeeze-excitation
    (``se_ratio`` of the input channels). Shape ``(N, in, H, W) -> (N, out, H / stride, W / stride)``."""

    def __init__(self, in_chans: int, out_chans: int, expand_ratio: int = 6, se_ratio: float = 0.25,
                 stride: int = 1) -> None:
        super().__init__(in_chans, out_chans, stride, expand_ratio, act=nn.SiLU, se_ratio=se_ratio)
