"""Edge inputs: empty batches, channels or spatial sizes to the layers; an image size too small
for the model; ``init_scale`` above the training cap."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from poolarch.layers import DiffStride2d, DynOPool1d, DynOPool2d, DynOPool3d, MultiResBlock, ShapeAdaptor2d
from poolarch.methods.dynopool import DynOPoolMethod
from poolarch.models import create_model, list_models, model_input_size
from poolarch.train import TrainConfig
from poolarch.train.build import check_input_size

torch.set_num_threads(1)

LAYERS = {
    "DynOPool1d": (DynOPool1d, 1), "DynOPool2d": (DynOPool2d, 2), "DynOPool3d": (DynOPool3d, 3),
    "ShapeAdaptor2d": (ShapeAdaptor2d, 2), "DiffStride2d": (DiffStride2d, 2),
    "MultiResBlock": (lambda: MultiResBlock(nn.Conv2d(3, 3, 3, padding=1)), 2),
}


@pytest.mark.parametrize("name", LAYERS)
def test_empty_batch_gives_empty_output(name):
    make, ndim = LAYERS[name]
    layer = make()
    full = layer(torch.randn(2, 3, *([8] * ndim)))
    empty = layer(torch.randn(0, 3, *([8] * ndim)))
    assert empty.shape == (0,) + tuple(full.shape[1:])


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("which", ["channels", "spatial"])
def test_zero_channels_or_spatial_size_is_a_clear_error(name, which):
    make, ndim = LAYERS[name]
    shape = (2, 0, *([8] * ndim)) if which == "channels" else (2, 3, *([8] * (ndim - 1)), 0)
    with pytest.raises(ValueError, match=r"has shape \(2, .*\): the channels C and every spatial size must be >= 1"):
        make()(torch.randn(*shape))


def test_init_scale_above_the_cap_layer_accepts_training_refuses():
    layer = DynOPool2d(init_scale=10)  # the layer has no cap ...
    assert torch.allclose(layer.scale, torch.tensor([10.0, 10.0]))
    method = DynOPoolMethod(max_scale=2.0)  # ... training clamps after every step ...
    method.setup(nn.Sequential(layer), torch.zeros(1, 1, 8, 8))
    method.after_step(nn.Sequential(layer), 0)
    assert torch.allclose(layer.scale, torch.tensor([2.0, 2.0]))
    # ... and a run's config refuses to start above it
    with pytest.raises(ValueError, match=r"init_scales must be <= max_scale 2 .*got 10"):
        TrainConfig(init_scales=10.0).check()
    with pytest.raises(ValueError, match=r"init_scales must be <= max_scale 2"):
        TrainConfig(init_scales=[0.5, [0.5, 3.0]]).check()
    TrainConfig(init_scales=10.0, max_scale=None).check()
    TrainConfig(init_scales=[0.5, 2.0]).check()


@pytest.mark.parametrize("size", [0, -3])
def test_image_size_must_be_positive(size):
    with pytest.raises(ValueError, match=r"image_size must be a positive integer"):
        TrainConfig(image_size=size).check()


def test_image_size_too_small_names_the_minimum():
    model = create_model("vgg_small", num_classes=4, pool="max", in_chans=1, width=0.25)
    with pytest.raises(ValueError, match=r"image_size 5x5 is too small for the model.*use image_size >= (\d+)") as info:
        check_input_size(model, torch.zeros(1, 1, 5, 5))
    minimum = int(info.value.args[0].rsplit(">= ", 1)[1])
    # the named minimum works and one less does not
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, minimum, minimum))
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 1, minimum - 1, minimum - 1))
    model.train()
    with pytest.raises(ValueError):
        check_input_size(model, torch.zeros(1, 1, 5, 5))
    assert model.training


def _warnings(caplog, model, *sizes, in_chans=3, **kwargs) -> list[str]:
    """The distinct ``poolarch`` warnings of ``check_input_size`` on square inputs of ``sizes``."""
    logger = logging.getLogger("poolarch")
    logger.addHandler(caplog.handler)  # the CLI's logger does not propagate to the root
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="poolarch"):
            for s in sizes:
                check_input_size(model, torch.zeros(1, in_chans, s, s), **kwargs)
    finally:
        logger.removeHandler(caplog.handler)
    return list(dict.fromkeys(r.getMessage() for r in caplog.records))  # once, whether or not it propagates


def test_collapsed_feature_maps_warn(caplog):
    model = create_model("vgg_small", num_classes=4, pool="max", in_chans=1, width=0.25)
    assert model.default_input_size == (28, 28)  # MNIST
    assert not _warnings(caplog, model, 64, in_chans=1)  # last map 8x8: fine
    messages = _warnings(caplog, model, 8, in_chans=1)  # three 2x2 max-pools: 1x1, below the nominal 28x28
    assert any("image_size 8x8: the last feature map is only 1x1 pixels; ConvStageNet is designed for 28x28" in m
               for m in messages)
    del model.default_input_size  # a model of unknown nominal size warns whenever the map collapses
    assert any("image_size 8x8: the last feature map is only 1x1 pixels; a larger image_size" in m
               for m in _warnings(caplog, model, 8, in_chans=1))


def test_collapsed_feature_map_at_the_nominal_size_does_not_warn(caplog):
    model = create_model("vgg16_cifar", num_classes=4, width=0.125)
    assert not _warnings(caplog, model, 32, 48, model_name="vgg16_cifar")  # 2x2 (its own design), 3x3
    messages = _warnings(caplog, model, 16, model_name="vgg16_cifar")  # below the nominal 32x32: 1x1
    assert messages == ["image_size 16x16: the last feature map is only 1x1 pixels; vgg16_cifar is designed for "
                        "32x32; a larger image_size keeps more spatial detail"]
    # one axis below the nominal size is enough
    model.default_input_size = (32, 64)
    assert len(_warnings(caplog, model, 32)) == 1


def test_every_registered_model_declares_its_input_size():
    """A new model must declare ``register_model(name, input_size=...)`` (no model is built here)."""
    missing = [name for name in list_models() if model_input_size(name) is None]
    assert not missing, f"register these with input_size=: {missing}"
    sizes = {name: model_input_size(name) for name in list_models()}
    assert sizes["vgg16_cifar"] == sizes["resnet20_cifar"] == sizes["mobilenetv2_cifar"] == (32, 32)
    assert sizes["vgg_small"] == (28, 28) and sizes["resnet50_imagenet_supernet"] == (224, 224)
    with pytest.raises(ValueError, match="model must be one of"):
        model_input_size("no_such_net")
