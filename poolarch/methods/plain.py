"""Method ``"plain"``: ordinary supervised training of a network without architecture parameters.

``plain`` is the default method of :class:`~poolarch.train.TrainConfig`, so configurations written
before ``dynopool`` became a method of its own say ``method: plain`` with ``pool: dynopool``. Such a
model has learnable resizers, and :meth:`PlainMethod.for_model` then resolves ``plain`` to the
``dynopool`` method (:class:`~poolarch.methods.dynopool.DynOPoolMethod`): the run trains exactly as
it did, and its ``config.yaml`` keeps ``method: plain``.
"""
from __future__ import annotations

from typing import ClassVar

from torch import nn

from ..layers.base import learnable_resizers
from .base import METHODS, Method, register_method

__all__ = ["PlainMethod"]


@register_method("plain")
class PlainMethod(Method):
    """Args: those of :class:`~poolarch.methods.Method`; ``target_gmacs`` must be ``None`` (there
    is no architecture to fit to a budget)."""

    config_keys: ClassVar[tuple[str, ...]] = Method.config_keys + ("target_gmacs",)

    def __init__(self, lr: float = 0.1, scale_lr: float = 0.01, weight_decay: float = 5e-4,
                 target_gmacs: float | None = None) -> None:
        super().__init__(lr=lr, scale_lr=scale_lr, weight_decay=weight_decay)
        if target_gmacs is not None:
            raise ValueError("target_gmacs adjusts DynOPool scales: it needs pool 'dynopool' (a model with "
                             "learnable resizers); this model has none")

    @classmethod
    def for_model(cls, model: nn.Module) -> type[Method]:
        """``dynopool`` when ``model`` has learnable resizers (old configurations), else ``plain``."""
        return METHODS.get("dynopool") if learnable_resizers(model) else cls
