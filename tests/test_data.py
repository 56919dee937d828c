"""poolarch.data: datasets, layouts, synthetic variants, batched augmentation, sharding."""
from __future__ import annotations

import csv
import gzip
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from poolarch.data import list_datasets, list_variants, load_data, shard_indices, split_train_val
from poolarch.data.cifar import read_cifar
from poolarch.data.loader import batch_bounds
from poolarch.data.mnist5k import mnist5k_path, read_mnist5k
from poolarch.data.transforms import (BatchAugment, Enlarge, Stretch, Tile, crop, make_variant, random_crop,
                                      random_hflip)

torch.set_num_threads(1)


def _all(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


# -- mnist5k ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_csv():
    """Independent reference: the csv read with the csv module."""
    with gzip.open(mnist5k_path(), "rt") as f:
        rows = [list(map(int, r)) for r in csv.reader(f)]
    arr = np.array(rows)
    return arr[:, :784], arr[:, 784]


def test_mnist5k_file_matches_csv(mnist_csv):
    images, labels = read_mnist5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(labels, torch.from_numpy(mnist_csv[1]))
    assert torch.equal(images.view(5000, -1).long(), torch.from_numpy(mnist_csv[0]))


def test_mnist5k_splits(mnist_csv):
    b = load_data("mnist5k", batch_size=256, augment=False)
    assert (b.num_classes, b.in_chans, b.image_size, b.task) == (10, 1, (28, 28), "classification")
    sizes = {k: v.dataset_size for k, v in b.loaders().items()}
    assert sizes == {"train": 3600, "val": 400, "test": 1000}
    # label counts of the union equal the file's label counts
    ys = torch.cat([_all(l)[1] for l in b.loaders().values()])
    assert Counter(ys.tolist()) == Counter(mnist_csv[1].tolist())
    # disjoint: match each image row back to the csv (images are distinct rows mostly; use index sets)
    ref = {tuple(r) for r in mnist_csv[0].tolist()}
    keys = {}
    for split, loader in b.loaders().items():
        imgs = loader.images.view(loader.dataset_size, -1).tolist()
        keys[split] = Counter(map(tuple, imgs))
        assert set(keys[split]) <= ref
    total = keys["train"] + keys["val"] + keys["test"]
    assert total == Counter(map(tuple, mnist_csv[0].tolist()))  # every image exactly once overall
    # deterministic: same split for another training seed
    b2 = load_data("mnist5k", batch_size=256, augment=False, seed=5)
    assert torch.equal(b2.test.images, b.test.images) and torch.equal(b2.val.images, b.val.images)
    # normalisation: the eval batch is (x/255 - mean)/std of the stored uint8 images
    x, y = next(iter(b.test))
    ref_x = (b.test.images[:256].float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x, ref_x)


def test_limit_and_in_chans():
    b = load_data("mnist5k", limit=100, batch_size=32, in_chans=3)
    assert b.train.dataset_size == 100 and len(b.train) == 4  # 32+32+32+4
    x, _ = next(iter(b.train))
    assert x.shape == (32, 3, 28, 28)
    assert torch.equal(x[:, 0], x[:, 1])


# -- split ------------------------------------------------------------------------------------
def test_split_train_val_stratified_disjoint():
    labels = torch.arange(100) % 4
    tr, va = split_train_val(labels, 0.25, seed=3)
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(100))
    assert Counter(labels[va].tolist()) == {c: 6 for c in range(4)}  # 0.25 * 25 = 6.25
    tr2, va2 = split_train_val(labels, 0.25, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    # half-up rounding, at least one per class of >= 2 samples
    _, va = split_train_val(torch.tensor([0, 0, 1, 1, 1, 1, 1, 2]), 0.1)
    assert sorted(torch.tensor([0, 0, 1, 1, 1, 1, 1, 2])[va].tolist()) == [0, 1]
    assert len(split_train_val(torch.arange(20) % 2, 0.25)[1]) == 6  # 2.5 -> 3 per class
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(labels, 1.0)


# -- sharding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n,world", [(10, 2), (11, 3), (2, 3), (7, 1)])
def test_shard_eval_covers_each_index_once(n, world):
    parts = [shard_indices(n, epoch=1, seed=0, shuffle=False, rank=r, world_size=world, pad=False)
             for r in range(world)]
    assert sorted(torch.cat(parts).tolist()) == list(range(n))


@pytest.mark.parametrize("n,world", [(12, 3), (11, 3), (5, 4)])
def test_shard_train_equal_counts_cover_all(n, world):
    parts = [shard_indices(n, epoch=2, seed=7, shuffle=True, rank=r, world_size=world, pad=True)
             for r in range(world)]
    assert len({len(p) for p in parts}) == 1
    flat = torch.cat(parts).tolist()
    assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world
    if n % world == 0:
        assert sorted(flat) == list(range(n))


def test_loader_ddp_batches_and_epochs():
    kw = dict(batch_size=16, limit=101, augment=False)
    loaders = [load_data("mnist5k", rank=r, world_size=2, **kw).train for r in range(2)]
    assert len(loaders[0]) == len(loaders[1])
    single = load_data("mnist5k", **kw).train
    ref = single.images.view(101, -1)
    seen = Counter()
    for ld in loaders:
        ld.set_epoch(3)
        x, _ = _all(ld)
        x = (x * 0.3081 + 0.1307) * 255
        for row in x.round().to(torch.uint8).view(x.shape[0], -1):
            seen[int(torch.nonzero((ref == row).all(1))[0])] += 1
    assert set(seen) == set(range(101)) and sum(seen.values()) == 102  # one wrap-around duplicate
    # deterministic per epoch, different across epochs
    single.set_epoch(1)
    a = _all(single)[1]
    single.set_epoch(2)
    b = _all(single)[1]
    single.set_epoch(1)
    assert torch.equal(a, _all(single)[1]) and not torch.equal(a, b)


def test_batch_bounds_folds_singleton():
    assert batch_bounds(9, 4, True) == [(0, 4), (4, 9)]
    assert batch_bounds(9, 4, False) == [(0, 4), (4, 8), (8, 9)]


# -- transforms vs slow references ------------------------------------------------------------
def test_crop_matches_slicing():
    x = torch.rand(5, 2, 9, 7)
    top, left = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([3, 2, 1, 0, 0])
    out = crop(x, top, left, (5, 4))
    flip = torch.tensor([True, False, True, True, False])
    out_flipped = crop(x, top, left, (5, 4), flip)
    for i in range(5):
        ref = x[i, :, top[i]:top[i] + 5, left[i]:left[i] + 4]
        assert torch.equal(out[i], ref)
        assert torch.equal(out_flipped[i], ref.flip(-1) if flip[i] else ref)


def test_batch_augment_is_padded_crop_then_optional_flip():
    x = torch.rand(16, 3, 8, 8)
    out = BatchAugment(padding=2, flip=True)(x, torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2))
    kinds = set()
    for i in range(16):
        hits = [(t, l, f) for t in range(5) for l in range(5) for f in (False, True)
                if torch.equal(out[i], padded[i, :, t:t + 8, l:l + 8].flip(-1) if f else padded[i, :, t:t + 8, l:l + 8])]
        assert len(hits) == 1
        kinds.add(hits[0][2])
    assert kinds == {False, True}
    assert torch.equal(BatchAugment(padding=0, flip=False)(x), x)


