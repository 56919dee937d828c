"""Semantic-segmentation data: PASCAL VOC 2012 (+ SBD augmentation), image/mask folders, synthetic.

Layouts read (nothing is ever downloaded):

* **VOC** -- ``root`` is ``VOCdevkit/VOC2012`` or any parent of it::

      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png              palette PNG, value = class (0..20), 255 = ignore
      ImageSets/Segmentation/{train,val}.txt
      SegmentationClassAug/<id>.png           optional, the SBD-augmented masks
      ImageSets/Segmentation/train_aug.txt    optional; used for split "train" when both exist

* **pairs** -- any folder of image/mask pairs with a class list::

      images/<name>.{jpg,jpeg,png}
      masks/<name>.png                        value = class index, 255 = ignore
      classes.txt                             one class name per line
      train.txt, val.txt                      optional name lists (else a deterministic 90/10 split)

Training samples get a random scale (0.5-2.0), padding (image 0, mask 255) to the crop size, a
random crop and a horizontal flip -- applied to image and mask together. Evaluation pads (or
shrinks, keeping the aspect ratio) to the crop size; padded pixels are ignored by the metric.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..metrics import IGNORE_INDEX
from .bundle import DataBundle, DataOptions, split_for_validation
from .images import read_image
from .loader import StreamingLoader

__all__ = [
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "SegmentationDataset",
    "JointTransform",
    "voc_samples",
    "pair_samples",
    "SyntheticSegmentation",
    "build_voc",
    "build_segfolder",
    "build_random_segmentation",
]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
VOC_CLASSES = (
    "background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse "
    "motorbike person pottedplant sheep sofa train tvmonitor"
).split()
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _find_voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no PASCAL VOC 2012 tree under {root}: expected VOCdevkit/VOC2012/ with JPEGImages/, "
        "SegmentationClass/ and ImageSets/Segmentation/{train,val}.txt"
    )


def voc_samples(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of a VOC split (``"train"`` uses SBD's ``train_aug`` when present)."""
    voc = _find_voc_root(Path(root))
    sets = voc / "ImageSets" / "Segmentation"
    mask_dir = voc / "SegmentationClass"
    list_file = sets / f"{split}.txt"
    if split == "train" and (sets / "train_aug.txt").is_file() and (voc / "SegmentationClassAug").is_dir():
        list_file, mask_dir = sets / "train_aug.txt", voc / "SegmentationClassAug"
    if not list_file.is_file():
        raise FileNotFoundError(f"VOC split file missing: {list_file} (split must be 'train' or 'val')")
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    samples = [(voc / "JPEGImages" / f"{i}.jpg", mask_dir / f"{i}.png") for i in ids]
    missing = [str(p) for s in samples for p in s if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} VOC files listed in {list_file.name} are missing, e.g. {missing[0]}")
    return samples


