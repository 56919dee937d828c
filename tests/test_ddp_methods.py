"""Every training method under DDP (2 processes, gloo on CPU): the ranks see different data shards,
yet end with identical weights, identical architecture parameters and identical method state --
single-path supernets (unused parameters, sampling driven by validation accuracy), DARTS and
multi-resolution mixing-weight steps on validation batches, Shape Adaptor's alternating updates."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

CASES = {
    "balanced-mixture": dict(model="resnet20_supernet", pool="max", method="balanced-mixture",
                             model_args={"widths": [2, 4, 4], "num_weight_sets": 2},
                             method_args={"seed": 3}, val_fraction=0.5),
    "spos": dict(model="resnet20_supernet", pool="max", method="spos",
                 model_args={"widths": [2, 4, 4], "num_weight_sets": 1}, val_fraction=0.5),
    "darts": dict(model="resnet20_multires_supernet", pool="max", method="darts",
                  model_args={"widths": [2, 4, 4]}, val_fraction=0.5),
    "multires": dict(model="multires_net", pool="max", method="multires",
                     model_args={"channels": 4, "num_layers": 2, "resolutions": 2},
                     method_args={"arch_lr": 0.05}, val_fraction=0.5),
    "shape_adaptor": dict(model="vgg_small", pool="shape_adaptor", method="shape_adaptor",
                          model_args={"width": 0.25}, method_args={"update_every": 2}),
}


def _join(rank: int, world_size: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def _config(out_dir: str, case: str):
    import poolarch.search  # noqa: F401  (registers the supernets and search methods)
    from poolarch.train import TrainConfig

    return TrainConfig(dataset="random", image_size=8, num_classes=3, limit=64, batch_size=8, epochs=2,
                       max_steps_per_epoch=4, max_eval_steps=2, lr=0.05, device="cpu", progress=False,
                       out=str(Path(out_dir) / "run"), **CASES[case])


def _spawn(worker, tmp_path, *args) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(worker, args=(2, port, str(tmp_path), *args), nprocs=2, join=True, start_method="spawn")


def _worker(rank: int, world_size: int, port: int, out_dir: str, case: str) -> None:
    _join(rank, world_size, port)
    from poolarch.train import Trainer

    trainer = Trainer(_config(out_dir, case))
    trainer.fit()
    state = trainer.method.state_dict()
    torch.save({"model": trainer.model.state_dict(),
                "accuracy": np.asarray(getattr(trainer.method, "accuracy", np.zeros(1))).copy(),
                "method_keys": sorted(state)}, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("case", sorted(CASES))
def test_ranks_stay_identical_under_ddp(tmp_path, case):
    _spawn(_worker, tmp_path, case)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    for key in r0["model"]:
        assert torch.equal(r0["model"][key], r1["model"][key]), key
    np.testing.assert_array_equal(r0["accuracy"], r1["accuracy"])
    if case == "balanced-mixture":
        assert np.count_nonzero(r0["accuracy"]) > 0  # a[c, m] was updated from the shards' accuracies


def _search_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    _join(rank, world_size, port)
    from poolarch.search.runner import run_search

    rows = run_search(_config(out_dir, "balanced-mixture"), recalibration_batches=2)
    torch.save(rows, Path(out_dir) / f"rows{rank}.pt")
    torch.distributed.destroy_process_group()


def test_search_ranking_under_ddp_is_one_evaluation_over_all_shards(tmp_path):
    """Both ranks evaluate every configuration on their own validation shard (batch-norm
    statistics recalibrated per shard, then averaged) and agree on one ranking; rank 0 writes it."""
    _spawn(_search_worker, tmp_path)
    rows0, rows1 = (torch.load(tmp_path / f"rows{r}.pt", weights_only=False) for r in range(2))
    assert rows0 == rows1 and len(rows0) == 36
    assert all(r["accuracy"] is not None for r in rows0)
    from poolarch.search.evaluate import read_ranking

    written = read_ranking(tmp_path / "run" / "ranking.csv")
    assert written == {r["config"]: pytest.approx(r["accuracy"]) for r in rows0}
