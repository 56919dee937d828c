"""Pooling-configuration search (Balanced Mixture of SuperNets): running a search, ranking every
configuration of a supernet, brute-force sweeps and rank correlation.

The pieces it runs live below it: the search spaces and supernets in :mod:`poolarch.models`
(``space``, ``supernet``, ``relaxed``), the search methods in :mod:`poolarch.methods.search`;
their public names are re-exported here.

Command line: ``poolarch search``, ``poolarch sweep``, ``poolarch rank-corr`` (:mod:`poolarch.cli.search`).
"""
from ..methods import search as methods
from ..methods.search import SearchMethod, search_methods
from ..methods.search.mixture import balance, joint_probabilities, tau_schedule
from ..models.relaxed import MultiResolutionResNet
from ..models.space import SearchSpace, enumerate_configs, list_backbones, space_for
from ..models.supernet import PoolingResNet, PoolingSupernet, resnet_from_blocks
from .evaluate import rank_configurations, read_ranking
from .rankcorr import kendall_tau, plot_rank_correlation, rank_correlation, top_k_overlap
from .runner import run_search, search_config
from .sweep import read_sweep, sweep

__all__ = ["methods", "SearchMethod", "search_methods", "rank_configurations", "read_ranking", "balance",
           "joint_probabilities", "tau_schedule", "kendall_tau", "rank_correlation", "top_k_overlap",
           "MultiResolutionResNet", "run_search", "search_config", "SearchSpace", "enumerate_configs", "space_for",
           "PoolingResNet", "PoolingSupernet", "resnet_from_blocks", "sweep", "read_sweep", "list_backbones",
           "plot_rank_correlation"]
