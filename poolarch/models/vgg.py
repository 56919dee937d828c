"""VGG-style plain networks: stages of 3x3 convolutions separated by resizing layers.

``vgg16_cifar`` is the CIFAR VGG-16 of Shape Adaptor / DynOPool (Jang et al. 2023, Table 1): 13
Conv-BN-ReLU layers, 4 resizings (maps 32-16-8-4-2 on 32x32 input), global average pooling and
one FC layer (0.31 GMACs, 100 classes). ``vgg_small`` is a narrow 4-layer net for CPU demos
(MNIST 28x28: maps 28-14-7-3 with max pooling; DynOPool at r=0.5 rounds 7/2 up, 28-14-7-4).

``pool="human"`` (the default) is ``"max"``: VGG's authors resize with 2x2 max-pooling.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from ._blocks import ClassifierHead, ConvNormAct, scaled_width
from .._validate import check_number
from ..layers.factory import HUMAN
from ._resize import ResizePlan
from .registry import register_model

__all__ = ["ConvStageNet", "vgg16_cifar", "vgg_small", "VGG16_STAGES", "VGG_SMALL_STAGES"]

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG_SMALL_STAGES = ((16,), (32,), (64,), (128,))


class ConvStageNet(nn.Module):
    """Stages of ``ConvNormAct`` layers; every stage after the first starts by halving the map.

    With a pooling kind the stage starts with ``downsample`` (the resizing layer) followed by
    stride-1 convolutions; with ``pool="strided"`` ``downsample`` is the identity and the stage's
    first convolution has stride 2.

    Args:
        stages: output channels of every layer, grouped by stage (before ``width`` scaling).
        order: ``"conv-bn-relu"`` (VGG) or ``"conv-relu-bn"`` (the multi-resolution-block paper (WACV submission 832)'s plain net).
        human: what ``pool="human"`` builds (``"max"``: 2x2 max-pooling, as VGG).
    Attributes:
        stage_strides: nominal reduction entering each stage (1 for the first, 2 after).
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]],
        num_classes: int = 10,
        pool: str = HUMAN,
        in_chans: int = 3,
        init_scales: Sequence[Any] | None = None,
        width: float = 1.0,
        order: str = "conv-bn-relu",
        human: str = "max",
    ) -> None:
        super().__init__()
        check_number(width, "width", 0, strict=True)
        if len(stages) < 1 or any(len(s) < 1 for s in stages):
            raise ValueError(f"stages must be non-empty lists of channel counts, got {stages!r}")
        plan = ResizePlan(pool, init_scales, len(stages) - 1, human=human)
        self.pool_kind = plan.pool
        blocks = []
        in_ch = in_chans
        for index, stage in enumerate(stages):
            layers: list[nn.Module] = []
            downsample: nn.Module = nn.Identity()
            first_stride = 1
            if index > 0:
                if plan.strided:
                    first_stride = 2
                else:
                    downsample = plan.make(index - 1, 2, channels=in_ch)
            for j, channels in enumerate(stage):
                out_ch = scaled_width(channels, width)
                layers.append(ConvNormAct(in_ch, out_ch, 3, first_stride if j == 0 else 1, order=order))
                in_ch = out_ch
            blocks.append(nn.Sequential(downsample, *layers))
        self.stages = nn.Sequential(*blocks)
        self.head = ClassifierHead(in_ch, num_classes)
        self.stage_strides = tuple([1] + [2] * (len(stages) - 1))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W) -> (N, num_classes)`` logits."""
        return self.head(self.stages(x))


@register_model("vgg16_cifar", input_size=32)
def vgg16_cifar(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales=None, width: float = 1.0):
    """CIFAR VGG-16 (13 conv, 4 resizings, GAP + FC); ``width`` scales every layer's channels."""
    return ConvStageNet(VGG16_STAGES, num_classes, pool, in_chans, init_scales, width=width)


@register_model("vgg_small", input_size=28)
def vgg_small(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales=None, width: float = 1.0):
    """4-layer VGG (16-32-64-128 channels x ``width``, 3 resizings) for fast CPU runs (MNIST 28x28)."""
    return ConvStageNet(VGG_SMALL_STAGES, num_classes, pool, in_chans, init_scales, width=width)
