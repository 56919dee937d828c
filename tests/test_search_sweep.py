"""Brute-force sweeps: local workers, restart skips finished runs, Ray Tune in local mode."""

import pytest
import yaml

import poolarch.search  # noqa: F401
from poolarch.cli import main
from poolarch.search.sweep import read_sweep, sweep
from poolarch.train.config import TrainConfig

BASE = TrainConfig(dataset="random", image_size=8, num_classes=3, limit=32, batch_size=16, epochs=1,
                   model_args={"widths": [2, 2, 4]}, val_fraction=0.5, progress=False)
CONFIGS = [(4, 3, 3), (7, 1, 2)]


def test_local_sweep_and_restart(tmp_path):
    rows = sweep(BASE, "resnet20", tmp_path, configs=CONFIGS)
    assert [r["config"] for r in rows] == ["4-3-3", "7-1-2"]
    for row, config in zip(rows, CONFIGS):
        cfg = yaml.safe_load((tmp_path / f"config_{row['config']}" / "config.yaml").read_text())
        assert cfg["model"] == "resnet20_blocks" and tuple(cfg["model_args"]["config_blocks"]) == config
        result = yaml.safe_load((tmp_path / f"config_{row['config']}" / "result.yaml").read_text())
        assert row["test_top1"] == result["final"]["test_top1"]
    truth = read_sweep(tmp_path)
    assert set(truth) == {"4-3-3", "7-1-2"}
    stamp = (tmp_path / "config_4-3-3" / "result.yaml").stat().st_mtime_ns
    log = []
    again = sweep(BASE, "resnet20", tmp_path, configs=CONFIGS, log=log.append)
    assert again == rows and sum("skipping" in line for line in log) == 2
    assert (tmp_path / "config_4-3-3" / "result.yaml").stat().st_mtime_ns == stamp


def test_sweep_cli_bad_input(tmp_path):
    assert main(["sweep", "--backbone", "vgg", "--out", str(tmp_path)]) == 2
    assert main(["sweep", "--configs", "4,4,4", "--out", str(tmp_path), "--dataset", "random"]) == 2


def test_ray_sweep_local_mode(tmp_path):
    pytest.importorskip("ray.tune")
    rows = sweep(BASE, "resnet20", tmp_path, configs=CONFIGS[:1], backend="ray", workers=1)
    assert rows[0]["config"] == "4-3-3" and "test_top1" in rows[0]
    assert (tmp_path / "config_4-3-3" / "result.yaml").is_file()
