"""Everything a run is built from its :class:`~poolarch.train.TrainConfig`: device, data, model,
task and method. Unknown names raise ``ValueError`` naming the allowed values."""
from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..layers.factory import HUMAN, STRIDED
from ..data import DATASETS, VARIANTS, load_data
from ..distributed import DistInfo
from ..methods import METHODS, Method
from ..models import create_model, list_models
from ..models.space import list_backbones
from .config import TrainConfig
from .task import TASKS, Task

__all__ = ["TORCHVISION_PREFIX", "check_config_names", "resolve_device", "seed_everything", "build_data",
           "build_model", "build_method", "build_task", "torchvision_models", "build_torchvision_model",
           "blocks_model_name", "example_input", "check_input_size"]

TORCHVISION_PREFIX = "torchvision."
HUMAN_POOLS = (HUMAN, STRIDED, "max")  # "keep the network's own resizing" for torchvision models


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_config_names(cfg: TrainConfig, *, model: bool = True, dataset: bool = True) -> None:
    """Unknown model / dataset / variant / method -> ``ValueError`` naming the allowed values
    (``model``/``dataset``: whether to check those; not when the caller passes its own)."""
    if model and cfg.model not in list_models() and not (
            cfg.model.startswith(TORCHVISION_PREFIX) and cfg.model in torchvision_models()):
        raise ValueError(f"model must be one of {list_models()} or torchvision.<name> (a torchvision classifier), "
                         f"got {cfg.model!r}")
    if dataset:
        DATASETS.get(cfg.dataset)
        if cfg.variant is not None:
            VARIANTS.get(cfg.variant)
    METHODS.get(cfg.method)


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use device 'cpu' or 'auto'")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def build_data(cfg: TrainConfig, info: DistInfo, device: torch.device):
    """The :class:`~poolarch.data.DataBundle` of the run (this rank's shard under DDP)."""
    kwargs: dict[str, Any] = dict(
        variant=cfg.variant,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        device=str(device),
        limit=cfg.limit,
    )
    for key in ("image_size", "num_classes", "in_chans"):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    return load_data(cfg.dataset, cfg.data_root, **kwargs)


def torchvision_models() -> list[str]:
    """Model names ``torchvision.<name>`` accepted by the engine (torchvision classifiers)."""
    import torchvision

    return sorted(TORCHVISION_PREFIX + n for n in torchvision.models.list_models(module=torchvision.models))


def build_torchvision_model(name: str, num_classes: int, pool: str, in_chans: int, init_scales: Any = None,
                            **kwargs: Any) -> nn.Module:
    """``torchvision.<name>`` without pretrained weights; with a learnable ``pool`` its resizing
    layers are replaced by :func:`poolarch.convert.convert` (rules A/B of Jang et al. 2023); with
    ``max`` or ``strided`` it stays the human-designed network."""
    import torchvision

    from ..convert import convert

    if in_chans != 3:
        raise ValueError(f"torchvision models take in_chans 3, got {in_chans}")
    model = torchvision.models.get_model(name[len(TORCHVISION_PREFIX):], weights=None, num_classes=num_classes, **kwargs)
    if pool in HUMAN_POOLS:
        if init_scales is not None:
            raise ValueError(f"init_scales needs a learnable pool, got pool={pool!r}")
        return model
    model, _ = convert(model, method=pool, init_scales=init_scales)
    return model


def blocks_model_name(model: str) -> str:
    """The fixed-configuration network that ``model_args.config_blocks`` retrains for ``model``:
    the ``<backbone>_blocks`` model of the search-space backbone ``model`` belongs to (``resnet20_cifar``,
    ``resnet20_supernet`` and ``resnet20_blocks`` all give ``resnet20_blocks``)."""
    registered = list_models()
    owners = sorted((b for b in list_backbones() if model == b or model.startswith(b + "_")), key=len, reverse=True)
    for backbone in owners:
        if f"{backbone}_blocks" in registered:
            return f"{backbone}_blocks"
    allowed = sorted(f"{b}_blocks" for b in list_backbones() if f"{b}_blocks" in registered)
    raise ValueError(f"config_blocks retrains a searched ResNet; model must be one of {allowed} "
                     f"(or another model of their backbones), got {model!r}")


