"""Bookkeeping of the Balanced Mixture of SuperNets (Javan et al. 2023, Sec. 2.3, Eq. 2-3, app. B.1).

* :func:`moving_average_update` -- ``a[c, m] = beta * a[c, m] + (1 - beta) * acc`` (Eq. 2);
* :func:`joint_probabilities` -- ``p(c, m) = softmax(a / tau)`` over all entries (Eq. 3), balanced
  by :func:`balance` so that both marginals are uniform;
* :func:`balance` -- iterative proportional fitting (IPF): alternately rescale the columns (models)
  and the rows (configurations) to uniform marginals until ``KL(p(m) || uniform) < tol``. IPF only
  rescales rows and columns, so every cross-ratio ``p(c,m) p(c',m') / (p(c,m') p(c',m))`` is kept;
* :func:`linear_schedule` -- tau decreases linearly from 1 to ``1 / (100 M)`` (app. B.1).

Matrices are small (configurations x models), so this is float64 NumPy, computed in the log
domain (no overflow or underflow at ``tau = 1/(100 M)``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "balance",
    "balance_logits",
    "ipf_log",
    "joint_probabilities",
    "conditional_model_probabilities",
    "kl_to_uniform",
    "moving_average_update",
    "linear_schedule",
    "tau_schedule",
]


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True)
    return peak + np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True))


def kl_to_uniform(marginal: np.ndarray) -> float:
    """``KL(q || uniform)`` of a probability vector ``q`` (nats); 0 iff ``q`` is uniform."""
    q = np.asarray(marginal, dtype=np.float64)
    q = q / q.sum()
    positive = q > 0
    return float(np.sum(q[positive] * np.log(q[positive] * q.size)))


def balance_logits(logits: Any, tol: float = 1e-4, max_iter: int = 10_000) -> np.ndarray:
    """IPF on ``p ∝ exp(logits)`` (C, M): returns ``p`` (C, M) summing to 1 with row sums exactly
    ``1/C`` and ``KL(column sums || uniform) < tol``."""
    return ipf_log(logits, tol=tol, max_iter=max_iter)[0]


def ipf_log(logits: Any, tol: float = 1e-4, max_iter: int = 10_000,
            column_offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """IPF in the log domain: ``p = exp(logits + r_c + s_m)`` with row offsets ``r`` and column
    offsets ``s`` found by alternating normalisation. Returns ``(p, s)``. ``column_offsets`` (M,)
    warm-starts ``s`` (the balanced result depends only on the cross-ratios of ``logits``, so a
    previous solution's ``s`` is a valid start and saves iterations when ``logits`` change little)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.size == 0:
        raise ValueError(f"p must be a non-empty 2-D (configurations, models) matrix, got shape {logits.shape}")
    if not np.all(np.isfinite(logits)):
        raise ValueError("p must be finite and strictly positive (logits finite)")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    rows, cols = logits.shape
    log_row, log_col = -np.log(rows), -np.log(cols)
    s = np.zeros((1, cols)) if column_offsets is None else np.asarray(column_offsets, dtype=np.float64).reshape(1, cols)
    for _ in range(max_iter):
        shifted = logits + s
        log_p = shifted - (_logsumexp(shifted, axis=1) - log_row)  # rows: exactly 1/C each
        log_column = _logsumexp(log_p, axis=0)
        if kl_to_uniform(np.exp(log_column).ravel()) < tol:
            return np.exp(log_p), s.ravel().copy()
        s = s - (log_column - log_col)
    raise RuntimeError(f"IPF did not reach KL < {tol} in {max_iter} iterations")


def balance(p: Any, tol: float = 1e-4, max_iter: int = 10_000) -> np.ndarray:
    """IPF: rescale the rows and columns of a strictly positive matrix ``p`` (C, M) until its
    configuration marginal is exactly uniform (``1/C``) and ``KL(model marginal || uniform) < tol``.
    Accepts NumPy arrays and tensors; returns a float64 NumPy array summing to 1."""
    p = np.asarray(p.detach().cpu() if hasattr(p, "detach") else p, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(f"p must be a non-empty 2-D (configurations, models) matrix, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise ValueError("p must be finite and strictly positive")
    return balance_logits(np.log(p), tol=tol, max_iter=max_iter)


def joint_probabilities(accuracy: Any, tau: float, tol: float = 1e-4) -> np.ndarray:
    """Balanced ``p(c, m)`` from moving-average accuracies ``a`` (C, M) at temperature ``tau`` (Eq. 3)."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return balance_logits(np.asarray(accuracy, dtype=np.float64) / tau, tol=tol)


def conditional_model_probabilities(joint: np.ndarray) -> np.ndarray:
    """``p(m | c) = p(c, m) / sum_m p(c, m)``: rows sum to 1."""
    joint = np.asarray(joint, dtype=np.float64)
    return joint / joint.sum(axis=1, keepdims=True)


def moving_average_update(average: np.ndarray, config_index: int, model_index: int, value: float,
                          beta: float) -> None:
    """In place: ``a[c, m] = beta * a[c, m] + (1 - beta) * value`` (Eq. 2)."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    average[config_index, model_index] = beta * average[config_index, model_index] + (1.0 - beta) * value


def linear_schedule(start: float, end: float, progress: float) -> float:
    """``start`` at progress 0, ``end`` at progress >= 1, linear in between."""
    progress = min(max(float(progress), 0.0), 1.0)
    return start + (end - start) * progress


def tau_schedule(progress: float, num_models: int, start: float = 1.0, end: float | None = None) -> float:
    """The paper's temperature: linear from ``start`` (1) to ``end`` (default ``1 / (100 M)``)."""
    if num_models < 1:
        raise ValueError(f"num_models must be >= 1, got {num_models}")
    return linear_schedule(start, 1.0 / (100.0 * num_models) if end is None else end, progress)
