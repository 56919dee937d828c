"""MobileNetV2 for CIFAR (stride-1 stem, maps 32-16-8-4; Jang et al. 2023 Table 1: 0.09 GMACs at 100 classes).

In a downsampling inverted residual the depthwise 3x3 conv has stride 1 and the resizer follows its
BN-ReLU6 (rule B); with ``pool="strided"`` the depthwise conv strides. Blocks that change the size
have no residual branch, so no scale sharing is needed.

``pool="human"`` (the default) is ``"strided"``: Sandler et al. downsample with stride-2 depthwise
convs (0.09 GMACs at 32x32 / 100 classes, Jang et al. 2023 Table 1).

Configuration: the CIFAR MobileNetV2 of Shape Adaptor's code (Liu et al. 2020, ``human-cifar``), whose
architecture Jang et al. 2023 state they use: stride-1 3x3 stem (32 channels), the ImageNet table
with the second row's stride 2 -> 1 (:data:`MOBILENETV2_CIFAR_CFG`; maps 32-16-8-4), torchvision's
inverted residual (no expansion conv when ``t = 1``, identity shortcut only), 1x1 conv to 1280,
global average pooling, one linear layer: 0.0881 GMACs (conv + linear MACs), which the paper prints
as 0.09. Other CIFAR variants measured the same way: kuangliu/pytorch-cifar's (same strides, plus a
1x1 expansion conv in the ``t = 1`` block and 1x1 projection shortcuts in the four stride-1 blocks
that change width) 0.0913; stride 2 kept in the second row (four downsamplings) 0.0246; the three
downsamplings in rows 2, 4, 6 instead of 3, 4, 6: 0.0767. Counting BatchNorm as one MAC per element
would give 0.0897.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from ._blocks import ClassifierHead, ConvNormAct, InvertedResidual, scaled_width
from .._validate import check_number
from ..layers.factory import HUMAN, STRIDED
from ._resize import ResizePlan
from .registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2Cifar", "mobilenetv2_cifar", "MOBILENETV2_CIFAR_CFG"]

# (expansion t, channels c, repeats n, stride s) -- the ImageNet table with the second row's stride 1.
MOBILENETV2_CIFAR_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                         (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 with a stride-1 stem; one stage per cfg row. Attributes: ``stage_strides`` (per row)."""

    def __init__(self, num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3,
                 init_scales: Sequence[Any] | None = None, width: float = 1.0,
                 cfg: Sequence[tuple[int, int, int, int]] = MOBILENETV2_CIFAR_CFG) -> None:
        super().__init__()
        check_number(width, "width", 0, strict=True)
        plan = ResizePlan(pool, init_scales, sum(1 for row in cfg if row[3] > 1), human=STRIDED)
        self.pool_kind = plan.pool
        in_ch = scaled_width(32, width)
        self.stem = ConvNormAct(in_chans, in_ch, 3, 1, act=nn.ReLU6)
        stages = []
        position = 0
        for t, c, n, s in cfg:
            out_ch = scaled_width(c, width)
            blocks = []
            for i in range(n):
                stride = s if i == 0 else 1
                resize = None
                if stride > 1 and not plan.strided:
                    resize = plan.make(position, stride, channels=in_ch * t)
                    position += 1
                blocks.append(InvertedResidual(in_ch, out_ch, stride, t, resize))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        last = max(1280, scaled_width(1280, width))
        self.last_conv = ConvNormAct(in_ch, last, 1, act=nn.ReLU6)
        self.head = ClassifierHead(last, num_classes)
        self.stage_strides = tuple(int(row[3]) for row in cfg)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W) -> (N, num_classes)`` logits."""
        return self.head(self.last_conv(self.stages(self.stem(x))))


@register_model("mobilenetv2_cifar", input_size=32)
def mobilenetv2_cifar(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales=None,
                      width: float = 1.0):
    """MobileNetV2 for 32x32 inputs (maps 32-16-8-4); ``width`` is the width multiplier."""
    return MobileNetV2Cifar(num_classes, pool, in_chans, init_scales, width)
