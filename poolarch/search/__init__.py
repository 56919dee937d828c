"""Pooling-configuration search (paper 003): search spaces, ResNet supernets, the Balanced Mixture
of SuperNets and its NAS baselines (SPOS, DARTS, MCTS-UCB, BSE), evaluation of every
configuration, brute-force sweeps and rank correlation.

Command line: ``poolarch search``, ``poolarch sweep``, ``poolarch rank-corr`` (:mod:`poolarch.cli.search`).
"""
from . import methods  # registers the search methods
from .evaluate import rank_configurations
from .mixture import balance, joint_probabilities, tau_schedule
from .rankcorr import kendall_tau, rank_correlation, top_k_overlap
from .relaxed import MultiResolutionResNet
from .runner import run_search, search_config
from .space import SearchSpace, enumerate_configs, space_for
from .supernet import PoolingResNet, PoolingSupernet, resnet_from_blocks
from .sweep import sweep

__all__ = ["methods", "rank_configurations", "balance", "joint_probabilities", "tau_schedule", "kendall_tau",
           "rank_correlation", "top_k_overlap", "MultiResolutionResNet", "run_search", "search_config",
           "SearchSpace", "enumerate_configs", "space_for", "PoolingResNet", "PoolingSupernet",
           "resnet_from_blocks", "sweep"]
