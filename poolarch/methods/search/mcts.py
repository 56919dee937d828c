"""Monte-Carlo tree search with UCB over pooling configurations (Javan et al. 2023, app. C, Eq. 6).

The space is a binary tree over layers: layer 0 is fixed at full resolution; at every later layer
a node has at most two children, "same resolution" and "downsample", restricted so that every
leaf ends at the lowest resolution -- the leaves are exactly the configurations of the space
(36 for ResNet20). A path is chosen from the root by maximising
``UCB(child) = reward(child) / n(child) + c * sqrt(log n(parent) / n(child))`` (unvisited
children first, ties broken at random); the validation mini-batch accuracy of the trained path
is added to the reward and visit count of every node on it. Optionally, configurations are drawn
uniformly during the first ``warmup`` fraction of training ("+ Unif. Smp." in Table 2); the tree
statistics are updated during the warm-up as well.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ...models.space import Config, config_to_resolutions
from ..base import RunInfo, register_method
from .base import SamplingSearchMethod

__all__ = ["MCTSUCB"]

Node = tuple[int, ...]  # resolution levels of the layers decided so far


@register_method("mcts-ucb")
class MCTSUCB(SamplingSearchMethod):
    """Args (besides :class:`SamplingSearchMethod`'s): ``ucb_c`` (exploration constant ``c``),
    ``warmup`` (fraction of training with uniform sampling, in [0, 1])."""

    def __init__(self, ucb_c: float = 1.0, warmup: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= warmup <= 1.0:
            raise ValueError(f"warmup must be a fraction in [0, 1], got {warmup}")
        if ucb_c < 0:
            raise ValueError(f"ucb_c must be >= 0, got {ucb_c}")
        self.ucb_c = float(ucb_c)
        self.warmup = float(warmup)
        self.reward: dict[Node, float] = {}
        self.count: dict[Node, int] = {}
        self._index: dict[Node, int] = {}

    def bind(self, configs: list[Config], num_models: int, run: RunInfo | None = None) -> None:
        self._index = {tuple(config_to_resolutions(c)): i for i, c in enumerate(configs)}
        self.num_layers = sum(configs[0])
        self.num_pools = len(configs[0]) - 1
        super().bind(configs, num_models, run)

    @property
    def needs_schedule(self) -> bool:
        return self.warmup > 0

    def children(self, node: Node) -> list[Node]:
        """Feasible children of a node: same level and/or one level lower."""
        layer, level = len(node), node[-1]
        remaining_after = self.num_layers - layer - 1  # layers after the child
        out = []
        if self.num_pools - level <= remaining_after:
            out.append(node + (level,))
        if level < self.num_pools and self.num_pools - level - 1 <= remaining_after:
            out.append(node + (level + 1,))
        return out

    def ucb(self, parent: Node, child: Node) -> float:
        n = self.count.get(child, 0)
        if n == 0:
            return math.inf
        return self.reward[child] / n + self.ucb_c * math.sqrt(math.log(self.count.get(parent, 1)) / n)

    def sample(self) -> tuple[int, int]:
        if self.progress < self.warmup:
            return int(self.rng.integers(len(self.configs))), 0
        node: Node = (0,)
        while len(node) < self.num_layers:
            options = self.children(node)
            scores = np.array([self.ucb(node, child) for child in options])
            best = np.flatnonzero(scores == scores.max())
            node = options[int(best[self.rng.integers(len(best))]) if len(best) > 1 else int(best[0])]
        return self._index[node], 0

    def record(self, config_index: int, weight_set: int, accuracy: float) -> None:
        super().record(config_index, weight_set, accuracy)
        path = tuple(config_to_resolutions(self.configs[config_index]))
        for depth in range(1, len(path) + 1):
            node = path[:depth]
            self.reward[node] = self.reward.get(node, 0.0) + accuracy
            self.count[node] = self.count.get(node, 0) + 1

    def greedy_config(self) -> Config:
        """The path of the best mean reward at every node (the tree's own answer)."""
        node: Node = (0,)
        while len(node) < self.num_layers:
            options = self.children(node)
            means = [self.reward.get(c, 0.0) / max(self.count.get(c, 0), 1) for c in options]
            node = options[int(np.argmax(means))]
        return self.configs[self._index[node]]

    def found_config(self) -> Config:
        return self.greedy_config()

    def state_dict(self) -> dict[str, Any]:
        nodes = sorted(self.count)
        return {**super().state_dict(), "tree": [[list(n), self.reward[n], self.count[n]] for n in nodes]}

    def _restore(self, state: Mapping[str, Any]) -> None:
        super()._restore(state)
        self.reward = {tuple(n): float(r) for n, r, _ in state.get("tree", [])}
        self.count = {tuple(n): int(k) for n, _, k in state.get("tree", [])}
