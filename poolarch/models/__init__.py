"""Model zoo: ``create_model(name, num_classes=..., pool=...)``; families register on import."""
from .registry import create_model, list_models, register_model
from . import mobilenet, plainnet, resnet, vgg  # noqa: F401  (register the builders)
from .mobilenet import MobileNetV2Cifar
from .resnet import CifarResNet
from .vgg import ConvStageNet

__all__ = ["create_model", "list_models", "register_model", "ConvStageNet", "CifarResNet", "MobileNetV2Cifar"]
