"""Groups of resizers that must share one scale (connected components of "shares with" pairs).

Used by the complexity loss (resizers sharing an architecture parameter) and by ``convert()``
(resizers local to different inputs of one add/cat). Connected components come from
``scipy.sparse.csgraph.connected_components``.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["share_groups"]


def share_groups(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Partition ``range(n)`` into the connected components of the undirected ``pairs``.

    Returns the groups, each sorted, ordered by their smallest member (items in no pair are
    groups of one). ``share_groups(4, [(0, 2), (3, 2)]) == [[0, 2, 3], [1]]``."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    edges = np.asarray(list(pairs), dtype=np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"pairs must index range({n}), got indices {edges.min()}..{edges.max()}")
    if n == 0:
        return []
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        groups.setdefault(label, []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])
