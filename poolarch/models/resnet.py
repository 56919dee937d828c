"""CIFAR ResNets (3x3 stem, no stem downsampling) with a choice of resizing layer.

With ``pool="strided"`` a downsampling block is the usual one (stride-2 3x3 conv on the main
path, stride-2 1x1 projection on the shortcut). With a pooling kind the 3x3 conv has stride 1 and
the resizer sits after its BN-ReLU (rule B of Jang et al. 2023, A.1); the shortcut resizes *before* its 1x1
projection (a 1x1 conv commutes with subsampling, so this is the cheap order). The two resizers of a
block are separate modules sharing one scale (``share_with``), so main path and shortcut always agree.
A kind with a residual form (``pool="shape_adaptor"``) is used as its authors do (Liu et al. 2020): the
block's convs run at stride 1, its shortcut keeps the stride-2 1x1 projection, and one
:class:`~poolarch.layers.ResidualShapeAdaptor2d` mixes the two, ``2(1-s) resize(shortcut) + 2s resize(main)``,
in place of the sum.

``pool="human"`` (the default) is ``"strided"``: He et al.'s ResNet downsamples with stride-2 convs
(ResNet-50: 1.31 GMACs at 32x32 / 100 classes, Jang et al. 2023 Table 1).
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from ._blocks import BasicBlock, Bottleneck, ClassifierHead, ConvNormAct
from ..layers.factory import HUMAN, STRIDED
from ._resize import ResizePlan
from .registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "resnet20_cifar", "resnet18_cifar", "resnet50_cifar"]


class CifarResNet(nn.Module):
    """ResNet with a stride-1 3x3 stem; stage ``i`` has ``depths[i]`` blocks of ``widths[i]``.

    Attributes:
        stage_strides: nominal reduction at the start of each stage (``strides``).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int],
        num_classes: int = 10,
        pool: str = HUMAN,
        in_chans: int = 3,
        init_scales: Sequence[Any] | None = None,
        stem_width: int | None = None,
    ) -> None:
        super().__init__()
        if not (len(depths) == len(widths) == len(strides)):
            raise ValueError(f"depths, widths and strides must have equal lengths, got {depths}, {widths}, {strides}")
        if any(s not in (1, 2) for s in strides):
            raise ValueError(f"strides must contain only 1 or 2, got {tuple(strides)}")
        plan = ResizePlan(pool, init_scales, sum(1 for s in strides if s > 1), human=STRIDED)
        self.pool_kind = plan.pool
        stem_width = stem_width or widths[0]
        self.stem = ConvNormAct(in_chans, stem_width, 3, 1)
        in_ch = stem_width
        stages = []
        position = 0
        for depth, width, stride in zip(depths, widths, strides):
            blocks = []
            for b in range(depth):
                s = stride if b == 0 else 1
                resize = resize_shortcut = mix = None
                if s > 1 and not plan.strided:
                    if plan.residual:
                        mix = plan.make_residual(position, s)
                    else:
                        resize = plan.make(position, s, channels=width)
                        resize_shortcut = plan.make(position, s, channels=in_ch, share_with=resize)
                    position += 1
                blocks.append(block(in_ch, width * block.expansion, s, resize, resize_shortcut, mix=mix))
                in_ch = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(in_ch, num_classes)
        self.stage_strides = tuple(int(s) for s in strides)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W) -> (N, num_classes)`` logits."""
        return self.head(self.stages(self.stem(x)))


@register_model("resnet20_cifar", input_size=32)
def resnet20_cifar(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales=None):
    """ResNet-20 (Javan et al. 2023 B.2): 3 stages x 3 basic blocks, 16/32/64 channels, maps 32-16-8."""
    return CifarResNet(BasicBlock, (3, 3, 3), (16, 32, 64), (1, 2, 2), num_classes, pool, in_chans, init_scales)


@register_model("resnet18_cifar", input_size=32)
def resnet18_cifar(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales=None):
    """ResNet-18 for CIFAR: 4 stages x 2 basic blocks, 64-512 channels, maps 32-16-8-4."""
    return CifarResNet(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), (1, 2, 2, 2), num_classes, pool, in_chans,
                       init_scales)


@register_model("resnet50_cifar", input_size=32)
def resnet50_cifar(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales=None):
    """ResNet-50 for CIFAR (Jang et al. 2023 Table 1): bottlenecks 3-4-6-3, maps 32-16-8-4, 1.31 GMACs strided."""
    return CifarResNet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), (1, 2, 2, 2), num_classes, pool, in_chans,
                       init_scales)
