"""A short HRNet + DynOPool segmentation run through the common engine (issue 7): synthetic
image/mask pairs, poly schedule, the paper's separate scale learning rate and GMACs loss."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from poolarch.layers.base import learnable_resizers
from poolarch.models import create_model
from poolarch.train import TrainConfig, train

TINY_HRNET = {"widths": [4, 8, 12, 16], "stage1_planes": 4}


def test_hrnet_dynopool_two_step_segmentation_run(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(
        model="hrnet_w18_small", pool="dynopool", model_args=TINY_HRNET, dataset="random-seg",
        task="segmentation", image_size=32, num_classes=3, limit=8, batch_size=4, epochs=1,
        lr=0.016, scale_lr=0.008, weight_decay=1e-4, schedule="poly", poly_power=0.9, lambda_=7e-5,
        max_eval_steps=1, device="cpu", out=str(tmp_path / "run"), progress=False,
    )
    result = train(cfg)
    assert result.finished
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert len(rows) == 1
    row = rows[0]
    assert 0.0 <= float(row["test_miou"]) <= 100.0
    assert float(row["gmacs"]) > 0
    # Table 4 layout: the input, the first stem step and the four streams; one scale per resizer
    sizes = [tuple(int(v) for v in token.split("x")) for token in row["sizes"].split()]
    assert len(sizes) == 1 + 5 and sizes[0] == (32, 32)
    model = create_model("hrnet_w18_small", num_classes=3, pool="dynopool", **TINY_HRNET)
    scales = row["scales"].split()
    assert len(scales) == len(learnable_resizers(model)) == 5
    # the two steps moved the scales away from 0.5 (task loss + GMACs loss reach alpha), and the
    # logged sizes are what those scales give: each stream is its resizer applied to the previous size
    assert any(abs(float(v) - 0.5) > 1e-6 for token in scales for v in token.split("x"))
    prev = sizes[0]
    for token, size in zip(scales, sizes[1:]):
        r = [float(v) for v in token.split("x")]
        assert size == tuple(math.floor(max(n * s, 1.5) + 0.5) for n, s in zip(prev, r))  # half up
        prev = size


def test_stream_sizes_of_dynopool_hrnet_equal_the_strided_design_at_init():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 48, 40)
    human = create_model("hrnet_w18_small", num_classes=3, pool="strided", **TINY_HRNET)
    learned = create_model("hrnet_w18_small", num_classes=3, pool="dynopool", **TINY_HRNET)
    human(x), learned(x)
    assert learned.stream_sizes() == human.stream_sizes() == [(24, 20), (12, 10), (6, 5), (3, 3), (2, 2)]
