"""Image datasets read from local folders (streamed through DataLoader workers, never downloaded).

Layouts (``root`` may be the dataset folder or, where a folder name is given, its parent):

* ``imagefolder``: ``root/train/<class>/*`` (required) plus ``root/val/<class>/*`` and/or
  ``root/test/<class>/*``; test = ``test`` (else ``val``); val = ``val`` when both exist, else a
  ``val_fraction`` split of train. Classes are the sub-folders of ``train``.
* ``imagenet``: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*`` (val is the test set; the
  validation stream is a ``val_fraction`` split of train).
* ``aircraft`` (FGVC-Aircraft 2013b, variant level, 100 classes): ``fgvc-aircraft-2013b/data/images/*.jpg``
  and ``data/images_variant_{train,val,test}.txt`` (lines ``<image id> <variant name>``); uses
  the official val split.
* ``food101``: ``food-101/images/<class>/*.jpg`` and ``meta/{train,test}.txt`` (lines
  ``<class>/<image id>``, no extension), classes from ``meta/classes.txt`` when present.
"""
from __future__ import annotations

from pathlib import Path

from .bundle import DataBundle, DataOptions, streaming_bundle

__all__ = ["scan_class_folders", "read_aircraft", "read_food101", "build_imagefolder", "build_imagenet",
           "build_aircraft", "build_food101"]

Samples = list[tuple[str, int]]

_LAYOUTS = {
    "imagefolder": "root/train/<class>/<image> plus root/val/<class>/<image> and/or root/test/<class>/<image>",
    "imagenet": "root/train/<wnid>/<image>.JPEG and root/val/<wnid>/<image>.JPEG",
    "aircraft": "fgvc-aircraft-2013b/data/images/<id>.jpg and fgvc-aircraft-2013b/data/images_variant_"
                "{train,val,test}.txt (root may be fgvc-aircraft-2013b, its data/ folder or its parent)",
    "food101": "food-101/images/<class>/<id>.jpg and food-101/meta/{train,test}.txt "
               "(root may be food-101 or its parent)",
}


def _root(root: str | Path | None, name: str) -> Path:
    if root is None:
        raise ValueError(f"dataset {name!r} needs root=; expected layout: {_LAYOUTS[name]}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: {str(path)!r} is not a directory; expected layout: {_LAYOUTS[name]}")
    return path


def _missing(name: str, path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"dataset {name!r}: {what} not found under {str(path)!r}; expected layout: {_LAYOUTS[name]}")


