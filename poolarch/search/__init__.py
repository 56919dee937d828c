"""Pooling-configuration search (paper 003): search spaces, ResNet supernets, the Balanced Mixture
of SuperNets and its NAS baselines (SPOS, DARTS, MCTS-UCB, BSE), evaluation, brute-force sweeps and
rank correlation."""
from . import methods  # registers the search methods
from .mixture import balance, joint_probabilities, tau_schedule
from .relaxed import MultiResolutionResNet
from .space import SearchSpace, enumerate_configs, space_for
from .supernet import PoolingResNet, PoolingSupernet, resnet_from_blocks

__all__ = ["methods", "balance", "joint_probabilities", "tau_schedule", "MultiResolutionResNet", "SearchSpace",
           "enumerate_configs", "space_for", "PoolingResNet", "PoolingSupernet", "resnet_from_blocks"]
