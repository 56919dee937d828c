"""Search methods on the common training engine; importing this package registers them:
``spos``, ``balanced-mixture``, ``darts``, ``mcts-ucb``, ``bse``."""
from .balanced import BalancedMixture
from .base import SamplingSearchMethod, batch_statistics
from .bse import BoltzmannExploration
from .darts import DARTS
from .mcts import MCTSUCB
from .spos import SPOS

__all__ = ["SamplingSearchMethod", "batch_statistics", "SPOS", "BalancedMixture", "DARTS", "MCTSUCB",
           "BoltzmannExploration"]
