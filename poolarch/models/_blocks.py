"""Building blocks shared by the zoo families: conv/norm/activation units and the classifier head."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ConvNormAct", "ClassifierHead", "ORDERS", "scaled_width"]

ORDERS = ("conv-bn-relu", "conv-relu-bn")


def scaled_width(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


class ConvNormAct(nn.Sequential):
    """``kxk`` convolution with BatchNorm and an activation, in the order ``order``.

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
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
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
