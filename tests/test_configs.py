"""configs/: one YAML per experiment of Jang et al. 2023 with the published hyper-parameters, and each
of them starts (2 training steps on random data of the config's shape)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from poolarch.train import TrainConfig, Trainer

torch.set_num_threads(1)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))

# Jang et al. 2023, transcribed by hand. Table B: (lr, lr(alpha), weight decay, batch) per dataset x net;
# epochs 250 (DynOPool) / 200 (human) on CIFAR-100 and Aircraft, 120 on ImageNet.
TABLE_B = {
    ("aircraft", "vgg16"): (1e-2, 1e-2, 5e-4, 8), ("aircraft", "resnet50"): (1e-2, 1e-2, 5e-4, 8),
    ("aircraft", "mbnv2"): (1e-2, 1e-2, 4e-5, 8),
    ("cifar100", "vgg16"): (1e-1, 1e-2, 5e-4, 128), ("cifar100", "resnet50"): (1e-1, 1e-2, 5e-4, 128),
    ("cifar100", "mbnv2"): (1e-1, 1e-2, 4e-5, 128),
    ("imagenet", "vgg16"): (1e-1, 5e-3, 5e-4, 64), ("imagenet", "resnet50"): (1e-1, 5e-3, 5e-4, 64),
    ("imagenet", "mbnv2"): (5e-2, 5e-3, 4e-5, 64),
}
# Table A: lambda and initial scale of the first resizing layer, DynOPool-S / DynOPool-B.
TABLE_A = {
    ("aircraft", "vgg16"): {"s": (3.07e-5, 0.5), "b": (6.51e-6, 0.5)},
    ("aircraft", "resnet50"): {"s": (3.99e-5, 0.5), "b": (0.0, 0.7)},
    ("aircraft", "mbnv2"): {"s": (3.00e-5, 0.5), "b": (0.0, 0.5)},
    ("cifar100", "vgg16"): {"s": (2.20e-4, 0.5), "b": (1.59e-5, 0.5)},
    ("cifar100", "resnet50"): {"s": (0.0, 0.6), "b": (0.0, 0.8)},
    ("cifar100", "mbnv2"): {"s": (5.00e-5, 0.5), "b": (1.00e-7, 0.5)},
    ("imagenet", "vgg16"): {"s": (1.00e-4, 0.5), "b": (7.00e-5, 0.5)},
    ("imagenet", "resnet50"): {"s": (8.00e-5, 0.5), "b": (2.00e-5, 0.5)},
    ("imagenet", "mbnv2"): {"s": (4.00e-5, 0.5), "b": (1.00e-5, 0.5)},
}
SEC3_LAMBDA = {"stretch-v": 2.33e-4, "tile": 7.21e-5, "large": 5.03e-5}  # appendix A.2


def test_every_experiment_has_a_config():
    names = {p.stem for p in CONFIGS}
    expected = {f"t1_{d}_{n}_{r}" for d, n in TABLE_B for r in ("human", "dynopool_s", "dynopool_b")}
    expected |= {f"t2_cifar100_{n}_shape_adaptor" for n in ("vgg16", "resnet50", "mbnv2")}
    expected |= {"t3_imagenet_efficientnet_b0_human", "t3_imagenet_efficientnet_b1_human",
                 "t3_imagenet_efficientnet_b0_dynopool", "t4_voc_hrnet_w48_human", "t4_voc_hrnet_w48_dynopool"}
    expected |= {f"s3_cifar100_{v}_{r}" for v in ("stretch_v", "tile", "large") for r in ("human", "dynopool")}
    assert names == expected


def _first_scale(cfg: TrainConfig) -> float:
    if cfg.init_scales is None:
        return 0.5
    if isinstance(cfg.init_scales, dict):
        return next(iter(cfg.init_scales.values()))
    return cfg.init_scales[0]


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem.startswith("t1_")], ids=lambda p: p.stem)
def test_table1_hyperparameters_match_tables_a_and_b(path):
    cfg = TrainConfig.from_yaml(path)
    _, dataset, net, *row = path.stem.split("_")
    row = "_".join(row)
    lr, scale_lr, wd, batch = TABLE_B[(dataset, net)]
    assert (cfg.lr, cfg.scale_lr, cfg.weight_decay, cfg.batch_size) == (lr, scale_lr, wd, batch)
    assert cfg.momentum == 0.9 and cfg.schedule == "cosine" and cfg.dataset == dataset
    human = row == "human"
    assert cfg.epochs == (120 if dataset == "imagenet" else (200 if human else 250))
    assert cfg.image_size == (32 if dataset == "cifar100" else 224)
    if human:
        assert cfg.pool in ("max", "strided") and cfg.lambda_ == 0
    else:
        lam, scale = TABLE_A[(dataset, net)][row[-1]]
        assert cfg.pool == "dynopool"
        assert math.isclose(cfg.lambda_, lam, rel_tol=1e-12, abs_tol=0)
        assert _first_scale(cfg) == scale
    assert cfg.amp is (dataset == "imagenet")


def test_other_tables_and_studies():
    load = lambda name: TrainConfig.from_yaml(CONFIG_DIR / f"{name}.yaml")  # noqa: E731
    for variant, lam in SEC3_LAMBDA.items():
        dyn, human = (load(f"s3_cifar100_{variant.replace('-', '_')}_{r}") for r in ("dynopool", "human"))
        assert dyn.variant == human.variant == variant and dyn.lambda_ == lam and human.pool == "max"
        assert (dyn.lr, dyn.scale_lr, dyn.weight_decay, dyn.batch_size, dyn.epochs) == (0.1, 0.01, 5e-4, 128, 250)
    seg = load("t4_voc_hrnet_w48_dynopool")
    assert (seg.lr, seg.scale_lr, seg.weight_decay, seg.lambda_, seg.epochs, seg.batch_size) == (1.6e-2, 8e-3, 1e-4, 7e-5, 100, 16)
    assert seg.schedule == "poly" and seg.poly_power == 0.9 and seg.task == "segmentation"
    eff = load("t3_imagenet_efficientnet_b0_dynopool")
    assert (eff.lambda_, eff.lr, eff.scale_lr, eff.epochs) == (2.5e-5, 0.1, 5e-3, 120)
    for net in ("vgg16", "resnet50", "mbnv2"):
        sa = load(f"t2_cifar100_{net}_shape_adaptor")
        assert sa.pool == "shape_adaptor" and sa.epochs == 200


# -- every config starts --------------------------------------------------------------------------
# 224/480-pixel configs run at 64x64 here (maps still shrink 5 times, to 2x2) so that 41 configs take
# seconds each on one core; batch 4 keeps batch-norm statistics of 2x2 maps sane on random data.
SMOKE_SIZE = 64


SLOW = {"t4_voc_hrnet_w48_dynopool", "t1_aircraft_resnet50_dynopool_b"}  # ~10-25 s each on one core


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW else p for p in CONFIGS], ids=lambda p: p.stem
)
def test_config_runs_two_steps_on_random_data(tmp_path, path):
    """Same model, pool, method, task, variant, optimiser and classes as the config; data of the
    config's shape from the "random" datasets; 224/480 inputs reduced to 64x64 (documented above)."""
    cfg = TrainConfig.from_yaml(path)
    segmentation = cfg.task == "segmentation"
    size = cfg.image_size or 32
    smoke = cfg.merged(
        {
            "dataset": "random-seg" if segmentation else "random",
            "num_classes": cfg.num_classes or {"aircraft": 100, "cifar100": 100, "imagenet": 1000}[cfg.dataset],
            "image_size": min(size, SMOKE_SIZE),
            "in_chans": 3,
            "limit": 16,
            "val_fraction": 0.25,
            "batch_size": 4,
            "epochs": 1,
            "max_steps_per_epoch": 2,
            "max_eval_steps": 1,
            "amp": False,
            "out": str(tmp_path / "run"),
        }
    )
    smoke.data_root = None
    result = Trainer(smoke).fit()
    assert result.finished
    row = result.final
    assert math.isfinite(row["train_loss"]) and row["gmacs"] > 0
