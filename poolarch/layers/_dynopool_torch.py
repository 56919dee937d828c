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

Two layouts, chosen from the sizes alone (:func:`use_channels_last`, so an NCHW and a channels_last
input give bit-identical results): NCHW, and channels_last ``(N, H, W, C)`` when the lattice is at
least twice the input (upsampling). There the interpolations are matmuls over ``(H, W*C)`` and
``(W, C)`` blocks, ``max_pool2d`` keeps its indices several times faster than on an NCHW lattice, and
the alpha gradient is ``<D_h^T T, x>`` and ``<A_h^T G D_w, x>`` (BLAS dots over input-sized tensors,
no ``A_h x`` / ``D_h x`` products). Measured on CPU (2 threads, fwd+bwd vs ``MaxPool2d(2)``):
r = 1.2 went from ~10-13x to ~6-7x; r = 0.5 and the anisotropic case run NCHW (channels_last measured
slower there: the input and output transposes cost more than the faster 2x2 max saves).

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


_device_cache: dict[tuple, tuple[Tensor, ...]] = {}


def axis_matrices(in_len: int, out_size: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``(A, A^T contiguous, D)`` for one axis in ``dtype`` on ``device`` (cached)."""
    return _axis_all(in_len, out_size, dtype, device)[:3]


def _axis_all(in_len: int, out_size: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """``(A, A^T, D, D^T, [A | D]^T (2L, 2S), [A^T; D^T] (2L, 2S))``, contiguous, cached per device."""
    key = (in_len, out_size, dtype, str(device))
    hit = _device_cache.get(key)
    if hit is None:
        A, D = _axis_matrices_cpu(in_len, out_size)
        mats = (A, A.t(), D, D.t(), torch.cat([A, D], dim=1).t(), torch.cat([A.t(), D.t()], dim=0))
        hit = tuple(t.contiguous().to(device, dtype) for t in mats)
        if len(_device_cache) > 512:
            _device_cache.clear()
        _device_cache[key] = hit
    return hit


_CL = torch.channels_last


def _nhwc(x: Tensor) -> Tensor:
    """``x (N, C, H, W)`` as a contiguous ``(N, H, W, C)`` tensor (free for a channels_last ``x``)."""
    return x.permute(0, 2, 3, 1).contiguous()


def _forward_nhwc(x: Tensor, sizes: Sequence[int], mode: int, need_indices: bool) -> tuple[Tensor, Tensor]:
    """:func:`forward2d` channels_last.

    Layout: everything runs channels_last (``(N, H, W, C)`` memory): the interpolations are large
    batched matmuls over ``(H, W*C)`` and ``(W, C)`` matrices, and ``max_pool2d`` keeps its indices
    several times faster than on NCHW. ``out`` and ``indices`` come back channels_last."""
    N, C, H, W = x.shape
    Sh, Sw = int(sizes[0]), int(sizes[1])
    z = _nhwc(x)  # (N, H, W, C)
    if W != 2 * Sw:  # the small batched matmuls on the smaller tensor
        z = torch.matmul(_axis_all(W, Sw, x.dtype, x.device)[0], z.view(N * H, W, C))
    if H != 2 * Sh:
        z = torch.matmul(_axis_all(H, Sh, x.dtype, x.device)[0], z.reshape(N, H, 2 * Sw * C))
    z = z.view(N, 2 * Sh, 2 * Sw, C).permute(0, 3, 1, 2)  # NCHW shape, channels_last memory
    return _pool_lattice(z, mode, need_indices)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``sum(a * b)`` (float32 or float64 accumulation), a float64 scalar: one BLAS dot when both are
    contiguous, else a product and a sum over the strided views."""
    if a.dtype not in (torch.float32, torch.float64):
        a, b = a.float(), b.float()
    if a.is_contiguous() and b.is_contiguous():
        return torch.dot(a.reshape(-1), b.reshape(-1)).double()
    return torch.mul(a, b).sum().double()


def _backward_nhwc(
    grad_out: Tensor, x: Tensor, indices: Tensor, mode: int, need_x: bool, need_size: bool
) -> tuple[Tensor, Tensor]:
    """:func:`backward2d` channels_last (``grad_x`` in channels_last memory).

    With ``G`` the lattice gradient, ``T = G A_w`` and ``U = G D_w`` (one matmul with ``[A_w | D_w]``):
    ``grad_x = A_h^T T``, ``d loss/d s_w = <A_h^T U, x>``, ``d loss/d s_h = <D_h^T T, x>`` -- the sums
    ``<G D_w, A_h x>`` and ``<T, D_h x>``, with the dot products over input-sized contiguous tensors."""
    N, C, H, W = x.shape
    Sh, Sw = grad_out.shape[2], grad_out.shape[3]
    id_h, id_w = H == 2 * Sh, W == 2 * Sw
    go = grad_out.to(x.dtype).contiguous(memory_format=_CL)
    if mode == 1:
        gn = go.permute(0, 2, 3, 1)
        G = gn[:, :, None, :, None, :].expand(N, Sh, 2, Sw, 2, C).reshape(N, 2 * Sh, 2 * Sw, C) * 0.25
    else:
        like = torch.empty((N, C, 2 * Sh, 2 * Sw), dtype=x.dtype, device=x.device, memory_format=_CL)  # only its shape and layout are read
        G = torch.ops.aten.max_pool2d_with_indices_backward(
            go, like, [2, 2], [2, 2], [0, 0], [1, 1], False, indices.contiguous(memory_format=_CL)
        ).permute(0, 2, 3, 1)
    A_h, A_hT, D_h, D_hT, _, AD_hT = _axis_all(H, Sh, x.dtype, x.device)
    _, A_wT, _, D_wT, AD_wT, _ = _axis_all(W, Sw, x.dtype, x.device)
    grad_sizes = torch.zeros(2, dtype=torch.float64, device=x.device)
    G = G.reshape(N * 2 * Sh, 2 * Sw, C)
    if not need_size:
        T = G if id_w else torch.matmul(A_wT, G)  # (N 2Sh, W, C)
        grad_x = T if id_h else torch.matmul(A_hT, T.reshape(N, 2 * Sh, W * C))
        return grad_x.reshape(N, H, W, C).permute(0, 3, 1, 2), grad_sizes
    xn = _nhwc(x)
    if id_w:
        T, U = G.view(N, 2 * Sh, W * C), torch.matmul(D_wT, G).view(N, 2 * Sh, W * C)
        if id_h:
            grad_x, V = T, U
            Q = torch.matmul(D_hT, T)
        else:
            grad_x, V = torch.matmul(A_hT, T), torch.matmul(A_hT, U)
            Q = torch.matmul(D_hT, T)
    else:
        TU = torch.matmul(AD_wT, G).view(N, 2 * Sh, 2, W * C)  # [T | U] along the width
        if id_h:
            grad_x, V = TU[:, :, 0], TU[:, :, 1]
            Q = torch.matmul(D_hT, grad_x)
        else:
            T, U = TU[:, :, 0], TU[:, :, 1]
            grad_x, V, Q = torch.matmul(A_hT, T), torch.matmul(A_hT, U), torch.matmul(D_hT, T)
    xf = xn.view(N, H, W * C)
    grad_sizes = torch.stack([_dot(Q, xf), _dot(V, xf)])
    if not need_x:
        return x.new_empty(0), grad_sizes
    return grad_x.reshape(N, H, W, C).permute(0, 3, 1, 2), grad_sizes


def _forward_nchw(x: Tensor, sizes: Sequence[int], mode: int, need_indices: bool) -> tuple[Tensor, Tensor]:
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
    return _pool_lattice(z, mode, need_indices)


def _backward_nchw(
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
        g_h = _dot_blas(T, torch.matmul(D_h, x))
        xh = x if id_h else torch.matmul(A_h, x)
        g_w = _dot_blas(torch.matmul(G, D_w), xh)
        grad_sizes = torch.stack([g_h, g_w])
    return grad_x, grad_sizes


def _dot_blas(a: Tensor, b: Tensor) -> Tensor:
    """``sum(a * b)`` as one BLAS dot of two contiguous tensors, a float64 scalar."""
    if a.dtype not in (torch.float32, torch.float64):
        a, b = a.float(), b.float()
    return torch.dot(a.reshape(-1), b.reshape(-1)).double()


def use_channels_last(x: Tensor, sizes: Sequence[int]) -> bool:
    """The layout the PyTorch path runs in, from the sizes alone (so NCHW and channels_last inputs
    give bit-identical results): channels_last when the query lattice is at least twice the input
    (upsampling: ``max_pool2d`` keeps its indices several times faster channels_last, which pays for
    transposing ``x``), else NCHW."""
    return 4 * int(sizes[0]) * int(sizes[1]) >= 2 * x.shape[2] * x.shape[3]


def forward2d(x: Tensor, sizes: Sequence[int], mode: int, need_indices: bool) -> tuple[Tensor, Tensor]:
    """``(out (N,C,H_out,W_out), indices)``; ``indices`` are ``max_pool2d``'s lattice indices (int64),
    flattened to one dimension (their layout follows :func:`use_channels_last`; :func:`backward2d`
    reads them back), for ``mode == 0`` (max) with ``need_indices``, else an empty int64 tensor.
    ``mode 1``: average. ``out`` comes back in the layout the path ran in."""
    if use_channels_last(x, sizes):
        out, idx = _forward_nhwc(x, sizes, mode, need_indices)
        if idx.numel():
            idx = idx.permute(0, 2, 3, 1).reshape(-1)
        return out, idx
    out, idx = _forward_nchw(x, sizes, mode, need_indices)
    return out, idx.reshape(-1)


def backward2d(
    grad_out: Tensor, x: Tensor, indices: Tensor, mode: int, need_x: bool, need_size: bool
) -> tuple[Tensor, Tensor]:
    """``(grad_x, grad_sizes)``: ``grad_sizes`` is ``d loss / d (continuous output sizes)``, float64 ``(2,)``
    (zeros unless ``need_size``); ``grad_x`` is an empty tensor unless ``need_x``. ``indices`` as
    returned by :func:`forward2d`."""
    N, C, Sh, Sw = grad_out.shape
    if use_channels_last(x, (Sh, Sw)):
        if indices.numel():
            indices = indices.view(N, Sh, Sw, C).permute(0, 3, 1, 2)
        return _backward_nhwc(grad_out, x, indices, mode, need_x, need_size)
    if indices.numel():
        indices = indices.view(N, C, Sh, Sw)
    return _backward_nchw(grad_out, x, indices, mode, need_x, need_size)


def _pool_lattice(z: Tensor, mode: int, need_indices: bool) -> tuple[Tensor, Tensor]:
    """2x2 aggregation of the (N, C, 2*Sh, 2*Sw) lattice ``z``: ``(out, indices)`` -- mean for
    ``mode == 1`` (no indices), else max with its int64 indices when ``need_indices``."""
    empty = torch.empty(0, dtype=torch.int64, device=z.device)
    if mode == 1:
        return F.avg_pool2d(z, 2), empty
    if need_indices:
        return F.max_pool2d(z, 2, return_indices=True)
    return F.max_pool2d(z, 2), empty
