"""Fast pure-PyTorch 2-d DynOPool: separable matrix products and one 2x2 max (any device).

The query lattice of an axis with input length ``L`` and integer output size ``S`` has ``2S`` points;
point ``k`` sits at the source coordinate (pixel-centre units)

    u_k = (k + 1/2) L / (2S) - 1/2 = n_k / (4S),   n_k = (2k + 1) L - 2S   (an integer),

so an axis is two small ``(2S, L)`` matrices built once per ``(L, S)`` in exact integer arithmetic:

* ``A`` -- linear interpolation (two taps per row, border clamped; PyTorch's ``align_corners=False``);
* ``D`` -- ``d value / d s`` per lattice point: the tap difference times ``du_k/ds = -(k+1/2) L / (2s^2)``
  (``s = S``), with the kink convention below.

Forward: ``z = A_h x A_w^T`` (two batched matmuls, skipped on an axis with ``L == 2S`` where ``A = I``),
then one 2x2 ``max_pool2d`` keeping its lattice indices (or ``avg_pool2d``). Backward, with ``G`` the
lattice gradient (the max-pool backward of the indices): ``T = G A_w``, ``grad_x = A_h^T T``,
``d loss/d s_h = <T, D_h x>`` and ``d loss/d s_w = <G D_w, A_h x>`` -- matmuls and two dot products,
no gathers, no Python loops over tensor elements.

Kink convention (issue 13.4, identical to the fused kernel; /work/wt/_notes/kink_convention.md): where a
lattice point lies exactly on a pixel centre (``n_k % 4S == 0``, including the borders ``u = 0`` and
``u = L - 1`` where clamping makes one side flat) the slope is the MEAN of the two one-sided slopes,
``(x[m+1] - x[m-1]) / 2`` with the indices clamped to the axis -- the gradient of the loss averaged over
an infinitesimal jitter of the scale. The test is exact on the integers ``n_k`` (:data:`KINK_TOLERANCE`
``= 0``), so it does not depend on float rounding or on ulp changes of ``alpha`` (which cannot change
``S``). Points left of the first pixel centre (``n_k < 0``) or right of the last do not move the value.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["KINK_TOLERANCE", "axis_matrices", "forward2d", "backward2d"]

KINK_TOLERANCE = 0
"""Tolerance, in units of ``1 / (4S)`` pixel, for "a lattice point lies on a pixel centre". Zero: the
lattice coordinates are the rationals ``n_k / (4S)`` and the kink test runs on the integers ``n_k``."""


@functools.lru_cache(maxsize=512)
def _axis_matrices_cpu(in_len: int, out_size: int) -> tuple[Tensor, Tensor]:
    """``(A, D)``, both ``(2 * out_size, in_len)`` float64 on the CPU; see the module docstring."""
    L, S = in_len, out_size
    A = torch.zeros(2 * S, L, dtype=torch.float64)
    D = torch.zeros(2 * S, L, dtype=torch.float64)
    den = 4 * S
    for k in range(2 * S):
        n = (2 * k + 1) * L - 2 * S
        if n < 0:  # left of the first pixel centre: clamped, does not move
            A[k, 0] = 1.0
            continue
        i0, rest = divmod(n, den)
        f = -(k + 0.5) * L / (2.0 * S * S)  # du_k / ds
        if abs(rest) <= KINK_TOLERANCE:  # kink: on pixel i0 (incl. the borders)
            A[k, i0] = 1.0
            D[k, min(i0 + 1, L - 1)] += 0.5 * f
            D[k, max(i0 - 1, 0)] -= 0.5 * f
        elif i0 >= L - 1:  # right of the last pixel centre: clamped
            A[k, L - 1] = 1.0
        else:
            A[k, i0] = (den - rest) / den
            A[k, i0 + 1] = rest / den
            D[k, i0 + 1] += f
            D[k, i0] -= f
    return A, D


_device_cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}


def axis_matrices(in_len: int, out_size: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``(A, A^T contiguous, D)`` for one axis in ``dtype`` on ``device`` (cached)."""
    key = (in_len, out_size, dtype, str(device))
    hit = _device_cache.get(key)
    if hit is None:
        A, D = _axis_matrices_cpu(in_len, out_size)
        hit = (A.to(device, dtype), A.t().contiguous().to(device, dtype), D.to(device, dtype))
        if len(_device_cache) > 512:
            _device_cache.clear()
        _device_cache[key] = hit
    return hit


