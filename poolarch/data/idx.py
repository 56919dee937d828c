"""Fashion-MNIST, MNIST and KMNIST from the standard idx files (gzipped or not), held in memory.

Each data set is the four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``). ``root`` is the
folder holding them, or torchvision's layout ``<root>/FashionMNIST/raw/`` (``MNIST``, ``KMNIST``).
Images are uint8 ``(N, 1, 28, 28)``, 10 classes; train 60,000 (of which ``val_fraction`` is held out,
stratified, fixed seed), test 10,000. Training augmentation: random crop with 2-pixel padding, plus
a horizontal flip for Fashion-MNIST only (digits and characters are not mirror-symmetric).

Fashion-MNIST without ``root``: the Debian package ``dataset-fashion-mnist`` installs the files under
:data:`FASHION_MNIST_DEFAULT_ROOT`, which is used when it exists.

The reader is our own (:func:`read_idx`, the format of LeCun et al.'s MNIST page): torchvision's
``read_sn3_pascalvincent_tensor`` reads only uncompressed files and torchvision's ``MNIST`` class
only its own ``raw/`` layout, while the Debian package ships ``*.gz`` in a flat folder.
"""
from __future__ import annotations

import gzip
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .bundle import DataBundle, DataOptions, in_memory_bundle

__all__ = ["IDX_DATASETS", "IDX_FILES", "FASHION_MNIST_DEFAULT_ROOT", "read_idx", "idx_dir", "read_idx_dataset",
           "build_idx"]

FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# name -> (torchvision folder, mean, std (of the 60,000 training images), flip, class names)
IDX_DATASETS: dict[str, tuple[str, tuple[float], tuple[float], bool, tuple[str, ...]]] = {
    "fashion-mnist": ("FashionMNIST", (0.2860,), (0.3530,), True,
                      ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle boot")),
    "mnist": ("MNIST", (0.1307,), (0.3081,), False, tuple(str(i) for i in range(10))),
    "kmnist": ("KMNIST", (0.1918,), (0.3483,), False, ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
}

# idx type byte -> numpy big-endian dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
log = logging.getLogger("poolarch")


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one idx file (``.gz`` decompressed): magic ``0 0 type ndim``, then
    ``ndim`` big-endian uint32 sizes, then the row-major data. Returned in native byte order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read idx file {str(path)!r}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{str(path)!r} is not an idx file (magic bytes {raw[:4]!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    if len(shape) != ndim or len(raw) != header + int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"idx file {str(path)!r} is truncated or padded: header says shape {shape} of {dtype}, "
                         f"file has {len(raw) - min(len(raw), header)} data bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _expected(name: str) -> str:
    folder = IDX_DATASETS[name][0]
    files = ", ".join(f for pair in IDX_FILES.values() for f in pair)
    return f"expected the four idx files ({files}; each optionally .gz) in root or in root/{folder}/raw/"


def _find(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def idx_dir(name: str, root: str | Path | None) -> Path:
    """The folder holding ``name``'s four idx files (see the module docstring)."""
    if name not in IDX_DATASETS:
        raise ValueError(f"name must be one of {sorted(IDX_DATASETS)}, got {name!r}")
    if root is None:
        if name == "fashion-mnist":
            if FASHION_MNIST_DEFAULT_ROOT.is_dir():
                return idx_dir(name, FASHION_MNIST_DEFAULT_ROOT)
            raise ValueError(f"dataset 'fashion-mnist' needs root= (data_root), or the Debian package "
                             f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist), which installs "
                             f"{FASHION_MNIST_DEFAULT_ROOT}; {_expected(name)}")
        raise ValueError(f"dataset {name!r} needs root= (data_root); {_expected(name)}")
    root = Path(root).expanduser()
    stems = [f for pair in IDX_FILES.values() for f in pair]
    for cand in (root, root / IDX_DATASETS[name][0] / "raw"):
        if all(_find(cand, s) is not None for s in stems):
            return cand
    raise FileNotFoundError(f"no {name} idx files under {str(root)!r}; {_expected(name)}")


@lru_cache(maxsize=4)
def _read_cached(folder: str, split: str, stamp: tuple) -> tuple[Tensor, Tensor]:
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = _find(Path(folder), images_stem), _find(Path(folder), labels_stem)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{str(images_path)!r}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{str(labels_path)!r}: expected {images.shape[0]} labels, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{str(labels_path)!r}: labels outside 0..9")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def read_idx_dataset(name: str, root: str | Path | None, split: str) -> tuple[Tensor, Tensor]:
    """uint8 images ``(N, 1, 28, 28)`` and int64 labels ``(N,)`` of ``split`` ("train" | "test"),
    file order (cached per folder and file modification time)."""
    if split not in IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = idx_dir(name, root)
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (_find(folder, s) for s in IDX_FILES[split]))
    return _read_cached(str(folder.resolve()), split, stamp)


def build_idx(name: str, opts: DataOptions) -> DataBundle:
    """The :class:`DataBundle` of idx data set ``name``."""
    _, mean, std, flip, classes = IDX_DATASETS[name]
    if opts.root is None and name == "fashion-mnist" and FASHION_MNIST_DEFAULT_ROOT.is_dir():
        log.info("dataset 'fashion-mnist': no data_root given, using %s (Debian package dataset-fashion-mnist)",
                 FASHION_MNIST_DEFAULT_ROOT)
    train = read_idx_dataset(name, opts.root, "train")
    test = read_idx_dataset(name, opts.root, "test")
    return in_memory_bundle(name, train, test, num_classes=10, mean=mean, std=std, opts=opts, crop_padding=2,
                            flip=flip, classes=classes)
