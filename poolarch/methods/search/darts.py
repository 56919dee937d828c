"""DARTS over the multi-resolution relaxation (Javan et al. 2023, app. C; Liu et al. 2019).

The model is a :class:`poolarch.models.relaxed.MultiResolutionResNet` (weights shared across
resolutions or not). The engine trains the weights on the training split with its optimiser
(architecture logits excluded); after every training step :meth:`val_step` takes one
first-order DARTS step of Adam (paper: lr 1e-2) on the mixing logits with the validation
mini-batch loss. After the search every configuration of the space is ranked by evaluating its
single path; the DARTS answer itself is the per-layer argmax (possibly outside the space).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ...complexity import unwrap_model
from ...distributed import average_over_ranks_
from ...models.relaxed import MultiResolutionResNet
from ..base import RunInfo, register_method
from .base import SearchMethod, batch_statistics

__all__ = ["DARTS"]


@register_method("darts")
class DARTS(SearchMethod):
    """Args: ``lr``, ``weight_decay`` (weights, engine optimiser); ``arch_lr``, ``arch_betas``,
    ``arch_weight_decay`` (Adam on the mixing logits)."""

    supernet = "multires_supernet"

    def __init__(self, lr: float = 0.1, weight_decay: float = 5e-4, arch_lr: float = 1e-2,
                 arch_betas: tuple[float, float] = (0.9, 0.999), arch_weight_decay: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, **kwargs)
        if not arch_lr > 0:
            raise ValueError(f"arch_lr must be > 0, got {arch_lr}")
        self.arch_lr = float(arch_lr)
        self.arch_betas = tuple(float(b) for b in arch_betas)
        self.arch_weight_decay = float(arch_weight_decay)
        self.arch_optimizer: torch.optim.Optimizer | None = None
        self._pending: Mapping[str, Any] | None = None
        self.model: nn.Module | None = None

    def setup(self, model: nn.Module, example_input: Tensor, run: RunInfo | None = None) -> None:
        super().setup(model, example_input, run)
        if not isinstance(model, MultiResolutionResNet):
            raise TypeError(
                f"model must be a multi-resolution supernet (e.g. 'resnet20_multires_supernet'), "
                f"got {type(model).__name__}"
            )
        self.model = model
        self.configs = model.space.configs
        self.arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=self.arch_lr, betas=self.arch_betas,
                                               weight_decay=self.arch_weight_decay)
        if self._pending is not None:
            self.arch_optimizer.load_state_dict(self._pending)
            self._pending = None

    def val_step(self, model: nn.Module, inputs: Tensor, targets: Tensor,
                 task_loss: Callable[[Tensor, Tensor], Tensor]) -> None:
        model = unwrap_model(model)  # under DDP the architecture step runs on the module
        alphas = model.arch_parameters()
        with torch.enable_grad(), batch_statistics(model):
            loss = task_loss(model(inputs), targets)
            grads = list(torch.autograd.grad(loss, alphas))
        average_over_ranks_(grads)  # every rank takes the same step (a no-op in one process)
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad
        self.arch_optimizer.step()
        for alpha in alphas:
            alpha.grad = None

    def proxy_scores(self) -> np.ndarray:
        """Path log-probability of every configuration under the mixing weights."""
        return np.array([self.model.path_log_probability(c) for c in self.configs])

    def search_info(self, model: nn.Module) -> dict[str, Any]:
        """The DARTS answer itself: the per-layer argmax of the mixing weights."""
        return {"darts_argmax_resolutions": model.argmax_resolutions()}

    def epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        return {"search_argmax": "".join(map(str, model.argmax_resolutions()))}

    def state_dict(self) -> dict[str, Any]:
        return {"arch_optimizer": None if self.arch_optimizer is None else self.arch_optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        opt = state.get("arch_optimizer")
        if opt is None:
            return
        if self.arch_optimizer is None:
            self._pending = opt
        else:
            self.arch_optimizer.load_state_dict(opt)
