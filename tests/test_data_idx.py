"""idx data sets (Fashion-MNIST, MNIST, KMNIST): tiny idx files written here with ``struct``
(independent of the reader), gzipped and raw, flat and in torchvision's layout."""
from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from poolarch.data import list_datasets, load_data
from poolarch.data import idx as idx_mod
from poolarch.data.idx import read_idx, read_idx_dataset

torch.set_num_threads(1)
N_TRAIN, N_TEST = 40, 20


def _idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding written by hand: magic 0 0 0x08 ndim, big-endian uint32 sizes, uint8 data."""
    head = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    return head + array.astype(np.uint8).tobytes(order="C")


def _write(folder: Path, gz: bool, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        rng.shuffle(labels)
        for stem, arr in ((f"{split}-images-idx3-ubyte", images), (f"{split}-labels-idx1-ubyte", labels)):
            raw = _idx_bytes(arr)
            if gz:
                with gzip.open(folder / f"{stem}.gz", "wb") as f:
                    f.write(raw)
            else:
                (folder / stem).write_bytes(raw)
        data["train" if split == "train" else "test"] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("name,folder", [("fashion-mnist", "FashionMNIST"), ("mnist", "MNIST"), ("kmnist", "KMNIST")])
def test_reads_pixels_and_labels(tmp_path, gz, layout, name, folder):
    where = tmp_path if layout == "flat" else tmp_path / folder / "raw"
    written = _write(where, gz)
    for split in ("train", "test"):
        x, y = read_idx_dataset(name, tmp_path, split)
        assert x.dtype == torch.uint8 and x.shape == (len(written[split][0]), 1, 28, 28)
        assert np.array_equal(x[:, 0].numpy(), written[split][0])
        assert np.array_equal(y.numpy(), written[split][1].astype(np.int64))


def test_load_data_bundle(tmp_path):
    written = _write(tmp_path, gz=True)
    b = load_data("kmnist", tmp_path, batch_size=8, val_fraction=0.25, augment=False)
    assert (b.num_classes, b.in_chans, b.image_size, b.name) == (10, 1, (28, 28), "kmnist")
    sizes = {k: v.dataset_size for k, v in b.loaders().items()}
    assert sizes == {"train": 30, "val": 10, "test": N_TEST}
    # the test loader yields the written pixels, normalised with the data set's statistics
    xs, ys = zip(*list(b.test))
    x, y = torch.cat(xs), torch.cat(ys)
    mean, std = idx_mod.IDX_DATASETS["kmnist"][1][0], idx_mod.IDX_DATASETS["kmnist"][2][0]
    ref = (torch.from_numpy(written["test"][0]).float() / 255 - mean) / std
    assert torch.allclose(x[:, 0], ref, atol=1e-5)
    assert torch.equal(y, torch.from_numpy(written["test"][1].astype(np.int64)))


def test_image_size_32_and_variants(tmp_path):
    _write(tmp_path, gz=False)
    b = load_data("mnist", tmp_path, batch_size=4, image_size=32, in_chans=3)
    x, _ = next(iter(b.train))
    assert x.shape == (4, 3, 32, 32) and b.image_size == (32, 32)
    for variant, size in (("stretch-v", (32, 32)), ("tile", (64, 64)), ("large", (64, 64))):
        b = load_data("fashion-mnist", tmp_path, batch_size=4, image_size=32, variant=variant)
        assert next(iter(b.test))[0].shape == (4, 1, *size) and b.image_size == size


def test_registered():
    assert {"fashion-mnist", "mnist", "kmnist"} <= set(list_datasets())


def test_read_idx_other_dtype_and_errors(tmp_path):
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    p = tmp_path / "ints"
    p.write_bytes(struct.pack(">BBBB", 0, 0, 0x0C, 2) + struct.pack(">II", 2, 3) + arr.tobytes())
    out = read_idx(p)
    assert out.shape == (2, 3) and out.tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "bad").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((3, 2), np.uint8))[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_missing_files_error_names_the_files(tmp_path):
    _write(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.*KMNIST/raw"):
        load_data("kmnist", tmp_path)
    with pytest.raises(ValueError, match="mnist.*needs root.*train-images-idx3-ubyte"):
        load_data("mnist")


def test_label_count_mismatch(tmp_path):
    _write(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="expected 40 labels"):
        read_idx_dataset("mnist", tmp_path, "train")


def test_fashion_default_root(tmp_path, monkeypatch, caplog):
    written = _write(tmp_path / "debian", gz=True, seed=3)
    monkeypatch.setattr(idx_mod, "FASHION_MNIST_DEFAULT_ROOT", tmp_path / "debian")
    with caplog.at_level(logging.INFO, logger="poolarch"):
        b = load_data("fashion-mnist", batch_size=4, val_fraction=0.0)
    assert b.train.dataset_size == N_TRAIN
    assert sum("dataset-fashion-mnist" in r.getMessage() for r in caplog.records) == 1
    x, _ = read_idx_dataset("fashion-mnist", None, "test")
    assert np.array_equal(x[:, 0].numpy(), written["test"][0])
    # the default applies to Fashion-MNIST only
    with pytest.raises(ValueError, match="needs root"):
        load_data("kmnist")
    monkeypatch.setattr(idx_mod, "FASHION_MNIST_DEFAULT_ROOT", tmp_path / "absent")
    with pytest.raises(ValueError, match=r"apt-get install dataset-fashion-mnist.*t10k-images-idx3-ubyte"):
        load_data("fashion-mnist")


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_smoke():
    b = load_data("fashion-mnist", batch_size=64, eval_limit=128)
    sizes = {k: v.dataset_size for k, v in b.loaders().items()}
    assert sizes == {"train": 54000, "val": 128, "test": 128}
    _, y = read_idx_dataset("fashion-mnist", None, "train")
    assert y.bincount().tolist() == [6000] * 10  # the published class balance
    x, y = next(iter(b.train))
    assert x.shape == (64, 1, 28, 28) and y.max() <= 9
