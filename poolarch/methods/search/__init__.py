"""Search methods (Balanced Mixture of SuperNets and its baselines) on the common training engine;
importing this package registers ``spos``, ``balanced-mixture``, ``darts``, ``mcts-ucb`` and ``bse``
in :data:`poolarch.methods.METHODS`."""
from ..base import METHODS
from .balanced import BalancedMixture, plot_model_assignment
from .base import SamplingSearchMethod, SearchMethod, batch_statistics, write_ranking
from .bse import BoltzmannExploration
from .darts import DARTS
from .mcts import MCTSUCB
from .spos import SPOS


def search_methods() -> list[str]:
    """Registered names of the :class:`SearchMethod` subclasses (what ``poolarch search`` accepts)."""
    return [name for name in METHODS.names() if issubclass(METHODS.get(name), SearchMethod)]


__all__ = ["SearchMethod", "SamplingSearchMethod", "batch_statistics", "write_ranking", "plot_model_assignment",
           "search_methods", "SPOS", "BalancedMixture", "DARTS", "MCTSUCB", "BoltzmannExploration"]
