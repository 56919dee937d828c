"""Shape Adaptor's optimisation (Liu et al., ECCV 2020) as a :class:`Method`.

* ``alpha`` lives in its own parameter group (``scale_lr``, no weight decay) and is updated only
  every ``update_every`` training steps (paper: 20); on the other steps the adaptors' ``alpha``
  does not require grad, so the optimiser skips it entirely (its momentum too). The authors take a
  separate alpha step on the same batch before the weight step; here both are updated in the
  same optimiser step (their "joint" variant).
* optional automatic initialisation (``target_size``): :func:`poolarch.layers.init_shape_adaptors`
  in :meth:`setup`, so the adaptors' ratios multiply to ``target_size / input_size``;
* optional memory bound (``limit_size``): :func:`poolarch.layers.apply_memory_bound` before every
  forward pass.

Everything else is the ``dynopool`` method's joint training (:class:`DynOPoolMethod`): the
optional complexity loss ``lambda * GMACs`` (0 in Shape Adaptor's own configurations) and the
``max_scale`` bound, which for an adaptor bounds its ratio and is a no-op for ``max_scale >= 1``.

Toggling ``requires_grad`` leaves alpha unused on most steps, so under DDP the engine builds the
wrapper with ``find_unused_parameters=True`` (:attr:`ddp_find_unused_parameters`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from ..layers.shape_adaptor import apply_memory_bound, init_shape_adaptors, shape_adaptors
from .base import RunInfo, register_method
from .dynopool import DynOPoolMethod

__all__ = ["ShapeAdaptorMethod"]


@register_method("shape_adaptor")
class ShapeAdaptorMethod(DynOPoolMethod):
    """Args (besides those of :class:`DynOPoolMethod`):
        update_every: alpha is updated on steps ``0, k, 2k, ...`` (paper: 20).
        target_size: final feature size for the automatic initialisation (``None`` = keep the
            layers' initial ratios); ``fixed_reduction``: non-learnable downsampling in the model.
        limit_size: memory bound on the final feature size (``None`` = no bound).
    """

    ddp_find_unused_parameters = True  # alpha is frozen on the steps between its updates

    def __init__(
        self,
        update_every: int = 20,
        target_size: int | Sequence[int] | None = None,
        fixed_reduction: float = 1.0,
        limit_size: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every must be a positive int, got {update_every!r}")
        if limit_size is not None and not (isinstance(limit_size, (int, float)) and limit_size > 0):
            raise ValueError(f"limit_size must be a number > 0 or None, got {limit_size!r}")
        self.update_every = update_every
        self.target_size = target_size
        self.fixed_reduction = fixed_reduction
        self.limit_size = limit_size
        self.step = 0

    def setup(self, model: nn.Module, example_input: Tensor, run: RunInfo | None = None) -> None:
        if not shape_adaptors(model):
            raise ValueError("method 'shape_adaptor' needs a model with ShapeAdaptor2d layers (pool='shape_adaptor')")
        if self.target_size is not None:
            init_shape_adaptors(model, tuple(example_input.shape[2:]), self.target_size, self.fixed_reduction)
        super().setup(model, example_input, run)

    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        update = self.step % self.update_every == 0
        for adaptor in shape_adaptors(model):
            adaptor.alpha.requires_grad_(update)
        if self.limit_size is not None:
            apply_memory_bound(model, tuple(inputs.shape[2:]), self.limit_size)
        self.step += 1
        return model(inputs)

    def epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        return {f"sa_ratio_{i}": float(m.ratio.detach()) for i, m in enumerate(shape_adaptors(model))}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.step = int(state.get("step", self.step))
