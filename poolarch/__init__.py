"""poolarch: learn where and how much a CNN downsamples.

Top-level shortcuts to the most used entry points::

    from poolarch import create_model, list_models, convert, freeze, count_macs, ComplexityLoss
"""
from .complexity import ComplexityLoss, count_macs, feature_map_sizes
from .convert import convert, freeze  # noqa: F811  (the function shadows the module attribute, like torch.nn.functional)
from .architecture import apply_architecture, load_architecture, save_architecture
from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "ComplexityLoss",
    "apply_architecture",
    "convert",
    "count_macs",
    "create_model",
    "feature_map_sizes",
    "freeze",
    "list_models",
    "load_architecture",
    "save_architecture",
]
