"""Training methods: what each way of training adds to the one loop of :mod:`poolarch.train`.

Every method is a :class:`Method` registered in :data:`METHODS`; importing this package registers
them all (explicit imports, no plugin loading):

* ``plain`` (:mod:`.plain`) -- supervised training without architecture parameters;
* ``dynopool`` (:mod:`.dynopool`) -- learnable resizers with the complexity loss, the GMACs budget
  (:mod:`.budget`) and the scale bound;
* ``shape_adaptor`` (:mod:`.shape_adaptor`), ``multires`` (:mod:`.multires`);
* the search methods (:mod:`.search`): ``spos``, ``balanced-mixture``, ``darts``, ``mcts-ucb``, ``bse``.
"""
from .base import METHODS, Method, RunInfo, create_method, list_methods, register_method, split_parameters
from .plain import PlainMethod
from .dynopool import DynOPoolMethod
from .shape_adaptor import ShapeAdaptorMethod
from .multires import MultiResMethod
from . import search
from .search import SearchMethod, search_methods

__all__ = ["METHODS", "Method", "RunInfo", "create_method", "list_methods", "register_method", "split_parameters",
           "PlainMethod", "DynOPoolMethod", "ShapeAdaptorMethod", "MultiResMethod", "search", "SearchMethod",
           "search_methods"]