def scan_class_folders(split_dir: Path, class_to_idx: dict[str, int] | None = None) -> tuple[Samples, list[str]]:
    """``([(path, label)], classes)`` of ``split_dir/<class>/<image>``; with ``class_to_idx`` the
    labels follow it (folders of unknown classes raise ValueError)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    classes, found = find_classes(str(split_dir))
    if class_to_idx is None:
        class_to_idx = found
    else:
        unknown = sorted(set(classes) - set(class_to_idx))
        if unknown:
            raise ValueError(f"{str(split_dir)!r} has class folders missing from train: {unknown[:5]}")
    samples = make_dataset(str(split_dir), {c: class_to_idx[c] for c in classes}, IMG_EXTENSIONS, allow_empty=True)
    return samples, sorted(class_to_idx, key=class_to_idx.get)


def _scan(name: str, split_dir: Path, class_to_idx: dict[str, int] | None = None) -> tuple[Samples, list[str]]:
    try:
        samples, classes = scan_class_folders(split_dir, class_to_idx)
    except FileNotFoundError:
        raise _missing(name, split_dir, "class sub-folders with images") from None
    if not samples:
        raise _missing(name, split_dir, "images (.jpg/.jpeg/.png/...)")
    return samples, classes


def build_imagefolder(opts: DataOptions, name: str = "imagefolder") -> DataBundle:
    root = _root(opts.root, name)
    if not (root / "train").is_dir():
        raise _missing(name, root, "folder 'train'")
    train, classes = _scan(name, root / "train")
    c2i = {c: i for i, c in enumerate(classes)}
    has_val, has_test = (root / "val").is_dir(), (root / "test").is_dir()
    if not (has_val or has_test):
        raise _missing(name, root, "folder 'val' or 'test'")
    test, _ = _scan(name, root / ("test" if has_test else "val"), c2i)
    val = _scan(name, root / "val", c2i)[0] if (has_val and has_test) else None
    return streaming_bundle(name, train, test, val=val, num_classes=len(classes), classes=classes, opts=opts)


def build_imagenet(opts: DataOptions) -> DataBundle:
    root = _root(opts.root, "imagenet")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise _missing("imagenet", root, f"folder {split!r}")
    train, classes = _scan("imagenet", root / "train")
    test, _ = _scan("imagenet", root / "val", {c: i for i, c in enumerate(classes)})
    return streaming_bundle("imagenet", train, test, num_classes=len(classes), classes=classes, opts=opts)


def _find(root: Path, relative: str, parents: tuple[str, ...]) -> Path | None:
    for base in (root, *(root / p for p in parents)):
        if (base / relative).exists():
            return base
    return None


def read_aircraft(root: str | Path | None) -> tuple[dict[str, Samples], list[str]]:
    """``({"train"|"val"|"test": [(path, label)]}, variant names)`` of FGVC-Aircraft."""
    base = _root(root, "aircraft")
    data = _find(base, "images_variant_train.txt", ("data", "fgvc-aircraft-2013b/data"))
    if data is None:
        raise _missing("aircraft", base, "data/images_variant_train.txt")
    rows: dict[str, list[tuple[str, str]]] = {}
    for split in ("train", "val", "test"):
        path = data / f"images_variant_{split}.txt"
        if not path.is_file():
            raise _missing("aircraft", base, f"data/images_variant_{split}.txt")
        rows[split] = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split(" ", 1)
            if len(parts) != 2:
                raise ValueError(f"dataset 'aircraft': {str(path)!r} line {n} is not '<image id> <variant>': {line!r}")
            rows[split].append((parts[0], parts[1]))
    names_file = data / "variants.txt"
    if names_file.is_file():
        classes = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
    else:
        classes = sorted({v for split in rows.values() for _, v in split})
    c2i = {c: i for i, c in enumerate(classes)}
    out: dict[str, Samples] = {}
    for split, items in rows.items():
        samples = []
        for image_id, variant in items:
            if variant not in c2i:
                raise ValueError(f"dataset 'aircraft': variant {variant!r} of image {image_id} not in variants.txt")
            path = data / "images" / f"{image_id}.jpg"
            if not path.is_file():
                raise _missing("aircraft", base, f"image data/images/{image_id}.jpg")
            samples.append((str(path), c2i[variant]))
        out[split] = samples
    return out, classes


def build_aircraft(opts: DataOptions) -> DataBundle:
    splits, classes = read_aircraft(opts.root)
    return streaming_bundle("aircraft", splits["train"], splits["test"], val=splits["val"],
                            num_classes=len(classes), classes=classes, opts=opts)


def read_food101(root: str | Path | None) -> tuple[dict[str, Samples], list[str]]:
    """``({"train"|"test": [(path, label)]}, class names)`` of Food-101."""
    base = _root(root, "food101")
    top = _find(base, "meta/train.txt", ("food-101",))
    if top is None:
        raise _missing("food101", base, "meta/train.txt")
    lists: dict[str, list[str]] = {}
    for split in ("train", "test"):
        path = top / "meta" / f"{split}.txt"
        if not path.is_file():
            raise _missing("food101", base, f"meta/{split}.txt")
        lists[split] = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    classes_file = top / "meta" / "classes.txt"
    if classes_file.is_file():
        classes = [ln.strip() for ln in classes_file.read_text().splitlines() if ln.strip()]
    else:
        classes = sorted({item.split("/", 1)[0] for items in lists.values() for item in items})
    c2i = {c: i for i, c in enumerate(classes)}
    out: dict[str, Samples] = {}
    for split, items in lists.items():
        samples = []
        for item in items:
            cls = item.split("/", 1)[0]
            if "/" not in item or cls not in c2i:
                raise ValueError(f"dataset 'food101': meta/{split}.txt entry {item!r} is not '<class>/<image id>' "
                                 "of a known class")
            path = top / "images" / f"{item}.jpg"
            if not path.is_file():
                raise _missing("food101", base, f"image images/{item}.jpg")
            samples.append((str(path), c2i[cls]))
        out[split] = samples
    return out, classes


def build_food101(opts: DataOptions) -> DataBundle:
    splits, classes = read_food101(opts.root)
    return streaming_bundle("food101", splits["train"], splits["test"], num_classes=len(classes),
                            classes=classes, opts=opts)
