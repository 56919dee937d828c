"""CIFAR-10/100 from a local copy of the official python-pickle release (no download).

Expected layout (``root`` may be the folder itself or its parent)::

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch[, batches.meta]
    cifar-100-python/train, test[, meta]

Each file is a pickled dict with ``b'data'`` (uint8 ``(N, 3072)``, channel-major 3x32x32) and
``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` (CIFAR-100). The files are unpickled: only point
``root`` at data you trust.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .bundle import DataBundle, DataOptions, in_memory_bundle

__all__ = ["cifar_dir", "read_cifar", "build_cifar10", "build_cifar100", "CIFAR_STATS"]

CIFAR_STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_LAYOUT = {
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels",
         "batches.meta", b"label_names"),
    100: ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}


def _layout_text(num_classes: int) -> str:
    folder, train, test, key, *_ = _LAYOUT[num_classes]
    return (f"expected the official python version of CIFAR-{num_classes}: {folder}/{{{', '.join(train + test)}}}, "
            f"pickled dicts with b'data' and {key!r}; root may be the {folder} folder or its parent")


def cifar_dir(root: str | Path | None, num_classes: int) -> Path:
    """The folder holding the batch files."""
    if num_classes not in _LAYOUT:
        raise ValueError(f"num_classes must be 10 or 100, got {num_classes}")
    if root is None:
        raise ValueError(f"dataset 'cifar{num_classes}' needs root=; {_layout_text(num_classes)}")
    root = Path(root).expanduser()
    folder, train, test, *_ = _LAYOUT[num_classes]
    for cand in (root, root / folder):
        if all((cand / f).is_file() for f in train + test):
            return cand
    raise FileNotFoundError(f"no CIFAR-{num_classes} batch files under {str(root)!r}; {_layout_text(num_classes)}")


def _read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[Tensor, Tensor]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"malformed CIFAR file {str(path)!r} ({type(err).__name__}: {err}); "
                         f"{_layout_text(num_classes)}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise ValueError(f"malformed CIFAR file {str(path)!r}: data {data.shape}, labels {labels.shape}; "
                         f"{_layout_text(num_classes)}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"malformed CIFAR file {str(path)!r}: labels outside 0..{num_classes - 1}")
    return torch.from_numpy(data).view(-1, 3, 32, 32), torch.from_numpy(labels)


def read_cifar(root: str | Path | None, num_classes: int, split: str) -> tuple[Tensor, Tensor]:
    """uint8 images ``(N, 3, 32, 32)`` and int64 labels of ``split`` ("train" | "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = cifar_dir(root, num_classes)
    _, train, test, key, *_ = _LAYOUT[num_classes]
    parts = [_read_batch(folder / f, key, num_classes) for f in (train if split == "train" else test)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _class_names(folder: Path, num_classes: int) -> list[str]:
    *_, meta, key = _LAYOUT[num_classes]
    try:
        with open(folder / meta, "rb") as f:
            names = [n.decode() for n in pickle.load(f, encoding="bytes")[key]]
        if len(names) == num_classes:
            return names
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError):
        pass
    return [str(i) for i in range(num_classes)]


def _build(num_classes: int, opts: DataOptions) -> DataBundle:
    train = read_cifar(opts.root, num_classes, "train")
    test = read_cifar(opts.root, num_classes, "test")
    mean, std = CIFAR_STATS[num_classes]
    return in_memory_bundle(f"cifar{num_classes}", train, test, num_classes=num_classes, mean=mean, std=std,
                            opts=opts, crop_padding=4, flip=True,
                            classes=_class_names(cifar_dir(opts.root, num_classes), num_classes))


def build_cifar10(opts: DataOptions) -> DataBundle:
    return _build(10, opts)


def build_cifar100(opts: DataOptions) -> DataBundle:
    return _build(100, opts)
