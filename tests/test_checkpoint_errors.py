"""Unreadable inputs fail with one clear ValueError naming the file: checkpoints and images."""
import os
import stat

import pytest
import torch
from torch import nn

from poolarch.data.images import read_image
from poolarch.checkpoint import (CheckpointError, atomic_torch_save, atomic_write_text, load_checkpoint,
                                       load_model_state)


def _state(model):
    return {"epoch": 1, "model": model.state_dict()}


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_torch_save(_state(nn.Linear(2, 2)), tmp_path / "a.pt")
    finally:
        os.umask(old)
    for name in ("a.txt", "a.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_round_trip_and_model_check(tmp_path):
    model = nn.Linear(3, 2)
    atomic_torch_save(_state(model), tmp_path / "ok.pt")
    state = load_checkpoint(tmp_path / "ok.pt")
    other = nn.Linear(3, 2)
    load_model_state(other, state, tmp_path / "ok.pt")
    assert torch.equal(other.weight, model.weight)
    with pytest.raises(CheckpointError, match=r"ok\.pt' was written for another model \(tensor shapes differ\)"):
        load_model_state(nn.Linear(4, 2), state, tmp_path / "ok.pt")
    with pytest.raises(CheckpointError, match=r"another model \(missing \['0.weight'"):
        load_model_state(nn.Sequential(nn.Linear(3, 2)), state, tmp_path / "ok.pt")


@pytest.mark.parametrize("damage, message", [
    ("empty", r"is empty \(0 bytes\)"),
    ("truncated", r"is truncated or corrupt"),
    ("garbage", r"is truncated or corrupt"),
    ("foreign", r"is not a poolarch checkpoint"),
    ("missing", r"does not exist"),
])
def test_damaged_checkpoints(tmp_path, damage, message):
    path = tmp_path / "last.pt"
    atomic_torch_save(_state(nn.Linear(8, 8)), path)
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    elif damage == "foreign":
        torch.save([1, 2, 3], path)
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value) and "last.pt" in str(info.value)


def test_corrupt_and_valid_images(tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.new("L", (5, 4), 7).save(good)
    img = read_image(good)
    assert img.mode == "RGB" and img.size == (5, 4) and img.getpixel((0, 0)) == (7, 7, 7)
    assert read_image(good, mode=None).mode == "L"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(ValueError, match=r"image '.*bad\.jpg' cannot be read .*remove or replace the file"):
        read_image(bad)
    half = tmp_path / "half.png"
    half.write_bytes(good.read_bytes()[:30])
    with pytest.raises(ValueError, match="half.png' cannot be read"):
        read_image(half)
