"""Model zoo: ``create_model(name, num_classes=..., pool=...)``; every family registers its builders
on import, and this package imports every family explicitly (no plugin loading)."""
from .registry import create_model, list_models, model_input_size, register_model
from . import hrnet, mobilenet, multires, plainnet, relaxed, resnet, supernet, vgg  # noqa: F401  (register the builders)
from .mobilenet import MobileNetV2Cifar
from .resnet import CifarResNet
from .vgg import ConvStageNet

__all__ = ["create_model", "list_models", "model_input_size", "register_model", "ConvStageNet", "CifarResNet",
           "MobileNetV2Cifar"]