def pair_samples(root: str | Path, split: str, val_fraction: float = 0.1) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``(samples, class_names)`` of an image/mask folder (layout in the module docstring)."""
    root = Path(root)
    images, masks, classes = root / "images", root / "masks", root / "classes.txt"
    if not (images.is_dir() and masks.is_dir() and classes.is_file()):
        raise FileNotFoundError(
            f"no image/mask folder at {root}: expected images/<name>.jpg|png, masks/<name>.png and classes.txt"
        )
    names = [line.strip() for line in classes.read_text().splitlines() if line.strip()]
    by_stem = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES}
    if (root / f"{split}.txt").is_file():
        stems = [s.strip() for s in (root / f"{split}.txt").read_text().splitlines() if s.strip()]
    elif split in ("train", "val"):
        is_val = [zlib.crc32(s.encode()) % 1000 < val_fraction * 1000 for s in by_stem]
        stems = [s for s, v in zip(by_stem, is_val) if v == (split == "val")]
    else:
        raise ValueError(f"split must be 'train' or 'val' (or have {split}.txt in {root}), got {split!r}")
    samples = []
    for stem in stems:
        if stem not in by_stem or not (masks / f"{stem}.png").is_file():
            raise FileNotFoundError(f"image or mask for {stem!r} missing under {root}/images, {root}/masks")
        samples.append((by_stem[stem], masks / f"{stem}.png"))
    return samples, names


@dataclass
class JointTransform:
    """Random scale / pad / crop / flip applied to an image ``(3, H, W)`` and its mask ``(H, W)``.

    Args:
        crop: output size ``(h, w)``.
        train: random scale, crop, flip if True; else pad/shrink to ``crop`` deterministically.
        scale_range: random rescale factors (train only).
    """

    crop: tuple[int, int] = (480, 480)
    train: bool = True
    scale_range: tuple[float, float] = (0.5, 2.0)

    def __call__(self, image: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Random draws come from ``generator`` (default: torch's global RNG, which the streaming
        loader seeds per epoch and worker)."""

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=generator))

        h, w = image.shape[1:]
        if self.train:
            s = uniform(*self.scale_range)
        else:
            s = min(1.0, self.crop[0] / h, self.crop[1] / w)
        if s != 1.0:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
            mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].to(mask.dtype)
        h, w = image.shape[1:]
        ph, pw = max(self.crop[0] - h, 0), max(self.crop[1] - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
        h, w = image.shape[1:]
        top = int(torch.randint(0, h - self.crop[0] + 1, (), generator=generator)) if self.train else 0
        left = int(torch.randint(0, w - self.crop[1] + 1, (), generator=generator)) if self.train else 0
        image = image[:, top : top + self.crop[0], left : left + self.crop[1]]
        mask = mask[top : top + self.crop[0], left : left + self.crop[1]]
        if self.train and uniform(0.0, 1.0) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


def _normalise(image_uint8: Tensor) -> Tensor:
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (image_uint8.float() / 255.0 - mean) / std


class SegmentationDataset(Dataset):
    """Image/mask files -> ``(image float (3, h, w) normalised, mask int64 (h, w))``."""

    def __init__(self, samples: Sequence[tuple[Path, Path]], transform: JointTransform) -> None:
        if not samples:
            raise ValueError("samples is empty: the split lists no image/mask pairs")
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.samples[index]
        image = torch.from_numpy(np.asarray(read_image(image_path), dtype=np.uint8).copy()).permute(2, 0, 1)
        mask = torch.from_numpy(np.asarray(read_image(mask_path, mode=None), dtype=np.uint8).copy()).long()
        if mask.shape != image.shape[1:]:
            raise ValueError(f"mask {mask_path} is {tuple(mask.shape)} but image {image_path} is {tuple(image.shape[1:])}")
        return self.transform(_normalise(image), mask)


class SyntheticSegmentation(Dataset):
    """Learnable toy segmentation: each image holds rectangles whose colour encodes their class.

    Deterministic by ``(seed, index)``; class 0 is the background.
    """

    def __init__(self, num_samples: int, num_classes: int = 4, size: tuple[int, int] = (64, 64), seed: int = 0) -> None:
        if num_samples < 1 or num_classes < 2:
            raise ValueError(f"num_samples must be >= 1 and num_classes >= 2, got {num_samples}, {num_classes}")
        self.num_samples, self.num_classes, self.size, self.seed = num_samples, num_classes, tuple(size), seed
        g = torch.Generator().manual_seed(seed)
        self.palette = torch.rand(num_classes, 3, generator=g) * 2 - 1

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        h, w = self.size
        mask = torch.zeros(h, w, dtype=torch.long)
        for _ in range(3):
            cls = int(torch.randint(1, self.num_classes, (1,), generator=g))
            y0, x0 = (int(v) for v in torch.randint(0, max(h // 2, 1), (2,), generator=g))
            mask[y0 : y0 + h // 3, x0 : x0 + w // 3] = cls
        image = self.palette[mask].permute(2, 0, 1) + 0.1 * torch.randn(3, h, w, generator=g)
        return image, mask


# ------------------------------------------------------------------ load_data builders
def _crop(opts: DataOptions, default: int) -> tuple[int, int]:
    size = opts.image_size or default
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _segmentation_bundle(name: str, train: Dataset, val: Dataset | None, test: Dataset, *, num_classes: int,
                         crop: tuple[int, int], opts: DataOptions, classes: Sequence[str] = ()) -> DataBundle:
    if opts.variant is not None:
        raise ValueError(f"variant must be None for segmentation dataset {name!r}, got {opts.variant!r}")
    if opts.num_classes is not None and opts.num_classes != num_classes:
        raise ValueError(f"num_classes={opts.num_classes} does not match dataset {name!r}, which has {num_classes}")
    if opts.in_chans not in (None, 3):
        raise ValueError(f"in_chans must be 3 for segmentation dataset {name!r}, got {opts.in_chans}")
    workers = opts.num_workers if opts.num_workers is not None else min(8, max(1, (os.cpu_count() or 1) - 1))

    def loader(ds: Dataset, train_mode: bool) -> StreamingLoader:
        return StreamingLoader(ds, batch_size=opts.batch_size if train_mode else opts.eval_bs, shuffle=train_mode,
                               seed=opts.seed, rank=opts.rank, world_size=opts.world_size, device=opts.device,
                               num_workers=workers)

    return DataBundle(train=loader(train, True), val=None if val is None else loader(val, False),
                      test=loader(test, False), num_classes=num_classes, in_chans=3, image_size=crop,
                      task="segmentation", name=name, classes=list(classes), mean=MEAN, std=STD)


def _files_bundle(name: str, train_samples: list, test_samples: list, classes: Sequence[str], opts: DataOptions,
                  default_crop: int) -> DataBundle:
    crop = _crop(opts, default_crop)
    tr, va = split_for_validation(len(train_samples), opts)
    val_samples = None if va is None else [train_samples[i] for i in va.tolist()]
    train_samples = [train_samples[i] for i in tr.tolist()]
    if opts.eval_limit is not None:
        test_samples = test_samples[: opts.eval_limit]
    train_tf = JointTransform(crop, train=opts.augment)
    eval_tf = JointTransform(crop, train=False)
    return _segmentation_bundle(
        name, SegmentationDataset(train_samples, train_tf),
        None if val_samples is None else SegmentationDataset(val_samples, eval_tf),
        SegmentationDataset(test_samples, eval_tf), num_classes=len(classes), crop=crop, opts=opts, classes=classes)


def build_voc(opts: DataOptions) -> DataBundle:
    """PASCAL VOC 2012 (+SBD): train = ``train``/``train_aug`` minus the held-out ``val_fraction``;
    test = the official ``val`` split (what papers report). Crop 480 by default (Jang et al. 2023 Table 4)."""
    if opts.root is None:
        raise ValueError("dataset 'voc' needs root: a folder holding VOCdevkit/VOC2012/")
    return _files_bundle("voc", voc_samples(opts.root, "train"), voc_samples(opts.root, "val"), VOC_CLASSES, opts, 480)


def build_segfolder(opts: DataOptions) -> DataBundle:
    """Any folder of image/mask pairs with a ``classes.txt`` (layout in the module docstring)."""
    if opts.root is None:
        raise ValueError("dataset 'segfolder' needs root: a folder with images/, masks/ and classes.txt")
    train, classes = pair_samples(opts.root, "train")
    test, _ = pair_samples(opts.root, "val")
    return _files_bundle("segfolder", train, test, classes, opts, 256)


def build_random_segmentation(opts: DataOptions) -> DataBundle:
    """:class:`SyntheticSegmentation`: ``limit`` (default 64) training pairs, 16 test pairs."""
    if opts.root is not None:
        raise ValueError(f"dataset 'random-seg' takes no root (got root={opts.root!r})")
    num_classes = opts.num_classes or 4
    crop = _crop(opts, 64)
    n_train = opts.limit or 64
    full = SyntheticSegmentation(n_train, num_classes, crop, seed=opts.seed)
    tr, va = split_for_validation(n_train, opts)
    sub = torch.utils.data.Subset
    test = SyntheticSegmentation(opts.eval_limit or 16, num_classes, crop, seed=opts.seed + 1)
    return _segmentation_bundle("random-seg", sub(full, tr.tolist()), None if va is None else sub(full, va.tolist()),
                                test, num_classes=num_classes, crop=crop, opts=opts,
                                classes=[f"class{k}" for k in range(num_classes)])