def test_random_crop_is_a_padded_crop_and_flip_is_exact():
    x = torch.rand(6, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, None, 2, g)
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(6):
        hits = [(t, l) for t in range(5) for l in range(5) if torch.equal(out[i], padded[i, :, t:t + 8, l:l + 8])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 1
    fl = random_hflip(x, 0.5, torch.Generator().manual_seed(1))
    flipped = [torch.equal(fl[i], x[i].flip(-1)) for i in range(6)]
    kept = [torch.equal(fl[i], x[i]) for i in range(6)]
    assert all(a or b for a, b in zip(flipped, kept)) and any(flipped) and any(kept)
    assert torch.equal(random_hflip(x, 1.0), x.flip(-1))


@pytest.mark.parametrize("axis", ["v", "h"])
def test_stretch_against_per_image_interpolate(axis):
    x = torch.rand(4, 3, 10, 12, dtype=torch.float64)
    m = Stretch(axis)
    out = m(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(4):
        size = (20, 12) if axis == "v" else (10, 24)
        big = F.interpolate(x[i:i + 1], size=size, mode="bilinear", align_corners=False)[0]
        slack = 10 if axis == "v" else 12
        cands = [big[:, o:o + 10, :] if axis == "v" else big[:, :, o:o + 12] for o in range(slack + 1)]
        assert any(torch.allclose(out[i], c) for c in cands)
    m.eval()
    ev = m(x)
    big = F.interpolate(x, size=(20, 12) if axis == "v" else (10, 24), mode="bilinear", align_corners=False)
    ref = big[:, :, 5:15, :] if axis == "v" else big[:, :, :, 6:18]
    torch.testing.assert_close(ev, ref)
    # per-sample (C, H, W) path
    torch.testing.assert_close(m(x[1]), ref[1])


def test_tile_is_explicit_repeat_of_2x2_mean():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    out = Tile()(x)
    assert out.shape == (2, 3, 64, 64)
    base = (x[:, :, 0::2, 0::2] + x[:, :, 1::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 1::2]) / 4
    row = torch.cat([base] * 4, dim=3)
    torch.testing.assert_close(out, torch.cat([row] * 4, dim=2))


def test_large_is_bilinear_upscale_of_2x2_mean():
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    out = Enlarge()(x)
    assert out.shape == (2, 1, 64, 64)
    base = F.avg_pool2d(x, 2)
    # slow reference: bilinear (half-pixel centres) by hand
    ref = torch.empty_like(out)
    for oy in range(64):
        sy = min(max((oy + 0.5) * 16 / 64 - 0.5, 0.0), 15.0)
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, 15); wy = sy - y0
        for ox in range(64):
            sx = min(max((ox + 0.5) * 16 / 64 - 0.5, 0.0), 15.0)
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, 15); wx = sx - x0
            ref[:, :, oy, ox] = ((1 - wy) * ((1 - wx) * base[:, :, y0, x0] + wx * base[:, :, y0, x1])
                                 + wy * ((1 - wx) * base[:, :, y1, x0] + wx * base[:, :, y1, x1]))
    torch.testing.assert_close(out, ref)


