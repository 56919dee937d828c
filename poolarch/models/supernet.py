"""ResNets whose pooling positions are chosen per forward call (Javan et al. 2023, Sec. 2.1-2.3, app. B.2).

:class:`PoolingResNet` is one ResNet whose layers (stem convolution + residual blocks for CIFAR
stems; residual blocks after a fixed 7x7/stride-2 stem + max-pool for ImageNet stems) have
channel widths fixed *by layer index* (from the backbone's default configuration, e.g. ResNet20:
16 x4, 32 x3, 64 x3), so every pooling configuration has exactly the same parameters. Strided
convolutions are replaced by a 2x max-pooling placed before the first layer of each lower
resolution; ``forward(x, config)`` runs any configuration ``(n0, ..., np)``.

:class:`PoolingSupernet` holds ``M`` independent weight sets (``M`` such ResNets in an
``nn.ModuleList``); ``forward(x, config, weight_set)`` runs configuration ``config`` with weights
``weight_set`` -- the single path a search method samples. Its cost is that of the sampled network.

Registered models (``poolarch.models.create_model``): ``<backbone>_supernet`` (kwargs
``num_weight_sets``, ``widths``) and ``<backbone>_blocks`` (kwarg ``config_blocks``: one fixed
configuration, for retraining from scratch), for every backbone of :mod:`poolarch.search.space`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import check_int
from ..layers.factory import FIXED_POOLS, HUMAN, resolve_pool
from ..models._blocks import BasicBlock, Bottleneck, ConvNormAct
from .space import Backbone, Config, SearchSpace, format_config, get_backbone, list_backbones, pool_positions

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PoolingResNet",
    "PoolingSupernet",
    "resnet_from_blocks",
    "create_supernet",
    "pool2x",
]


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
SUPERNET_HUMAN_POOL = "max"  # what pool="human" means here: the search space's 2x max-pooling


def pool2x(kind: str = "max") -> nn.Module:
    """The 2x downsampling placed before a layer (``ceil_mode``: odd sizes round up)."""
    if kind == "max":
        return nn.MaxPool2d(2, 2, ceil_mode=True)
    return nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)


@lru_cache(maxsize=4096)
def _pool_flags(space: SearchSpace, config: Config) -> tuple[bool, ...]:
    """Validated once per configuration: for every layer, whether a 2x pooling precedes it."""
    config = space.validate(config)
    positions = set(pool_positions(config))
    return tuple(i in positions for i in range(space.num_layers))


def layer_widths(spec: Backbone, widths: Sequence[int] | None = None) -> tuple[int, list[int]]:
    """``(stem_channels, output channels of every searchable layer)``, fixed by layer index."""
    widths = tuple(int(w) for w in (widths if widths is not None else spec.widths))
    if len(widths) != len(spec.default) or min(widths) < 1:
        raise ValueError(f"widths must be {len(spec.default)} positive ints (one per resolution), got {widths}")
    expansion = _BLOCKS[spec.block].expansion
    stem = max(widths[0] // expansion, 1)
    per_layer = [widths[level] for level, count in enumerate(spec.default) for _ in range(count)]
    if spec.stem == "cifar":
        per_layer[0] = stem  # the stem convolution is the first (fixed) layer
    return stem, per_layer


class PoolingResNet(nn.Module):
    """One ResNet of a search space; ``forward(x, config=None)`` pools where ``config`` says.

    Args:
        backbone: a name of :func:`poolarch.search.space.list_backbones` (``resnet20``, ...).
        num_classes: classifier outputs.
        in_chans: input channels.
        widths: output channels per default resolution (default: the backbone's, e.g. (16, 32, 64)).
        pool: ``"human"`` (default) = ``"max"``, the 2x max-pooling of Javan et al.'s search
            space, or ``"avg"``. ``"strided"`` is refused: a pooling configuration moves the
            downsampling between layers, which a strided convolution cannot follow.
        config: default configuration for calls without ``config`` (default: the backbone's).

    Shapes: ``x`` (N, in_chans, H, W) -> logits (N, num_classes).
    """

    def __init__(
        self,
        backbone: str = "resnet20",
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] | None = None,
        pool: str = HUMAN,
        config: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        pool = resolve_pool(pool, SUPERNET_HUMAN_POOL, FIXED_POOLS)
        self.backbone = backbone
        self.spec = get_backbone(backbone)
        self.space: SearchSpace = self.spec.space
        self.pool = pool
        self.config: Config = self.space.validate(config if config is not None else self.spec.default)
        block = _BLOCKS[self.spec.block]
        stem_channels, per_layer = layer_widths(self.spec, widths)
        self.layer_channels = per_layer
        layers: list[nn.Module] = []
        if self.spec.stem == "cifar":
            self.stem = nn.Identity()
            layers.append(ConvNormAct(in_chans, stem_channels, 3))
            previous = stem_channels
            rest = per_layer[1:]
        else:
            self.stem = nn.Sequential(*ConvNormAct(in_chans, stem_channels, 7, 2), nn.MaxPool2d(3, stride=2, padding=1))
            previous = stem_channels
            rest = per_layer
        for channels in rest:
            layers.append(block(previous, channels))
            previous = channels
        self.layers = nn.ModuleList(layers)
        # the k-th pooling of any configuration (parameter-free; modules so that size tracers see them)
        self.pools = nn.ModuleList(pool2x(pool) for _ in range(self.space.num_pools))
        self.head = nn.Linear(previous, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: Tensor, config: Sequence[int] | None = None) -> Tensor:
        config = self.config if config is None else tuple(config)
        flags = _pool_flags(self.space, config)
        x = self.stem(x)
        pools = iter(self.pools)
        for layer, pool_before in zip(self.layers, flags):
            if pool_before:
                x = next(pools)(x)
            x = layer(x)
        return x

    def forward(self, x: Tensor, config: Sequence[int] | None = None) -> Tensor:
        x = self.features(x, config)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def extra_repr(self) -> str:
        return f"backbone={self.backbone}, config={format_config(self.config)}, pool={self.pool}"


class PoolingSupernet(nn.Module):
    """``num_weight_sets`` independent :class:`PoolingResNet` weight sets ("a mixture of supernets").

    ``forward(x, config=None, weight_set=None)``: configuration and weight set default to the ones
    last chosen with :meth:`select` (initially the backbone's default configuration, weight set 0).
    """

    def __init__(self, backbone: str = "resnet20", num_classes: int = 10, in_chans: int = 3,
                 num_weight_sets: int = 1, widths: Sequence[int] | None = None, pool: str = HUMAN) -> None:
        super().__init__()
        check_int(num_weight_sets, "num_weight_sets", 1)
        self.nets = nn.ModuleList(
            PoolingResNet(backbone, num_classes, in_chans, widths, pool) for _ in range(num_weight_sets)
        )
        self.backbone = backbone
        self.space: SearchSpace = self.nets[0].space
        self.default_config: Config = self.nets[0].config
        self.active_config: Config = self.default_config
        self.active_weight_set = 0

    @property
    def num_weight_sets(self) -> int:
        return len(self.nets)

    def select(self, config: Sequence[int] | None = None, weight_set: int | None = None) -> None:
        """Set the configuration / weight set used by calls without explicit arguments."""
        if config is not None:
            self.active_config = self.space.validate(config)
        if weight_set is not None:
            self.active_weight_set = self._check_weight_set(weight_set)

    def _check_weight_set(self, weight_set: int) -> int:
        if not 0 <= int(weight_set) < len(self.nets):
            raise ValueError(f"weight_set must be in [0, {len(self.nets) - 1}], got {weight_set}")
        return int(weight_set)

    def subnet(self, weight_set: int = 0) -> nn.Module:
        """The modules used by ``weight_set`` (e.g. for batch-norm recalibration)."""
        return self.nets[self._check_weight_set(weight_set)]

    def forward(self, x: Tensor, config: Sequence[int] | None = None, weight_set: int | None = None) -> Tensor:
        net = self.nets[self.active_weight_set if weight_set is None else self._check_weight_set(weight_set)]
        return net(x, self.active_config if config is None else config)

    def extra_repr(self) -> str:
        return f"backbone={self.backbone}, configurations={len(self.space)}, weight_sets={len(self.nets)}"


def resnet_from_blocks(backbone: str, config_blocks: Sequence[int] | str | None = None, **kwargs: Any) -> PoolingResNet:
    """A plain network of one configuration (e.g. ``resnet_from_blocks("resnet20", (5, 3, 2))``),
    identical in parameters to the supernet's, for retraining from scratch."""
    from .space import parse_config

    config = parse_config(config_blocks) if config_blocks is not None else None
    return PoolingResNet(backbone, config=config, **kwargs)


def create_supernet(backbone: str, num_weight_sets: int = 1, **kwargs: Any) -> PoolingSupernet:
    return PoolingSupernet(backbone, num_weight_sets=num_weight_sets, **kwargs)


def _zoo_kwargs(num_classes: int, pool: str, in_chans: int, init_scales: Any, kwargs: dict) -> dict:
    if init_scales is not None:
        raise ValueError("init_scales is not used by pooling-search models (they pool by exactly 2); pass None")
    return dict(num_classes=num_classes, in_chans=in_chans, pool=pool, **kwargs)


def _register_all() -> None:
    try:
        from ..models.registry import register_model
    except ImportError:  # the model registry is optional for this module
        return

    def supernet_builder(backbone: str):
        def build(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales: Any = None,
                  num_weight_sets: int = 1, **kwargs: Any) -> PoolingSupernet:
            return PoolingSupernet(backbone, num_weight_sets=num_weight_sets,
                                   **_zoo_kwargs(num_classes, pool, in_chans, init_scales, kwargs))
        return build

    def blocks_builder(backbone: str):
        def build(num_classes: int = 10, pool: str = HUMAN, in_chans: int = 3, init_scales: Any = None,
                  config_blocks: Sequence[int] | str | None = None, **kwargs: Any) -> PoolingResNet:
            return resnet_from_blocks(backbone, config_blocks,
                                      **_zoo_kwargs(num_classes, pool, in_chans, init_scales, kwargs))
        return build

    for name in list_backbones():
        for suffix, factory in (("_supernet", supernet_builder), ("_blocks", blocks_builder)):
            try:
                register_model(name + suffix, input_size=get_backbone(name).input_size)(factory(name))
            except ValueError:  # already registered (module re-imported)
                pass


_register_all()