def build_model(cfg: TrainConfig, data) -> nn.Module:
    """``create_model`` (or a torchvision classifier) for the run's data."""
    kwargs = dict(cfg.model_args)
    name = cfg.model
    if kwargs.get("config_blocks") is not None:
        name = blocks_model_name(name)
    kwargs.setdefault("in_chans", data.in_chans)
    if cfg.init_scales is not None:
        kwargs["init_scales"] = cfg.init_scales
    if cfg.model.startswith(TORCHVISION_PREFIX):
        return build_torchvision_model(cfg.model, num_classes=data.num_classes, pool=cfg.pool, **kwargs)
    return create_model(name, num_classes=data.num_classes, pool=cfg.pool, **kwargs)


def build_method(cfg: TrainConfig, model: nn.Module) -> Method:
    """The registered method ``cfg.method`` for ``model`` (:meth:`Method.for_model`: ``plain`` with
    learnable resizers trains as ``dynopool``), built by :meth:`Method.from_config`."""
    return METHODS.get(cfg.method).for_model(model).from_config(cfg)


def build_task(cfg: TrainConfig, data) -> Task:
    """``cfg.task``, else the dataset's own task, else classification."""
    return TASKS.get(cfg.task or getattr(data, "task", "classification"))()


def example_input(data, device: torch.device) -> Tensor:
    """One zero image ``(1, C, H, W)`` of the dataset's size (GMACs are reported per image)."""
    size = data.image_size
    if isinstance(size, int):
        size = (size, size)
    return torch.zeros(1, data.in_chans, *size, device=device)


def _forward_ok(model: nn.Module, example: Tensor) -> bool:
    """Whether ``model`` runs on ``example`` (eval mode, no grad)."""
    try:
        with torch.no_grad():
            model(example)
    except RuntimeError:
        return False
    return True


def _last_feature_map(model: nn.Module, example: Tensor) -> tuple[int, ...] | None:
    """Spatial size of the last 4-d (or 5-d) output of a module (global pools aside) in one forward
    of ``example``: the feature map the head reads."""
    sizes: list[tuple[int, ...]] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.dim() >= 4:
            sizes.append(tuple(output.shape[2:]))

    global_pools = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if m is not model and not isinstance(m, global_pools)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return sizes[-1] if sizes else None


def check_input_size(model: nn.Module, example: Tensor, name: str = "image_size", limit: int = 4096,
                     model_name: str | None = None) -> None:
    """``ValueError`` naming ``name`` and the smallest square size that works when ``model`` fails
    on ``example`` (one image, eval mode, no grad); a logging warning when the last feature map
    collapses to 1-2 pixels, unless ``example`` is at least the model's nominal input size
    (``model.default_input_size``, set by :func:`~poolarch.models.create_model`; e.g. 2x2 is
    ``vgg16_cifar``'s own at 32x32). ``model_name`` names the model in the warning (default: its
    class). The model's train/eval flag is restored."""
    was_training = model.training
    model.eval()
    try:
        size = tuple(example.shape[2:])
        if _forward_ok(model, example):
            nominal = getattr(model, "default_input_size", None)
            shrunk = nominal is None or len(nominal) != len(size) or any(s < n for s, n in zip(size, nominal))
            final = _last_feature_map(model, example) if shrunk else None
            if final is not None and max(final) <= 2:
                designed = ("" if nominal is None else
                            f"{model_name or type(model).__name__} is designed for {'x'.join(map(str, nominal))}; ")
                logging.getLogger("poolarch").warning(
                    "%s %s: the last feature map is only %s pixels; %sa larger %s keeps more spatial detail",
                    name, "x".join(map(str, size)), "x".join(map(str, final)), designed, name)
            return

        def works(s: int) -> bool:
            return _forward_ok(model, example.new_zeros(1, example.shape[1], *([s] * len(size))))

        low, high = max(size), max(2 * max(size), 2)  # low fails (or is the failing size)
        while not works(high):
            low, high = high, 2 * high
            if high > limit:
                raise ValueError(f"{name} {'x'.join(map(str, size))} is too small for the model, and no size up to "
                                 f"{limit} works either")
        while high - low > 1:  # low fails, high works
            mid = (low + high) // 2
            low, high = (low, mid) if works(mid) else (mid, high)
        raise ValueError(f"{name} {'x'.join(map(str, size))} is too small for the model: its feature maps shrink "
                         f"below 1 pixel; use {name} >= {high}")
    finally:
        model.train(was_training)