def forward2d(x: Tensor, sizes: Sequence[int], mode: int, need_indices: bool) -> tuple[Tensor, Tensor]:
    """``(out (N,C,H_out,W_out), indices)``; ``indices`` are ``max_pool2d``'s lattice indices (int64)
    for ``mode == 0`` (max) with ``need_indices``, else an empty int64 tensor. ``mode 1``: average."""
    H, W = x.shape[2], x.shape[3]
    Sh, Sw = int(sizes[0]), int(sizes[1])
    z = x.contiguous()  # matmuls and the 2x2 max run fastest on NCHW (a channels_last x: one copy)
    if H != 2 * Sh:
        A_h = axis_matrices(H, Sh, x.dtype, x.device)[0]
        z = torch.matmul(A_h, z)
    if W != 2 * Sw:
        A_wT = axis_matrices(W, Sw, x.dtype, x.device)[1]
        z = torch.matmul(z, A_wT)
    empty = torch.empty(0, dtype=torch.int64, device=x.device)
    if mode == 1:
        return F.avg_pool2d(z, 2), empty
    if need_indices:
        return F.max_pool2d(z, 2, return_indices=True)
    return F.max_pool2d(z, 2), empty


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``sum(a * b)`` as one BLAS dot (float32 or float64 accumulation), a float64 scalar."""
    if a.dtype not in (torch.float32, torch.float64):
        a, b = a.float(), b.float()
    return torch.dot(a.reshape(-1), b.reshape(-1)).double()


def backward2d(
    grad_out: Tensor, x: Tensor, indices: Tensor, mode: int, need_x: bool, need_size: bool
) -> tuple[Tensor, Tensor]:
    """``(grad_x, grad_sizes)``: ``grad_sizes`` is ``d loss / d (continuous output sizes)``, float64 ``(2,)``
    (zeros unless ``need_size``); ``grad_x`` is an empty tensor unless ``need_x``."""
    N, C, H, W = x.shape
    Sh, Sw = grad_out.shape[2], grad_out.shape[3]
    x = x.contiguous()
    id_h, id_w = H == 2 * Sh, W == 2 * Sw
    grad_out = grad_out.to(x.dtype)
    if mode == 1:
        G = grad_out[:, :, :, None, :, None].expand(N, C, Sh, 2, Sw, 2).reshape(N, C, 2 * Sh, 2 * Sw) * 0.25
    else:
        like = x.new_empty((N, C, 2 * Sh, 2 * Sw))  # only its shape is read
        G = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out.contiguous(), like, [2, 2], [2, 2], [0, 0], [1, 1], False, indices.contiguous()
        )
    A_h, A_hT, D_h = axis_matrices(H, Sh, x.dtype, x.device)
    A_w, _, D_w = axis_matrices(W, Sw, x.dtype, x.device)
    T = G if id_w else torch.matmul(G, A_w)  # (N, C, 2S_h, W)
    grad_x = x.new_empty(0)
    if need_x:
        grad_x = T if id_h else torch.matmul(A_hT, T)
    grad_sizes = torch.zeros(2, dtype=torch.float64, device=x.device)
    if need_size:
        g_h = _dot(T, torch.matmul(D_h, x))
        xh = x if id_h else torch.matmul(A_h, x)
        g_w = _dot(torch.matmul(G, D_w), xh)
        grad_sizes = torch.stack([g_h, g_w])
    return grad_x, grad_sizes