def test_variants_on_loaders():
    assert list_variants() == ["large", "stretch-h", "stretch-v", "tile"]
    for v, size in [("stretch-v", (28, 28)), ("tile", (56, 56)), ("large", (56, 56))]:
        b = load_data("mnist5k", variant=v, limit=8, batch_size=8, eval_limit=8)
        assert b.image_size == size
        for loader in b.loaders().values():
            assert next(iter(loader))[0].shape[-2:] == size
    with pytest.raises(ValueError, match="variant must be one of .*stretch-v.*got 'squash'"):
        load_data("mnist5k", variant="squash")
    with pytest.raises(ValueError, match="variant must be one of"):
        make_variant("nope")


# -- CIFAR pickle reader ----------------------------------------------------------------------
def _write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _fake_cifar(tmp: Path, num_classes: int, n_train_per_file: int = 6, n_test: int = 5):
    rng = np.random.default_rng(0)
    if num_classes == 10:
        folder, files, key = tmp / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], b"labels"
        test_files = ["test_batch"]
    else:
        folder, files, key = tmp / "cifar-100-python", ["train"], b"fine_labels"
        test_files = ["test"]
    folder.mkdir()
    truth = {}
    for name in files + test_files:
        n = n_test if name in test_files else n_train_per_file
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, n).tolist()
        _write_pickle(folder / name, {b"data": data, key: labels, b"batch_label": b"x"})
        truth[name] = (data, labels)
    return folder, files, test_files, truth


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_reader(tmp_path, num_classes):
    folder, files, test_files, truth = _fake_cifar(tmp_path, num_classes)
    for root in (folder, tmp_path):  # the folder or its parent
        x, y = read_cifar(root, num_classes, "train")
        ref = np.concatenate([truth[f][0] for f in files])
        assert x.shape == (len(ref), 3, 32, 32)
        # channel-major: pixel (c, i, j) is data[c*1024 + i*32 + j]
        assert x[0, 1, 2, 3] == ref[0, 1024 + 2 * 32 + 3]
        assert torch.equal(x.view(len(ref), -1), torch.from_numpy(ref))
        assert y.tolist() == sum((truth[f][1] for f in files), [])
    b = load_data(f"cifar{num_classes}", tmp_path, batch_size=4, val_fraction=0.0)
    assert b.num_classes == num_classes and b.val is None and b.test.dataset_size == 5
    x, y = next(iter(b.train))
    assert x.shape == (4, 3, 32, 32)


def test_cifar_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/.*data_batch_1"):
        load_data("cifar10", tmp_path)
    with pytest.raises(ValueError, match="needs root"):
        load_data("cifar100")
    folder, *_ = _fake_cifar(tmp_path, 100)
    _write_pickle(folder / "train", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    with pytest.raises(ValueError, match="malformed CIFAR file.*fine_labels"):
        read_cifar(tmp_path, 100, "train")
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="malformed"):
        read_cifar(tmp_path, 100, "test")


# -- folder layouts ---------------------------------------------------------------------------
def _jpg(path: Path, color) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 14), color).save(path)


