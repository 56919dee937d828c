"""Training method ``"multires"``: bilevel learning of multi-resolution mixing weights (the multi-resolution-block paper (WACV submission 832)
Sec. 3.4 / 4.1; Javan et al. 2023 appendix C).

The engine trains the network weights on D_a (its training stream: SGD + cosine); after every
training step it calls :meth:`MultiResMethod.val_step` with a batch of D_b (its validation stream),
on which this method updates the architecture parameters -- the mixing logits ``alpha`` of every
:class:`~poolarch.layers.multires.MultiResBlock` and the depth logits ``beta`` -- with its own Adam
(lr 1e-4, betas (0.5, 0.999), weight decay 3e-4). The architecture parameters are therefore left
out of the engine's optimiser (:meth:`MultiResMethod.param_groups`).

Method kwargs (``method_args`` / CLI):

* ``prune_threshold`` (float in (0, 1], default None): remove resolutions whose weight is below it
  (kept weights renormalise), then keep training the weights only ("fine-tune");
* ``one_res`` (bool): keep only the largest-weight resolution per layer (the "one resolution"
  model; :func:`poolarch.models.multires.export_one_resolution` turns it into a plain CNN);
* ``prune_epoch`` (int >= 1, default None): prune after that many epochs (``epoch_end`` with
  0-based ``epoch == prune_epoch - 1``). ``None``: half of the run's epochs (from the
  :class:`~poolarch.methods.RunInfo` given to ``setup``: search the first half, fine-tune the
  second) when the run has at least 2 epochs, else prune before the first training step -- for
  fine-tuning a model initialised from a finished search run (``train(cfg, model=trained)``; its
  alphas must not be uniform, else ``ValueError``);
* ``arch_lr``, ``arch_betas``, ``arch_weight_decay``: the Adam of the mixing weights;
* ``lr``, ``weight_decay``, ...: as :class:`~poolarch.methods.Method`;
* ``resolutions``, ``learn_depth``: optional, only checked against the model in ``setup`` (they are
  model arguments; a mismatch raises ``ValueError``).

Model kwargs (``model_args``; ``multires_net`` / ``multires_effconv``): ``resolutions`` (R),
``learn_depth`` (bool), ``channels``, ``num_layers``, ... -- see :mod:`poolarch.models.multires`.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..complexity import unwrap_model
from ..distributed import average_over_ranks_
from ..layers.base import architecture_parameters
from ..layers.multires import MultiResBlock
from .base import Method, RunInfo, register_method, split_parameters

__all__ = ["MultiResMethod"]


@register_method("multires")
class MultiResMethod(Method):
    """Bilevel multi-resolution training; see the module docstring for the arguments."""

    def __init__(
        self,
        prune_threshold: float | None = None,
        one_res: bool = False,
        prune_epoch: int | None = None,
        arch_lr: float = 1e-4,
        arch_betas: Sequence[float] = (0.5, 0.999),
        arch_weight_decay: float = 3e-4,
        resolutions: int | None = None,
        learn_depth: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.expected_resolutions = resolutions
        self.expected_learn_depth = learn_depth
        if prune_threshold is not None and not (0.0 < float(prune_threshold) <= 1.0):
            raise ValueError(f"prune_threshold must be in (0, 1] or None, got {prune_threshold!r}")
        if prune_threshold is not None and one_res:
            raise ValueError("prune_threshold and one_res are exclusive (one_res keeps the argmax only)")
        if prune_epoch is not None and (isinstance(prune_epoch, bool) or not isinstance(prune_epoch, int) or prune_epoch < 1):
            raise ValueError(f"prune_epoch must be an int >= 1 or None, got {prune_epoch!r}")
        if arch_lr <= 0:
            raise ValueError(f"arch_lr must be > 0, got {arch_lr!r}")
        if len(tuple(arch_betas)) != 2:
            raise ValueError(f"arch_betas must be a pair of floats, got {arch_betas!r}")
        self.prune_threshold = None if prune_threshold is None else float(prune_threshold)
        self.one_res = bool(one_res)
        self.requested_prune_epoch = prune_epoch
        self.prune_epoch = prune_epoch
        self.arch_lr = float(arch_lr)
        self.arch_betas = tuple(float(b) for b in arch_betas)
        self.arch_weight_decay = float(arch_weight_decay)
        self.pruned = False
        self.arch_optimizer: torch.optim.Adam | None = None
        self._pending_optimizer_state: Mapping[str, Any] | None = None

    @property
    def wants_pruning(self) -> bool:
        return self.prune_threshold is not None or self.one_res

    # -- hooks ---------------------------------------------------------------------------
    def setup(self, model: nn.Module, example_input: Tensor, run: RunInfo | None = None) -> None:
        super().setup(model, example_input, run)
        if self.requested_prune_epoch is None and self.wants_pruning and run is not None and run.epochs >= 2:
            self.prune_epoch = run.epochs // 2  # search the first half, fine-tune the second
        net = unwrap_model(model)
        if not any(isinstance(m, MultiResBlock) for m in net.modules()):
            raise ValueError(
                "method 'multires' needs a model with MultiResBlock layers (e.g. multires_net, multires_effconv)"
            )
        if self.expected_resolutions is not None:
            found = max(m.resolutions for m in net.modules() if isinstance(m, MultiResBlock))
            if found != self.expected_resolutions:
                raise ValueError(
                    f"resolutions={self.expected_resolutions} but the model was built with {found}; "
                    "pass resolutions in model_args (it is a model argument)"
                )
        if self.expected_learn_depth is not None and bool(getattr(net, "depth", None) is not None) != bool(self.expected_learn_depth):
            raise ValueError(
                f"learn_depth={self.expected_learn_depth} does not match the model; pass learn_depth in model_args"
            )

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Only the network weights: the mixing weights are updated by :meth:`val_step`."""
        weights, _ = split_parameters(unwrap_model(model))
        return [{"params": weights, "lr": self.lr, "weight_decay": self.weight_decay, "name": "weights"}]

    def forward(self, model: nn.Module, inputs: Tensor) -> Tensor:
        if self.wants_pruning and self.prune_epoch is None and not self.pruned:
            self._prune(unwrap_model(model), require_trained=True)
        return model(inputs)

    def _arch_params(self, net: nn.Module) -> list[nn.Parameter]:
        return [p for p in architecture_parameters(net) if p.requires_grad]

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Adam:
        if self.arch_optimizer is None:
            self.arch_optimizer = torch.optim.Adam(
                params, lr=self.arch_lr, betas=self.arch_betas, weight_decay=self.arch_weight_decay  # type: ignore[arg-type]
            )
            if self._pending_optimizer_state is not None:
                self.arch_optimizer.load_state_dict(self._pending_optimizer_state)
                self._pending_optimizer_state = None
        return self.arch_optimizer

    def val_step(self, model: nn.Module, inputs: Tensor, targets: Tensor, task_loss: Callable[[Tensor, Tensor], Tensor]) -> None:
        """One Adam step of the mixing weights on a D_b batch; network weights are not touched
        (gradients are taken with ``torch.autograd.grad`` w.r.t. the architecture parameters only,
        so the engine's ``.grad`` buffers stay as they are). No-op once pruned."""
        if self.pruned:
            return
        net = unwrap_model(model)
        params = self._arch_params(net)
        if not params:
            return
        loss = task_loss(net(inputs), targets)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        average_over_ranks_(grads)  # every rank takes the same step (a no-op in one process)
        opt = self._optimizer(params)
        for p, g in zip(params, grads):
            p.grad = g.detach()
        opt.step()
        for p in params:
            p.grad = None

    def epoch_end(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Metrics of the weights learned so far (see :meth:`metrics`); at ``prune_epoch`` the
        network is pruned *after* they are recorded, so the row shows what the pruning used."""
        net = unwrap_model(model)
        out = self.metrics(net)
        if self.wants_pruning and self.prune_epoch is not None and not self.pruned and epoch + 1 >= self.prune_epoch:
            self._prune(net, require_trained=False)
        if self.wants_pruning:
            out["multires/pruned"] = int(self.pruned)
        return out

    # -- pruning and reporting --------------------------------------------------------------
    def _prune(self, net: nn.Module, require_trained: bool) -> None:
        blocks = [m for m in net.modules() if isinstance(m, MultiResBlock)]
        if require_trained and all(bool(torch.all(b.alpha == b.alpha.flatten()[0])) for b in blocks if b.resolutions > 1):
            raise ValueError(
                "prune_threshold/one_res with prune_epoch=None prunes before training and needs a model whose "
                "mixing weights were learned (initialise it from a search run), or set prune_epoch"
            )
        for b in blocks:
            if self.one_res:
                b.keep_only()
            else:
                b.prune(self.prune_threshold)  # type: ignore[arg-type]
        self.pruned = True

    @staticmethod
    def metrics(net: nn.Module) -> dict[str, Any]:
        """Scalars: ``alpha/l{l}_r{r}`` (mixing weights), ``multires/mean_level`` (weight-averaged
        level over layers), ``beta/l{l}`` and ``learned_depth`` when the depth is learned."""
        out: dict[str, Any] = {}
        levels = []
        blocks = [m for m in net.modules() if isinstance(m, MultiResBlock)]
        for i, b in enumerate(blocks):
            w = b.weights().detach().float().cpu()
            for r, v in enumerate(w.tolist()):
                out[f"alpha/l{i + 1}_r{r}"] = round(v, 6)
            levels.append(float((w * torch.arange(w.numel())).sum()))
        if levels:
            out["multires/mean_level"] = round(sum(levels) / len(levels), 6)
        depth = getattr(net, "depth", None)
        if depth is not None and hasattr(depth, "learned_depth"):
            for i, v in enumerate(depth.weights().detach().float().cpu().tolist()):
                out[f"beta/l{i + 1}"] = round(v, 6)
            out["learned_depth"] = depth.learned_depth()
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["pruned"] = self.pruned
        if self.arch_optimizer is not None:
            state["arch_optimizer"] = self.arch_optimizer.state_dict()
        elif self._pending_optimizer_state is not None:
            state["arch_optimizer"] = self._pending_optimizer_state
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.pruned = bool(state.get("pruned", self.pruned))
        opt_state = state.get("arch_optimizer")
        if opt_state is not None:
            if self.arch_optimizer is not None:
                self.arch_optimizer.load_state_dict(opt_state)
            else:
                self._pending_optimizer_state = copy.deepcopy(dict(opt_state))
