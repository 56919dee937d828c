"""Pooling-configuration search spaces (Javan et al. 2023, Sec. 2.1 and appendix B.2, Table 5).

A *configuration* is the number of searchable layers at each resolution, ``(n0, n1, ..., np)``:
``n0`` layers at full resolution, then a 2x max-pooling, ``n1`` layers at half resolution, and so
on. Every ``n_i >= 1`` and ``sum(n_i) == num_layers``; the first layer is always at full
resolution. There are ``comb(num_layers - 1, num_pools)`` configurations.

Order: lexicographic in ``(n0, n1, ..., np)`` ascending, i.e. the order of the paper's Table 6
(``(1,1,8), (1,2,7), ..., (8,1,1)`` for ResNet20).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

from .._validate import check_int

__all__ = [
    "Config",
    "SearchSpace",
    "enumerate_configs",
    "space_size",
    "space_for",
    "list_backbones",
    "parse_config",
    "format_config",
    "config_to_resolutions",
    "pool_positions",
    "BACKBONES",
]

Config = tuple[int, ...]


def space_size(num_layers: int, num_pools: int) -> int:
    """Number of configurations: ``comb(num_layers - 1, num_pools)``."""
    check_int(num_layers, "num_layers", 1)
    check_int(num_pools, "num_pools", 0)
    return math.comb(num_layers - 1, num_pools)


def _compositions(total: int, parts: int) -> Iterator[Config]:
    if parts == 1:
        yield (total,)
        return
    for first in range(1, total - parts + 2):
        for rest in _compositions(total - first, parts - 1):
            yield (first,) + rest


def enumerate_configs(num_layers: int, num_pools: int) -> list[Config]:
    """Every configuration ``(n0, ..., n_num_pools)`` with ``n_i >= 1`` and ``sum == num_layers``,
    in lexicographic order."""
    check_int(num_layers, "num_layers", 1)
    check_int(num_pools, "num_pools", 0)
    if num_pools + 1 > num_layers:
        raise ValueError(
            f"num_pools must be <= num_layers - 1 (each resolution needs a layer), got num_pools={num_pools}, "
            f"num_layers={num_layers}"
        )
    return list(_compositions(num_layers, num_pools + 1))


def parse_config(text: str | Sequence[int]) -> Config:
    """``"5,3,2"`` / ``"5-3-2"`` / ``"[5, 3, 2]"`` / ``(5, 3, 2)`` -> ``(5, 3, 2)``."""
    if isinstance(text, str):
        cleaned = text.strip().strip("[]()").replace("-", ",").replace(" ", "")
        try:
            values = tuple(int(v) for v in cleaned.split(",") if v)
        except ValueError:
            raise ValueError(f"config_blocks must look like '5,3,2', got {text!r}") from None
    else:
        values = tuple(int(v) for v in text)
    if not values or any(v < 1 for v in values):
        raise ValueError(f"config_blocks must be positive block counts like '5,3,2', got {text!r}")
    return values


def format_config(config: Sequence[int]) -> str:
    """``(5, 3, 2)`` -> ``"5-3-2"`` (used in file and directory names)."""
    return "-".join(str(int(v)) for v in config)


def config_to_resolutions(config: Sequence[int]) -> list[int]:
    """Resolution index (0 = full, k = downsampled 2^k) of every layer: ``(2,1,2) -> [0,0,1,2,2]``."""
    return [level for level, count in enumerate(config) for _ in range(count)]


def pool_positions(config: Sequence[int]) -> list[int]:
    """Indices of the layers preceded by a 2x pooling: ``(4,3,3) -> [4, 7]``."""
    positions, total = [], 0
    for count in config[:-1]:
        total += count
        positions.append(total)
    return positions


@dataclass(frozen=True)
class SearchSpace:
    """The configurations of one backbone: ``num_layers`` searchable layers, ``num_pools`` poolings."""

    num_layers: int
    num_pools: int

    @property
    def configs(self) -> list[Config]:
        return enumerate_configs(self.num_layers, self.num_pools)

    def __len__(self) -> int:
        return space_size(self.num_layers, self.num_pools)

    def index(self, config: Sequence[int]) -> int:
        config = tuple(int(v) for v in config)
        self.validate(config)
        return self.configs.index(config)

    def validate(self, config: Sequence[int]) -> Config:
        config = tuple(int(v) for v in config)
        if len(config) != self.num_pools + 1 or sum(config) != self.num_layers or min(config) < 1:
            raise ValueError(
                f"config must have {self.num_pools + 1} positive block counts summing to {self.num_layers}, "
                f"got {config}"
            )
        return config


@dataclass(frozen=True)
class Backbone:
    """A searchable ResNet: block type, stem, per-resolution default layer counts and widths.

    ``default`` counts the stem convolution as the first layer for CIFAR stems (ResNet20: stem + 9
    blocks = 10 layers, ``(4,3,3)``); for ImageNet stems (7x7 stride-2 conv + max-pool, fixed) the
    layers are the residual blocks only (ResNet18: ``(2,2,2,2)``).
    """

    block: str  # "basic" | "bottleneck"
    stem: str  # "cifar" | "imagenet"
    default: Config
    widths: tuple[int, ...]  # output channels of the blocks at each default resolution

    @property
    def space(self) -> SearchSpace:
        return SearchSpace(sum(self.default), len(self.default) - 1)

    @property
    def input_size(self) -> int:
        """The input the stem was designed for: 32 (CIFAR), 224 (ImageNet)."""
        return 224 if self.stem == "imagenet" else 32


BACKBONES: dict[str, Backbone] = {
    "resnet20": Backbone("basic", "cifar", (4, 3, 3), (16, 32, 64)),
    "resnet18": Backbone("basic", "cifar", (3, 2, 2, 2), (64, 128, 256, 512)),
    "resnet50": Backbone("bottleneck", "cifar", (4, 4, 6, 3), (256, 512, 1024, 2048)),
    "resnet18_imagenet": Backbone("basic", "imagenet", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet50_imagenet": Backbone("bottleneck", "imagenet", (3, 4, 6, 3), (256, 512, 1024, 2048)),
}
_ALIASES = {"resnet20_cifar": "resnet20", "resnet18_cifar": "resnet18", "resnet50_cifar": "resnet50",
            "resnet50_food101": "resnet50_imagenet"}


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def get_backbone(name: str) -> Backbone:
    key = _ALIASES.get(name, name)
    if key not in BACKBONES:
        raise ValueError(f"backbone must be one of {list_backbones() + sorted(_ALIASES)}, got {name!r}")
    return BACKBONES[key]


def space_for(backbone: str) -> tuple[SearchSpace, Config]:
    """``(space, default configuration)`` of a backbone (Table 5): ``resnet20`` 36 configurations,
    ``resnet18`` 56, ``resnet50`` 560, ``resnet50_imagenet`` (Food101) 455, ``resnet18_imagenet`` 35."""
    spec = get_backbone(backbone)
    return spec.space, spec.default