def test_imagefolder_and_imagenet(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for c, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(n):
                _jpg(tmp_path / split / c / f"{i}.jpg", color)
    for name in ("imagefolder", "imagenet"):
        b = load_data(name, tmp_path, image_size=16, batch_size=4, val_fraction=0.0, num_workers=0)
        assert b.num_classes == 2 and b.classes == ["cat", "dog"] and b.image_size == (16, 16)
        x, y = _all(b.test)
        assert x.shape == (4, 3, 16, 16) and sorted(y.tolist()) == [0, 0, 1, 1]
        # red images -> class 0, blue -> class 1 (label follows the folder)
        red = x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))
        assert torch.equal(red, y == 0)
        b.train.set_epoch(0)
        xt, yt = _all(b.train)
        assert xt.shape == (6, 3, 16, 16)
    # same order for the same epoch; every training image once per epoch
    b = load_data("imagefolder", tmp_path, image_size=8, batch_size=2, val_fraction=0.0, num_workers=0)
    orders = []
    for epoch in (4, 4, 5):
        b.train.set_epoch(epoch)
        orders.append(b.train.indices().tolist())
    assert orders[0] == orders[1] and sorted(orders[2]) == list(range(6))
    # a variant on the streaming path: tile doubles the crop size
    b = load_data("imagefolder", tmp_path, image_size=8, variant="tile", batch_size=4, num_workers=0)
    assert b.image_size == (16, 16) and next(iter(b.test))[0].shape == (4, 3, 16, 16)


def test_aircraft_and_food_layouts(tmp_path):
    air = tmp_path / "fgvc-aircraft-2013b" / "data"
    names = ["707-320", "Boeing 717"]
    for split, ids in (("train", ["1", "2", "3"]), ("val", ["4"]), ("test", ["5", "6"])):
        lines = []
        for k, i in enumerate(ids):
            _jpg(air / "images" / f"{i}.jpg", (k * 50, 0, 0))
            lines.append(f"{i} {names[k % 2]}")
        (air / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    (air / "variants.txt").write_text("\n".join(names) + "\n")
    b = load_data("aircraft", tmp_path, image_size=8, batch_size=2, num_workers=0)
    assert b.classes == names and b.num_classes == 2
    assert (b.train.dataset_size, b.val.dataset_size, b.test.dataset_size) == (3, 1, 2)
    assert _all(b.test)[1].tolist() == [0, 1]

    food = tmp_path / "food-101"
    for c in ("apple_pie", "sushi"):
        for i in range(3):
            _jpg(food / "images" / c / f"{c}{i}.jpg", (0, 200, 0))
    (food / "meta").mkdir()
    (food / "meta" / "train.txt").write_text("apple_pie/apple_pie0\napple_pie/apple_pie1\nsushi/sushi0\nsushi/sushi1\n")
    (food / "meta" / "test.txt").write_text("apple_pie/apple_pie2\nsushi/sushi2\n")
    b = load_data("food101", food, image_size=8, batch_size=2, val_fraction=0.5, num_workers=0)
    assert b.classes == ["apple_pie", "sushi"]
    assert (b.train.dataset_size, b.val.dataset_size, b.test.dataset_size) == (2, 2, 2)
    assert sorted(_all(b.val)[1].tolist()) == [0, 1]


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="aircraft.*images_variant"):
        load_data("aircraft", tmp_path)
    with pytest.raises(FileNotFoundError, match="food101.*meta/train.txt"):
        load_data("food101", tmp_path)
    with pytest.raises(FileNotFoundError, match="imagenet.*train/<wnid>"):
        load_data("imagenet", tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a directory.*train/<class>"):
        load_data("imagefolder", tmp_path / "nope")
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="images"):
        load_data("imagefolder", tmp_path)
    air = tmp_path / "air" / "data"
    air.mkdir(parents=True)
    for s in ("train", "val", "test"):
        (air / f"images_variant_{s}.txt").write_text("justoneword\n")
    with pytest.raises(ValueError, match="line 1"):
        load_data("aircraft", tmp_path / "air")


# -- misc -------------------------------------------------------------------------------------
def test_random_dataset_and_bad_args():
    a = load_data("random", image_size=(12, 10), num_classes=5, in_chans=2, limit=40, seed=3, batch_size=8)
    b = load_data("random", image_size=(12, 10), num_classes=5, in_chans=2, limit=40, seed=3, batch_size=8)
    xa, ya = _all(a.train)
    assert xa.shape[1:] == (2, 12, 10) and xa.shape[0] + a.val.dataset_size == 40 and ya.max() < 5 and (a.num_classes, a.in_chans) == (5, 2)
    assert torch.equal(xa, _all(b.train)[0])
    assert "random" in list_datasets()
    with pytest.raises(ValueError, match="dataset must be one of .*mnist5k.*got 'no-such-data'"):
        load_data("no-such-data")
    with pytest.raises(ValueError, match="batch_size"):
        load_data("mnist5k", batch_size=0)
    with pytest.raises(ValueError, match="num_classes=100"):
        load_data("mnist5k", num_classes=100)
    with pytest.raises(ValueError, match="rank"):
        load_data("mnist5k", rank=2, world_size=2)
