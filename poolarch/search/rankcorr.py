"""Ranking quality of a search against the brute-force ground truth (Javan et al. 2023 Sec. 3.2, Fig. 3).

* :func:`kendall_tau` -- Kendall's tau-b (``scipy.stats.kendalltau``);
* :func:`top_k_overlap` -- fraction of the ground truth's top-k found in the search's top-k;
* :func:`rank_correlation` -- both, on the configurations present in both rankings;
* :func:`plot_rank_correlation` -- search accuracy vs ground-truth accuracy, one colour per search.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import kendalltau

from .._validate import check_int
from ..plots import plot_scatter_series

__all__ = ["kendall_tau", "top_k_overlap", "rank_correlation", "plot_rank_correlation"]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences (``scipy.stats.kendalltau``, ``variant="b"``):
    ``(concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y))`` over all pairs
    (``n0 = n (n - 1) / 2``). NaN when either sequence is constant. O(n log n)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
    if x.size < 2:
        raise ValueError(f"x and y need at least 2 values, got {x.size}")
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")  # tau-b is undefined (0 / 0); scipy would warn
    return float(kendalltau(x, y, variant="b").statistic)


def top_k_overlap(search: Mapping[str, float], truth: Mapping[str, float], k: int) -> float:
    """``|top_k(search) ∩ top_k(truth)| / k`` over the shared keys (ties broken by key)."""
    check_int(k, "k", 1)
    keys = sorted(set(search) & set(truth))
    k = min(k, len(keys))
    if k == 0:
        raise ValueError("search and truth share no configuration")
    top_search = set(sorted(keys, key=lambda c: -search[c])[:k])
    top_truth = set(sorted(keys, key=lambda c: -truth[c])[:k])
    return len(top_search & top_truth) / k


def rank_correlation(search: Mapping[str, float], truth: Mapping[str, float], ks: Sequence[int] = (1, 3, 5)
                     ) -> dict[str, Any]:
    """Kendall tau and top-k overlaps of ``search`` against ``truth`` (dicts config -> accuracy)."""
    keys = sorted(set(search) & set(truth))
    if len(keys) < 2:
        raise ValueError(f"search and truth must share at least 2 configurations, got {len(keys)}")
    out: dict[str, Any] = {
        "configurations": len(keys),
        "kendall_tau": kendall_tau([search[c] for c in keys], [truth[c] for c in keys]),
    }
    for k in ks:
        out[f"top{k}_overlap"] = top_k_overlap(search, truth, k)
    out["search_best"] = max(keys, key=lambda c: search[c])
    out["search_best_truth"] = truth[out["search_best"]]
    out["truth_best"] = max(keys, key=lambda c: truth[c])
    out["truth_best_value"] = truth[out["truth_best"]]
    return out


def plot_rank_correlation(searches: Mapping[str, Mapping[str, float]], truth: Mapping[str, float],
                          path: str | Path, taus: Mapping[str, float] | None = None) -> Path:
    """Scatter of search accuracy (y) vs ground-truth accuracy (x) per configuration (Fig. 3),
    drawn by :func:`poolarch.plots.plot_scatter_series`; ``taus`` label each search."""
    series = []
    for label, search in searches.items():
        keys = sorted(set(search) & set(truth))
        tau = (taus or {}).get(label)
        name = f"{label} (tau={tau:.2f})" if tau is not None and not math.isnan(tau) else label
        series.append((name, [truth[c] for c in keys], [search[c] for c in keys]))
    return plot_scatter_series(series, path, xlabel="ground truth accuracy (%)",
                               ylabel="search evaluation accuracy (%)")
