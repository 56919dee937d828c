"""HRNet with learnable resizing, segmentation data and mIoU (issue 7)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poolarch.data.segmentation import (
    IGNORE_INDEX,
    JointTransform,
    SegmentationDataset,
    SyntheticSegmentation,
    pair_samples,
    voc_samples,
)
from poolarch.layers import DynOPool2d, learnable_resizers
from poolarch.metrics import confusion_matrix, iou_from_confusion, mean_iou
from poolarch.models.hrnet import hrnet_w18_small, hrnet_w48


# ---------------------------------------------------------------- metrics
def test_miou_matches_hand_computed_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    # by hand: (t,p) pairs (ignoring the 255 pixel): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (1,0)
    expected = torch.tensor([[1, 1, 0], [1, 2, 0], [1, 0, 1]])
    assert torch.equal(confusion_matrix(pred, target, 3), expected)
    # IoU_c = tp / (row + col - tp): class0 1/(2+3-1)=1/4, class1 2/(3+3-2)=1/2, class2 1/(2+1-1)=1/2
    iou = iou_from_confusion(expected)
    assert torch.allclose(iou, torch.tensor([0.25, 0.5, 0.5], dtype=torch.float64))
    # accumulated over batches, not averaged per batch (per-batch mean would differ here)
    total = confusion_matrix(pred[:1], target[:1], 3) + confusion_matrix(pred[1:], target[1:], 3)
    assert mean_iou(total) == pytest.approx(100 * (0.25 + 0.5 + 0.5) / 3)


def test_miou_from_logits_and_absent_classes():
    target = torch.tensor([[[0, 0], [1, 1]]])
    logits = F.one_hot(target, 4).permute(0, 3, 1, 2).float()  # perfect prediction, classes 2, 3 absent
    assert mean_iou(confusion_matrix(logits.argmax(1), target, 4)) == pytest.approx(100.0)


def test_segmentation_task_accumulates_the_split_miou_of_poolarch_metrics():
    """The engine's SegmentationTask reports the split mIoU (%) of a slow per-pixel count (255
    ignored, logits upsampled to the mask), and rejects labels outside the classes."""
    from poolarch.train.task import SegmentationTask

    g = torch.Generator().manual_seed(0)
    num_classes = 4
    batches = []
    for _ in range(3):
        target = torch.randint(0, num_classes, (2, 6, 8), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.2] = IGNORE_INDEX
        batches.append((torch.randn(2, num_classes, 3, 4, generator=g), target))
    acc = SegmentationTask().accumulator(num_classes)
    tp, fp, fn = [0] * num_classes, [0] * num_classes, [0] * num_classes
    for logits, target in batches:
        acc.update(logits, target)
        pred = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
        for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
            if t == IGNORE_INDEX:
                continue
            if t == p:
                tp[t] += 1
            else:
                fn[t] += 1
                fp[p] += 1
    ious = [tp[c] / (tp[c] + fp[c] + fn[c]) for c in range(num_classes) if tp[c] + fp[c] + fn[c] > 0]
    assert acc.compute() == pytest.approx(100 * sum(ious) / len(ious), rel=1e-12)
    with pytest.raises(ValueError, match="target labels"):
        acc.update(batches[0][0], torch.full((2, 6, 8), num_classes))


def test_confusion_rejects_bad_labels():
    with pytest.raises(ValueError, match="target labels"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(2), torch.zeros(3), 3)


# ---------------------------------------------------------------- HRNet
def _strided_convs(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]


def test_hrnet_w48_macs_match_paper_table4():
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = hrnet_w48(num_classes=21).eval()
        x = torch.empty(1, 3, 480, 480)
        with FlopCounterMode(display=False) as counter:
            model(x)
    gmacs = counter.get_total_flops() / 2e9
    assert gmacs == pytest.approx(82.55, rel=0.01)  # Jang et al. 2023 Table 4, human-designed HRNet-W48


@pytest.mark.parametrize("builder", [hrnet_w18_small, hrnet_w48])
def test_hrnet_dynopool_rule_c_forward_backward(builder):
    torch.manual_seed(0)
    human = builder(num_classes=5)
    model = builder(num_classes=5, pool="dynopool")
    assert len(_strided_convs(human)) > 0 and _strided_convs(model) == []  # rule C removed every stride
    resizers = learnable_resizers(model)
    assert len(resizers) == 2 + 3  # stem x2, one per extra stream
    x = torch.randn(2, 3, 64, 64)
    y = model(x)
    assert y.shape == (2, 5, 64, 64)
    # at the initial scales the stream sizes equal the human design's
    assert model.stream_sizes() == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    y.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for _, r in resizers:
        assert r.alpha.grad.abs().sum() > 0


def test_hrnet_random_scales_keep_fuse_sizes_consistent():
    torch.manual_seed(1)
    model = hrnet_w18_small(num_classes=3, pool="dynopool")
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        with torch.no_grad():
            for _, r in learnable_resizers(model):
                r.alpha.copy_(torch.empty(2).uniform_(1.3, 3.0, generator=gen))
        x = torch.randn(1, 3, 61, 47)
        y = model(x)  # fuse layers add tensors: any size mismatch would raise
        assert y.shape == (1, 3, 61, 47)
        sizes = model.stream_sizes()
        # every stream is its resizer applied to the previous stream's size (one instance per stream)
        prev = (61, 47)
        for (_, r), size in zip(learnable_resizers(model), sizes):
            assert size == r.output_size(prev)
            prev = size


def test_hrnet_shares_one_resizer_per_stream():
    model = hrnet_w18_small(num_classes=3, pool="dynopool")
    calls = {}
    for i, r in enumerate(model.resizers):
        r.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls.get(i, 0) + 1))
    model(torch.randn(1, 3, 32, 32))
    # stream 4 (index 4) is produced by the stage-4 transition and by every down path ending there
    assert calls[0] == calls[1] == 1 and calls[4] > 1
    assert len({id(r.alpha) for r in model.resizers}) == 5


def test_hrnet_bad_arguments():
    with pytest.raises(ValueError, match="init_scales"):
        hrnet_w18_small(pool="dynopool", init_scales=[0.5, 0.5])
    with pytest.raises(ValueError, match="pool"):
        hrnet_w18_small(pool="nope")


# ---------------------------------------------------------------- data
def _write_voc(root, ids, size=(20, 24)):
    from PIL import Image

    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
        mask = rng.integers(0, 21, size, dtype=np.uint8)
        mask[0, :] = 255
        m = Image.fromarray(mask, mode="P")
        m.putpalette([c for k in range(256) for c in (k, k, k)])
        m.save(voc / "SegmentationClass" / f"{i}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:-1]) + "\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text(ids[-1] + "\n")
    return voc


def test_voc_reader_and_errors(tmp_path):
    from PIL import Image

    voc = _write_voc(tmp_path, ["2007_000001", "2007_000002", "2007_000003"])
    train = voc_samples(tmp_path, "train")
    assert [p.stem for p, _ in train] == ["2007_000001", "2007_000002"]
    ds = SegmentationDataset(voc_samples(voc, "val"), JointTransform(crop=(32, 32), train=False))
    image, mask = ds[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    raw = torch.from_numpy(np.array(Image.open(voc / "SegmentationClass/2007_000003.png"))).long()
    assert torch.equal(mask[:20, :24], raw)  # palette indices are the labels
    assert (mask[20:] == IGNORE_INDEX).all() and (mask[:, 24:] == IGNORE_INDEX).all()  # padding ignored
    with pytest.raises(FileNotFoundError, match="VOCdevkit/VOC2012"):
        voc_samples(tmp_path / "nothing", "train")


def test_pair_folder_reader(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.txt").write_text("bg\nthing\n")
    for k in range(30):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / f"s{k}.png")
        Image.fromarray(np.ones((8, 8), np.uint8)).save(tmp_path / "masks" / f"s{k}.png")
    train, names = pair_samples(tmp_path, "train")
    val, _ = pair_samples(tmp_path, "val")
    assert names == ["bg", "thing"]
    assert len(train) + len(val) == 30 and not {p for p, _ in train} & {p for p, _ in val}
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        pair_samples(tmp_path / "images", "train")


def test_joint_transform_keeps_image_and_mask_aligned():
    # image channel 0 holds the mask value, so alignment is checkable after every random step
    mask = torch.randint(0, 5, (37, 29))
    image = mask.float()[None].repeat(3, 1, 1)
    t = JointTransform(crop=(24, 24), train=True, scale_range=(1.0, 1.0))
    for seed in range(10):
        img, m = t(image, mask, torch.Generator().manual_seed(seed))
        valid = m != IGNORE_INDEX
        assert torch.equal(img[0][valid], m[valid].float())
    t = JointTransform(crop=(64, 64), train=True, scale_range=(2.0, 2.0))  # nearest mask vs bilinear image
    img, m = t(image, mask, torch.Generator().manual_seed(0))
    assert img.shape == (3, 64, 64) and m.shape == (64, 64)


def test_load_data_segmentation_bundles(tmp_path):
    from poolarch.data import load_data

    _write_voc(tmp_path, [f"2008_{k:06d}" for k in range(6)])
    bundle = load_data("voc", str(tmp_path), batch_size=2, image_size=32, val_fraction=0.2, num_workers=0)
    assert bundle.task == "segmentation" and bundle.num_classes == 21
    x, y = next(iter(bundle.train))
    assert x.shape == (2, 3, 32, 32) and y.shape == (2, 32, 32) and y.dtype == torch.int64
    assert len(bundle.val.dataset) == 1 and len(bundle.test.dataset) == 1
    synth = load_data("random-seg", batch_size=4, image_size=16, num_classes=3, num_workers=0)
    x, y = next(iter(synth.train))
    assert x.shape == (4, 3, 16, 16) and int(y.max()) < 3
    with pytest.raises(ValueError, match="variant"):
        load_data("random-seg", variant="tile", num_workers=0)
    with pytest.raises(ValueError, match="root"):
        load_data("voc")
