"""convert() with no arguments keeps every model's sizes at its nominal input size (issue 13, point 5).

Every torchvision classifier that torch.fx can trace, the timm families of test_convert.py and
timm's inception_v3, dla34, cspresnet50, ghostnet_100 and xception41 (no pretrained weights,
nothing downloaded): converted without ``example_input``, every conv sees the input shape it sees in
the original network at the nominal size (forward hooks; reference: the original model), and one
training step (forward + backward, batch 1) runs there.

Reference for the nominal size, independent of convert(): the crop size of the builder's default
torchvision weights (``get_model_weights(name).DEFAULT.transforms``; a ViT's own ``image_size``
when built without weights), timm's ``pretrained_cfg["input_size"]``.

Every builder is checked on the meta device (shapes only: the real builder at its nominal size, no
weights in memory); one real training step at the nominal size runs for every builder up to 2
GFLOPs and for the smallest builder of every other family (``TRAIN``), which also checks the sizes
with real tensors.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from test_convert import check_training_step, conv_input_sizes
from torch import nn

from poolarch.convert import convert
from poolarch.layers import learnable_resizers

torch.set_num_threads(1)

TORCHVISION = torchvision.models.list_models(module=torchvision.models)
# data-dependent Python control flow in forward (torch.fx cannot trace it): none in torchvision 0.29
UNTRACEABLE: set[str] = set()


def gflops(name: str) -> float:
    """Forward GFLOPs at the nominal size, from the default weights' metadata (nothing downloaded)."""
    return float(torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"])


# one real training step at the nominal size: every builder up to 2 GFLOPs, Inception-v3 (the
# known crash) and the smallest builder of every other family
TRAIN = sorted({n for n in TORCHVISION if gflops(n) <= 2.0} | {
    "inception_v3", "densenet121", "convnext_tiny", "swin_t", "vit_b_32", "maxvit_t", "vgg11",
    "efficientnet_v2_s", "resnet50", "resnext50_32x4d"})
TIMM = ["resnet18", "resnet50d", "efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "regnetx_002",
        "inception_v3", "dla34", "cspresnet50", "ghostnet_100", "xception41"]
TIMM_SLOW = {"xception41", "cspresnet50"}


def torchvision_nominal_size(name: str, model: nn.Module) -> int:
    if isinstance(model, torchvision.models.VisionTransformer):
        return model.image_size  # the position embedding fixes it; 518 only with the SWAG weights
    return torchvision.models.get_model_weights(name).DEFAULT.transforms.keywords["crop_size"]


def meta_conv_input_sizes(model: nn.Module, size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """:func:`conv_input_sizes` with every weight on the meta device (shapes only); learnable
    resizers keep their real scale parameter, so they compute their real output sizes."""
    keep = {f"{n}.{p}" for n, m in learnable_resizers(model) for p, _ in m.named_parameters()}
    state = {k: v if k in keep else torch.empty_like(v, device="meta")
             for k, v in [*model.named_parameters(), *model.named_buffers()]}
    sizes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_pre_hook(lambda m, i: sizes.append(tuple(i[0].shape)))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    model.eval()
    with torch.no_grad():
        out = torch.func.functional_call(model, state, (torch.empty(size, device="meta"),), strict=False)
    for h in hooks:
        h.remove()
    return sizes + [tuple(out.shape)]


def training_step(model: nn.Module, x: torch.Tensor) -> None:
    """check_training_step on the logits (Inception/GoogLeNet return a tuple with the auxiliary
    logits in training mode: their loss is added so every parameter gets a gradient)."""

    class Logits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            if isinstance(out, tuple):
                return sum(o for o in out if o is not None)
            return out

    check_training_step(Logits(model), x)


def check_keeps_sizes(original: nn.Module, size: int, channels: int = 3, batch: int = 1) -> None:
    """Converted with no arguments (in place: one copy of the weights), every conv of the model
    sees the input shape it saw in the original at ``size`` (shapes on the meta device, see
    ``test_meta_shape_check_sees_what_a_real_forward_sees``), and a real training step runs there."""
    shape = (1, channels, size, size)
    expected = meta_conv_input_sizes(original, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "sizes differ" / "nothing to convert" warning
        model, report = convert(original, inplace=True)
    assert report.sites and report.input_size == (size, size), str(report)
    assert all(s.out_size is not None for s in report.sites), str(report)  # every site reached
    assert meta_conv_input_sizes(model, shape) == expected
    training_step(model, torch.randn(batch, channels, size, size))


def build_on_meta(name: str) -> nn.Module:
    """The builder's network with every weight on the meta device (no memory, no init time);
    RegNet computes its widths with tensor ops, so it is built on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GoogLeNet/Inception: init_weights default notice
        try:
            with torch.device("meta"):
                return torchvision.models.get_model(name, weights=None)
        except NotImplementedError:
            return torchvision.models.get_model(name, weights=None)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("regnet_y_128") else n
                                  for n in TORCHVISION if n not in UNTRACEABLE])
def test_torchvision_builder_keeps_sizes_at_nominal_size(name):
    """Every traceable builder, at its nominal size: every conv sees the original input shape."""
    original = build_on_meta(name)
    size = torchvision_nominal_size(name, original)
    shape = (1, 3, size, size)
    expected = meta_conv_input_sizes(original, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "sizes differ" / "nothing to convert" warning
        model, report = convert(original, inplace=True)
    assert report.sites and report.input_size == (size, size), str(report)
    assert all(s.out_size is not None for s in report.sites), str(report)  # every site reached
    assert meta_conv_input_sizes(model, shape) == expected


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if gflops(n) > 2.0 else n
                                  for n in TRAIN if n not in UNTRACEABLE])
def test_torchvision_builder_trains_at_nominal_size(name):
    """The real network (random weights) converted with no arguments: one training step at the
    nominal size, and the sizes kept there."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = torchvision.models.get_model(name, weights=None)
    with torch.no_grad():  # ViT zero-initialises its head: no gradient would reach anything before it
        for m in original.modules():
            if isinstance(m, nn.Linear) and not m.weight.any():
                m.weight.normal_(std=0.02)
    # batch 2 for Inception-v3: its auxiliary head's BatchNorm sees a 1x1 map in training mode
    check_keeps_sizes(original, torchvision_nominal_size(name, original), batch=2 if name == "inception_v3" else 1)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in TIMM_SLOW else n for n in TIMM])
def test_timm_model_keeps_sizes_at_nominal_size(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    original = timm.create_model(name, pretrained=False)
    c, h, w = original.pretrained_cfg["input_size"]
    assert h == w
    check_keeps_sizes(original, h, channels=c)


def test_meta_shape_check_sees_what_a_real_forward_sees():
    """The meta-device check used for the biggest builders agrees with a real forward pass
    (here on AlexNet, whose sizes the old 1/stride initialisation changed: 27 -> 28)."""
    original = torchvision.models.alexnet()
    model, _ = convert(original)
    x = torch.randn(1, 3, 224, 224)
    assert meta_conv_input_sizes(model, (1, 3, 224, 224)) == conv_input_sizes(model, x)
    assert meta_conv_input_sizes(original, (1, 3, 224, 224)) == conv_input_sizes(original, x)
    wrong, _ = convert(original, init_scales=[(1 / 8, 1 / 8), 0.5, 0.5])
    assert meta_conv_input_sizes(wrong, (1, 3, 224, 224)) != conv_input_sizes(original, x)
