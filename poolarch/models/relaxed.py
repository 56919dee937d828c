"""Multi-resolution relaxation of a pooling search space: the DARTS baseline (Javan et al. 2023, app. C).

Every searchable layer after the first (fixed at full resolution) becomes a
:class:`poolarch.layers.multires.MultiResBlock`: the layer's block applied at the ``p + 1``
resolutions of the space (input pooled by ``2**r``), each result upsampled back and mixed with
``softmax(alpha_l)`` (Eq. 4-5). The network runs at full resolution throughout; its relaxed space
holds ``(p + 1) ** (L - 1)`` paths (19,683 for ResNet20), monotone or not.

``forward(x)`` is the relaxed (DARTS) network; ``forward(x, config)`` runs the single path of a
configuration of the space (each layer only at its resolution level, weight 1), which is how
every configuration is ranked after the search. Weights are shared across resolutions
(``share_weights=True``, "fully shared") or not ("not shared", copies with the same or random init).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.factory import HUMAN
from ..layers.multires import MultiResBlock, multi_resolution
from .space import Config, SearchSpace, config_to_resolutions, format_config, get_backbone, list_backbones
from .supernet import PoolingResNet

__all__ = ["MultiResolutionResNet"]


class MultiResolutionResNet(nn.Module):
    """A :class:`~poolarch.models.supernet.PoolingResNet` relaxed over resolutions.

    Args:
        backbone, num_classes, in_chans, widths, pool: as for ``PoolingResNet`` (``"human"`` = ``"max"``:
            every resolution's branch max-pools; ``"strided"`` is refused).
        share_weights: same filters at every resolution (default) or one copy per resolution.
        same_init: with ``share_weights=False``: copies start identical or re-initialised.
        upsample: ``"nearest"`` or ``"bilinear"``.

    Shapes: ``x`` (N, in_chans, H, W) -> logits (N, num_classes).
    """

    def __init__(self, backbone: str = "resnet20", num_classes: int = 10, in_chans: int = 3,
                 widths: Sequence[int] | None = None, pool: str = HUMAN, share_weights: bool = True,
                 same_init: bool = True, upsample: str = "nearest") -> None:
        super().__init__()
        base = PoolingResNet(backbone, num_classes, in_chans, widths, pool)
        pool = base.pool  # "human" resolved
        self.backbone = backbone
        self.space: SearchSpace = base.space
        self.default_config: Config = base.config
        self.active_config: Config | None = None  # None: relaxed forward
        self.pool = pool
        self.upsample = upsample
        self.resolutions = self.space.num_pools + 1
        self.stem = base.stem
        self.first = base.layers[0]
        self.blocks = nn.ModuleList(
            MultiResBlock(layer, self.resolutions, pool=pool, upsample=upsample, share_weights=share_weights,
                          same_init=same_init)
            for layer in base.layers[1:]
        )
        self.head = base.head

    num_weight_sets = 1

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for block in self.blocks for p in block.arch_parameters()]

    def mixing_weights(self) -> Tensor:
        """``(L - 1, p + 1)``: softmax weights of every relaxed layer."""
        return torch.stack([block.weights() for block in self.blocks])

    def argmax_resolutions(self) -> list[int]:
        """The DARTS architecture: resolution level of every layer (first layer fixed at 0); may
        leave the search space (upsampling after downsampling, paper Fig. 4)."""
        return [0] + [int(i) for i in self.mixing_weights().argmax(dim=1)]

    def path_log_probability(self, config: Sequence[int]) -> float:
        """``sum_l log softmax(alpha_l)[r_l]`` of a configuration's path (a ranking proxy)."""
        levels = config_to_resolutions(self.space.validate(config))[1:]
        log_w = torch.log(self.mixing_weights().detach().clamp_min(1e-30))
        return float(sum(log_w[i, r] for i, r in enumerate(levels)))

    def subnet(self, weight_set: int = 0) -> nn.Module:
        return self

    def forward(self, x: Tensor, config: Sequence[int] | None = None, weight_set: int | None = None) -> Tensor:
        if weight_set not in (None, 0):
            raise ValueError(f"weight_set must be 0 or None for a multi-resolution network, got {weight_set}")
        config = self.active_config if config is None else config
        x = self.first(self.stem(x))
        if config is None:
            for block in self.blocks:
                x = block(x)
        else:
            levels = config_to_resolutions(self.space.validate(config))[1:]
            one = x.new_ones(1)
            for block, level in zip(self.blocks, levels):
                x = multi_resolution(x, [block.block_at(level)], one, [level], self.pool, self.upsample)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def extra_repr(self) -> str:
        mode = "relaxed" if self.active_config is None else format_config(self.active_config)
        return f"backbone={self.backbone}, resolutions={self.resolutions}, mode={mode}"


def _register_all() -> None:
    try:
        from ..models.registry import register_model
    except ImportError:
        return

    def builder(backbone: str):
        def build(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales: Any = None,
                  **kwargs: Any) -> MultiResolutionResNet:
            if init_scales is not None:
                raise ValueError("init_scales is not used by pooling-search models; pass None")
            return MultiResolutionResNet(backbone, num_classes, in_chans,
                                         pool=pool, **kwargs)
        return build

    for name in list_backbones():
        try:
            register_model(name + "_multires_supernet", input_size=get_backbone(name).input_size)(builder(name))
        except ValueError:
            pass


_register_all()
