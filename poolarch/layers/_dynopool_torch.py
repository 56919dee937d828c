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
no gathers, no Python loops over tensor elements. On an identity axis (``L == 2S``, e.g. ``r = 0.5`` on
an even map) every lattice point is a pixel centre, so ``D`` is the clamped central difference scaled
per row (:func:`_identity_axis_slope`): two elementwise passes replace the matmul, and with ``A_w = I``
``<G D_w, A_h x> = <grad_x, x D_w^T>`` needs no ``A_h x``. When both axes resample, the lattice is
PyTorch's own bilinear resize (``upsample_bilinear2d``, channels_last; two taps per point instead of
dense matmuls) and its backward gives ``T`` and ``grad_x`` (:func:`interpolates`,
:func:`_backward_interpolated`), except on CUDA under deterministic algorithms.

Two layouts (:func:`use_channels_last`): channels_last ``(N, H, W, C)`` for a channels_last input and,
for any input, on small maps (at most :data:`SMALL_MAP_PIXELS` pixels) and when both axes resample (with
at least :data:`RESAMPLE_CHANNELS_LAST_MIN_CHANNELS` channels); else (an identity axis, or very few
channels, on a larger NCHW map) NCHW. In channels_last the matmuls run over ``(H, W*C)``
and ``(W, C)`` blocks (NCHW: ``N*C`` tiny per-plane ones on small maps), ``max_pool2d`` keeps its
indices several times faster than on an NCHW lattice, and the alpha gradient is ``<D_h^T T, x>`` and
``<A_h^T G D_w, x>`` (BLAS dots over input-sized tensors, no ``A_h x`` / ``D_h x`` products). An NCHW
input of a larger map with an identity axis runs NCHW: transposing it costs more than the faster 2x2
max saves; only the max of a resampled lattice (and its gradient) goes through a channels_last copy
(:func:`_pools_channels_last`). The layouts sum in different orders, so NCHW and channels_last inputs
agree to float rounding (tested), not bit for bit.

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
import math
import threading
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["KINK_TOLERANCE", "axis_matrices", "forward2d", "backward2d", "release_scratch"]

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


def _nhwc_view(x: Tensor) -> Tensor:
    """``x (N, C, H, W)`` as a contiguous ``(N, H, W, C)`` tensor, for reading only: free for a
    channels_last ``x``, else a transposed copy in scratch memory (:func:`_copy_to_nhwc`)."""
    xn = x.permute(0, 2, 3, 1)
    if xn.is_contiguous():
        return xn
    return _copy_to_nhwc(x, _scratch("x_nhwc", xn.shape, x.dtype, x.device))


ALIASING_PLANE_BYTES = 4096
"""On the CPU, an NCHW -> NHWC copy reads the ``C`` planes of a pixel at the plane stride; when the
plane's size in bytes is a multiple of this (a 32 x 32 float32 map: 4 KiB), those reads fall into the
same cache sets and evict each other. :func:`_copy_to_nhwc` then copies through planes padded by
:data:`_PLANE_PAD` elements. Measured (2 threads, float32), direct -> padded: (64, 64, 32, 32) 8.97 ->
4.96 ms, (32, 64, 32, 32) 4.19 -> 1.88, (128, 64, 32, 32) 16.98 -> 10.16, (16, 64, 64, 64) 9.43 -> 4.93;
but (64, 64, 30, 30) 2.54 -> 4.87 and (64, 256, 8, 8) 0.57 -> 0.78, so only aliasing planes take it."""
_PLANE_PAD = 16


def _pads_planes(x: Tensor) -> bool:
    """Whether :func:`_copy_to_nhwc` copies ``x`` through padded planes (see :data:`ALIASING_PLANE_BYTES`)."""
    _, C, H, W = x.shape
    aliasing = (H * W * x.element_size()) % ALIASING_PLANE_BYTES == 0
    return x.device.type == "cpu" and x.is_contiguous() and C >= 2 and aliasing


def _copy_to_nhwc(x: Tensor, out: Tensor) -> Tensor:
    """Copy a contiguous ``x (N, C, H, W)`` into the contiguous ``out (N, H, W, C)`` and return ``out``;
    see :data:`ALIASING_PLANE_BYTES`."""
    if not _pads_planes(x):
        return out.copy_(x.permute(0, 2, 3, 1))
    N, C, H, W = x.shape
    HW = H * W
    padded = _scratch("nhwc_padded", (N, C, HW + _PLANE_PAD), x.dtype, x.device)[:, :, :HW]
    padded.copy_(x.view(N, C, HW))
    out.view(N, HW, C).copy_(padded.transpose(1, 2))
    return out


def _forward_nhwc(x: Tensor, sizes: Sequence[int], mode: int, need_indices: bool) -> tuple[Tensor, Tensor]:
    """:func:`forward2d` channels_last.

    Layout: everything runs channels_last (``(N, H, W, C)`` memory): the interpolations are large
    batched matmuls over ``(H, W*C)`` and ``(W, C)`` matrices, and ``max_pool2d`` keeps its indices
    several times faster than on NCHW. ``indices`` come back channels_last, and so does ``out`` except
    from :func:`_forward_interpolated` (both axes resampled), which returns it in the input's layout."""
    N, C, H, W = x.shape
    Sh, Sw = int(sizes[0]), int(sizes[1])
    dt, dev = x.dtype, x.device
    if W != 2 * Sw and H != 2 * Sh and interpolates(x.device):
        return _forward_interpolated(x, Sh, Sw, mode, need_indices)
    z = _nhwc_view(x)  # (N, H, W, C)
    if W != 2 * Sw:  # the small batched matmuls on the smaller tensor
        z = _mm_scratch("lattice_w", _axis_all(W, Sw, dt, dev)[0], z.view(N * H, W, C))
    if H != 2 * Sh:
        z = _mm_scratch("lattice", _axis_all(H, Sh, dt, dev)[0], z.reshape(N, H, 2 * Sw * C))
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
    if not (id_h or id_w) and interpolates(x.device):
        return _backward_interpolated(grad_out.to(x.dtype), x, indices, mode, need_x, need_size)
    go = grad_out.to(x.dtype).contiguous(memory_format=_CL)
    both_identity = id_h and id_w  # then G itself is grad_x and must be fresh memory
    if mode == 1:
        gn = go.permute(0, 2, 3, 1)
        G = gn[:, :, None, :, None, :].expand(N, Sh, 2, Sw, 2, C)
        G = G.reshape(N, 2 * Sh, 2 * Sw, C) * 0.25
    else:
        like = torch.empty((N, C, 2 * Sh, 2 * Sw), dtype=x.dtype, device=x.device, memory_format=_CL)  # only its shape and layout are read
        idx = indices.contiguous(memory_format=_CL)
        if both_identity:
            G = torch.ops.aten.max_pool2d_with_indices_backward(go, like, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
        else:
            buf = _scratch_cl("lattice_grad", (N, C, 2 * Sh, 2 * Sw), x.dtype, x.device)
            G = torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
                go, like, [2, 2], [2, 2], [0, 0], [1, 1], False, idx, grad_input=buf
            )
        G = G.permute(0, 2, 3, 1)
    dt, dev = x.dtype, x.device
    A_h, A_hT, D_h, D_hT, _, AD_hT = _axis_all(H, Sh, dt, dev)
    _, A_wT, _, D_wT, AD_wT, _ = _axis_all(W, Sw, dt, dev)
    grad_sizes = torch.zeros(2, dtype=torch.float64, device=dev)
    G = G.reshape(N * 2 * Sh, 2 * Sw, C)
    if not need_size:
        if id_w:
            T = G
        else:  # (N 2Sh, W, C); it is grad_x itself when id_h
            T = torch.matmul(A_wT, G) if id_h else _mm_scratch("t", A_wT, G)
        grad_x = T if id_h else torch.matmul(A_hT, T.reshape(N, 2 * Sh, W * C))
        return grad_x.reshape(N, H, W, C).permute(0, 3, 1, 2), grad_sizes
    xn = _nhwc_view(x)  # (N, H, W, C); identity axes use the elementwise slope (see _backward_nchw)
    xf = xn.view(N, H, W * C)
    if id_w:
        T = G.view(N, 2 * Sh, W * C)
        if id_h:
            grad_x = T
        else:  # A_h^T G: grad_x, and also what the width's slope is dotted with
            grad_x = torch.matmul(A_hT, T) if need_x else _mm_scratch("atg", A_hT, T)
        g_w = _dot(grad_x, _identity_axis_slope(xn, 2, Sw))
        if id_h:
            g_h = _dot(T, _identity_axis_slope(xn, 1, Sh))
        else:
            g_h = _dot(_mm_scratch("q", D_hT, T), xf)
    else:
        TU = _mm_scratch("tu", AD_wT, G).view(N, 2 * Sh, 2, W * C)  # [T | U] along the width
        T, U = TU[:, :, 0], TU[:, :, 1]
        if id_h:
            grad_x, V = (T.clone(memory_format=torch.contiguous_format) if need_x else None), U
            g_h = _dot(T, _identity_axis_slope(xn, 1, Sh).view(N, H, W * C))
        else:
            grad_x = torch.matmul(A_hT, T) if need_x else None
            V = _mm_scratch("v", A_hT, U)
            g_h = _dot(_mm_scratch("q", D_hT, T), xf)
        g_w = _dot(V, xf)
    grad_sizes = torch.stack([g_h, g_w])
    if not need_x:
        return x.new_empty(0), grad_sizes
    return grad_x.reshape(N, H, W, C).permute(0, 3, 1, 2), grad_sizes


def interpolates(device: torch.device) -> bool:
    """Whether a lattice resampled on both axes is computed with PyTorch's bilinear interpolation
    (``upsample_bilinear2d``, channels_last) instead of two matmuls: everywhere except on CUDA under
    ``torch.use_deterministic_algorithms(True)``, where its backward has no deterministic kernel (the
    matmuls are deterministic). It computes the source coordinates in the input's float type (float32:
    within about 1e-6 pixel of the exact ``n_k / 4S`` on a 32-pixel axis), so the lattice agrees with
    the exact ``A`` to that rounding (tested); the slopes ``D`` are the exact ones either way.
    Measured (2 threads, float32, the layer's forward + backward against ``MaxPool2d(2)``,
    ``benchmarks/bench_dynopool.py`` before -> after, two alternated runs each): NCHW (64, 64, 32, 32)
    r = (0.66, 0.44) 3.60 / 2.99x -> 2.31 / 2.48x, r = 1.2 7.64 / 7.48x -> 5.76 / 5.49x; (128, 64, 32, 32)
    r = (0.66, 0.44) 3.03 / 2.97x -> 2.29 / 2.73x (with the padded copies of :func:`_copy_to_nhwc`)."""
    return not (device.type == "cuda" and torch.are_deterministic_algorithms_enabled())


LATTICE_CHUNK_BYTES = 4 << 20
"""On the CPU, the NCHW path (:func:`_forward_nchw`, :func:`_backward_nchw`) and the interpolated path
(:func:`_forward_interpolated`, :func:`_backward_interpolated`) run a few samples at a time, so that a
chunk's lattice (or input, whichever is larger) and what is made from it stay in the last-level cache
between the passes over them: about this many bytes per chunk. Layout transposes (an NCHW input pooled
channels_last; on the interpolated path, ``x`` itself when its planes alias, :func:`_nhwc_chunks`)
then run per chunk, in cache. Measured (2 threads, float32, forward + backward against
``MaxPool2d(2)``, interleaved in one process), the whole batch -> 4 MiB chunks, (64, 64, 32, 32): r = 1.2
(lattice 76 x 76, 2 samples per chunk) NCHW 5.56 / 5.61x -> 4.46 / 4.67x, channels_last 13.55x ->
11.00x; r = (0.66, 0.44) NCHW 2.52 / 2.72x -> 2.12 / 2.41x, channels_last 5.74 / 5.53x -> 4.93 / 4.85x;
r = 0.5 NCHW see :func:`_forward_nchw`. One sample per chunk at r = 1.2 (2 MiB) was slower than the whole
batch, 8 MiB no faster. With chunks a multiple of the threads (:func:`_batch_step`), the whole batch ->
4 MiB chunks, forward2d + backward2d against ``MaxPool2d(2)``: (64, 128, 16, 16) -> (11, 11) 3.30 ->
2.86x, (32, 64, 56, 56) -> (39, 39) 3.46 -> 3.23x, (16, 64, 64, 64) -> (21, 21) 2.14 -> 1.91x,
(8, 64, 112, 112) -> (78, 78) 3.40 -> 3.38x (one chunk: a sample's lattice is 6 MiB), (16, 3, 224, 224)
-> (157, 157) 12.33 -> 12.87x (NCHW matmuls, 2 samples per chunk). Other devices run the whole batch at
once."""


def _batch_step(x: Tensor, sizes: Sequence[int]) -> int:
    """Samples per chunk for :data:`LATTICE_CHUNK_BYTES`, for an input ``x`` and output ``sizes``: a
    multiple of the intra-op thread count (the channels_last max-pool backward splits the batch only, so
    a smaller chunk leaves threads idle), or the whole batch when not even that many samples fit (their
    lattice does not stay in cache anyway), and the whole batch off the CPU."""
    N, C, H, W = x.shape
    if x.device.type != "cpu":
        return max(N, 1)
    per_sample = C * max(H * W, 4 * int(sizes[0]) * int(sizes[1])) * x.element_size()
    threads = _intra_op_threads()
    fit = LATTICE_CHUNK_BYTES // max(1, per_sample)
    return max(N, 1) if fit < threads else max(1, min(N, fit - fit % threads))


def _intra_op_threads() -> int:
    """``torch.get_num_threads()`` (a function of its own so tests can fix it)."""
    return torch.get_num_threads()


def _forward_interpolated(x: Tensor, Sh: int, Sw: int, mode: int, need_indices: bool) -> tuple[Tensor, Tensor]:
    """:func:`_forward_nhwc` when both axes resample (:func:`interpolates`): the lattice is PyTorch's
    bilinear resize of ``x`` to ``(2 S_h, 2 S_w)`` (channels_last), computed and pooled a chunk of
    samples at a time (:data:`LATTICE_CHUNK_BYTES`). ``out`` comes back in the input's layout (an NCHW
    chunk is transposed while it is in cache), ``indices`` channels_last."""
    N, C, H, W = x.shape
    lat = [2 * Sh, 2 * Sw]
    dt, dev = x.dtype, x.device
    cl = is_channels_last(x)
    out = torch.empty((N, C, Sh, Sw), dtype=dt, device=dev, memory_format=_CL if cl else torch.contiguous_format)
    with_indices = mode == 0 and need_indices
    if with_indices:
        idx = torch.empty((N, C, Sh, Sw), dtype=torch.int64, device=dev, memory_format=_CL)
    else:
        idx = torch.empty(0, dtype=torch.int64, device=dev)
    step = _batch_step(x, (Sh, Sw))
    x_chunk = _nhwc_chunks(x, step)
    # the chunk buffers (sliced for a shorter last chunk): the per-chunk work is a few ops, so their
    # Python cost counts (measured: ~0.1 ms per chunk in the forward, ~0.4 ms in the backward before)
    lattice_buf = _scratch_cl("lattice", (step, C, lat[0], lat[1]), dt, dev)
    pooled_buf = None if cl else _scratch_cl("pooled", (step, C, Sh, Sw), dt, dev)
    ind_buf = None if with_indices or mode == 1 else _scratch_cl("indices", (step, C, Sh, Sw), torch.int64, dev)
    for s in range(0, N, step):
        e = min(N, s + step)
        xs = x_chunk(s, e).permute(0, 3, 1, 2)  # channels_last
        z = torch.ops.aten.upsample_bilinear2d.out(xs, lat, False, out=_head(lattice_buf, e - s))
        pooled = out[s:e] if cl else _head(pooled_buf, e - s)
        if mode == 1:
            torch.ops.aten.avg_pool2d.out(z, [2, 2], [2, 2], out=pooled)
        else:
            ind = idx[s:e] if with_indices else _head(ind_buf, e - s)
            torch.ops.aten.max_pool2d_with_indices.out(
                z, [2, 2], [2, 2], [0, 0], [1, 1], False, out=pooled, indices=ind
            )
        if not cl:  # NCHW output: transposed while the chunk is in cache
            out[s:e].copy_(pooled)
    return out, idx


def _nhwc_chunks(x: Tensor, step: int) -> Callable[[int, int], Tensor]:
    """``chunk(s, e)``: samples ``s:e`` of ``x`` as a contiguous ``(e - s, H, W, C)`` tensor, for the
    interpolated path's chunk loops. Channels_last ``x`` and NCHW planes that do not alias: views of
    one :func:`_nhwc_view`; NCHW planes that alias (:func:`_pads_planes`): a copy per chunk through
    padded planes, which stays in cache instead of going through memory twice. Measured (2 threads,
    float32, forward + backward, interleaved in one process), one copy -> per chunk: (64, 64, 32, 32)
    r = (0.66, 0.44) 0.91-0.97x, r = 1.2 0.97-1.00x; (128, 64, 32, 32) r = (0.66, 0.44) 0.92 / 0.98x;
    (16, 64, 64, 64) r = (0.66, 0.44) 0.93x; but (64, 64, 30, 30) r = 0.7 (planes that do not alias, a
    direct copy) 1.02-1.06x."""
    if not _pads_planes(x):  # also every channels_last x (not contiguous)
        xn = _nhwc_view(x)
        return lambda s, e: xn[s:e]
    _, C, H, W = x.shape
    buf = _scratch("x_chunk", (step, H, W, C), x.dtype, x.device)
    return lambda s, e: _copy_to_nhwc(x[s:e], _head(buf, e - s))


def _head(buf: Tensor, n: int) -> Tensor:
    """The first ``n`` samples of a chunk buffer (itself when it has ``n``)."""
    return buf if buf.shape[0] == n else buf[:n]


def _backward_interpolated(
    go: Tensor, x: Tensor, indices: Tensor, mode: int, need_x: bool, need_size: bool
) -> tuple[Tensor, Tensor]:
    """:func:`_backward_nhwc` when the lattice came from :func:`_forward_interpolated` (both axes
    resampled); ``indices`` channels_last, a chunk of samples at a time.

    With ``G`` the lattice gradient, interpolation backward passes give ``T = G A_w`` and ``R = A_h^T G``
    (one axis each, the other of size unchanged: weight 1 on its own pixel) and ``grad_x = A_h^T T``; the
    size gradients are ``d loss/d s_h = <T, D_h x>`` and ``d loss/d s_w = <R, x D_w^T>``
    (:func:`_band_dot`), with ``D`` the exact slopes."""
    N, C, H, W = x.shape
    Sh, Sw = go.shape[2], go.shape[3]
    lat_h, lat_w = 2 * Sh, 2 * Sw
    dt, dev = x.dtype, x.device
    up_backward = torch.ops.aten.upsample_bilinear2d_backward
    cl = is_channels_last(x)
    grad_x = torch.empty_like(x, memory_format=_CL if cl else torch.contiguous_format) if need_x else x.new_empty(0)
    step = _batch_step(x, (Sh, Sw))
    go_cl = go.is_contiguous(memory_format=_CL)
    go_buf = None if go_cl else _scratch_cl("go", (step, C, Sh, Sw), dt, dev)
    lattice_grad_buf = _scratch_cl("lattice_grad", (step, C, lat_h, lat_w), dt, dev)
    like_buf = _scratch_cl("lattice", (step, C, lat_h, lat_w), dt, dev)  # only its shape and layout are read
    t_buf = _scratch_cl("t", (step, C, lat_h, W), dt, dev)
    gx_buf = None if cl or not need_x else _scratch_cl("grad_x", (step, C, H, W), dt, dev)
    dots: list[Tensor] = []
    if need_size:  # D_h along the rows of x (N*H, W*C), D_w along the rows of x (N*H*W, C)
        x_chunk = _nhwc_chunks(x, step)
        taps_h = _slope_taps(H, Sh, step, dt, dev)
        taps_w = _slope_taps(W, Sw, step * H, dt, dev)
        v_buf = _scratch_cl("v", (step, C, H, lat_w), dt, dev)
        t_rows = t_buf.permute(0, 2, 3, 1).view(step, lat_h, W * C)  # T and R as rows (NHWC memory)
        v_rows = v_buf.permute(0, 2, 3, 1).view(step * H, lat_w, C)
        band_h = _scratch("band_h", (step * lat_h, W * C), dt, dev), _scratch("band_h2", (step * lat_h, W * C), dt, dev)
        band_w = _scratch("band_w", (step * H * lat_w, C), dt, dev), _scratch("band_w2", (step * H * lat_w, C), dt, dev)
    for s in range(0, N, step):
        e = min(N, s + step)
        n = e - s
        go_s = go[s:e] if go_cl else _head(go_buf, n).copy_(go[s:e])  # transposed while the chunk is in cache
        if mode == 1:
            G = go_s[:, :, :, None, :, None].expand(n, C, Sh, 2, Sw, 2).reshape(n, C, lat_h, lat_w)
            G = G.contiguous(memory_format=_CL).mul_(0.25)
        else:
            G = torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
                go_s, _head(like_buf, n), [2, 2], [2, 2], [0, 0], [1, 1], False, indices[s:e],
                grad_input=_head(lattice_grad_buf, n),
            )
        T = up_backward.grad_input(G, [lat_h, lat_w], [n, C, lat_h, W], False, grad_input=_head(t_buf, n))
        if need_x:
            gx = grad_x[s:e] if cl else _head(gx_buf, n)
            up_backward.grad_input(T, [lat_h, W], [n, C, H, W], False, grad_input=gx)
            if not cl:  # NCHW: transposed while the chunk is in cache
                grad_x[s:e].copy_(gx)
        if need_size:
            up_backward.grad_input(G, [lat_h, lat_w], [n, C, H, lat_w], False, grad_input=_head(v_buf, n))
            xs = x_chunk(s, e)
            dots.append(_band_dot(_head(t_rows, n), xs.view(n * H, W * C), taps_h, band_h))
            dots.append(_band_dot(_head(v_rows, n * H), xs.view(n * H * W, C), taps_w, band_w))
    if not dots:  # no size gradient wanted, or an empty batch
        return grad_x, torch.zeros(2, dtype=torch.float64, device=dev)
    return grad_x, torch.stack(dots).double().view(-1, 2).sum(0)


def _slope_taps(
    in_len: int, out_size: int, batch: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """The slope matrix ``D`` of an axis (``(K, L)``, ``K = 2 * out_size``) as two taps per row:
    ``D[k] = w_k (e_{p_k} - e_{m_k})`` (``w_k = 0`` where the point is clamped), for :func:`_band_dot`.
    Returns ``(p, m, w)``: ``p`` and ``m`` as row indices into ``batch`` stacked copies of the axis
    (``p_k + b L``, ``(batch * K,)`` int64, ``b``-major), ``w`` as ``(K, 1)`` in ``dtype`` (float32 for a
    16-bit ``dtype``). Cached."""
    key = ("taps", in_len, out_size, batch, dtype, str(device))
    hit = _device_cache.get(key)
    if hit is None:
        _, D = _axis_matrices_cpu(in_len, out_size)
        K = D.shape[0]
        p, m = torch.zeros(K, dtype=torch.int64), torch.zeros(K, dtype=torch.int64)
        w = torch.zeros(K, dtype=torch.float64)
        for k in range(K):
            taps = D[k].nonzero().flatten().tolist()
            if taps:  # two taps: -w at the lower index, +w at the upper one
                m[k], p[k], w[k] = taps[0], taps[-1], D[k, taps[-1]]
        offsets = torch.arange(batch, dtype=torch.int64).view(batch, 1) * in_len
        w_dtype = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
        hit = ((p + offsets).reshape(-1), (m + offsets).reshape(-1), w.to(w_dtype).view(K, 1))
        hit = tuple(t.to(device) for t in hit)
        if len(_device_cache) > 512:
            _device_cache.clear()
        _device_cache[key] = hit
    return hit


def _band_dot(P: Tensor, X_rows: Tensor, taps: tuple[Tensor, Tensor, Tensor], bufs: tuple[Tensor, Tensor]) -> Tensor:
    """``<P, D X> = sum_{b,k} w_k <P[b, k], X[b, p_k] - X[b, m_k]>``, a 0-d tensor (float32 at least), for
    ``P (B, K, M)`` (float32/64: scaled by ``w`` in place), the rows of ``X (B, L, M)`` as
    ``X_rows (B * L, M)``, ``D``'s :func:`_slope_taps` and two ``(>= B * K, M)`` buffers: two row gathers,
    a difference and one dot product (``D`` has two taps per row; a dense Gram ``sum_b P_b X_b^T`` does
    ``L / 2`` times the multiply-adds). Measured per chunk at (2, 64, 32, 32), r = 1.2: 238 -> 147 us
    (height), 236 -> 157 us (width). 16-bit inputs (on a GPU) are multiplied in float32, as in
    :func:`_dot`."""
    B, K, M = P.shape
    p, m, w = taps
    E = torch.index_select(X_rows, 0, _head(p, B * K), out=_head(bufs[0], B * K))
    E.sub_(torch.index_select(X_rows, 0, _head(m, B * K), out=_head(bufs[1], B * K)))
    if P.dtype not in (torch.float32, torch.float64):
        P, E = P.float(), E.float()
    return torch.dot(P.mul_(w).view(-1), E.view(-1))


def _forward_nchw(x: Tensor, sizes: Sequence[int], mode: int, need_indices: bool) -> tuple[Tensor, Tensor]:
    """``(out (N,C,H_out,W_out), indices)``; ``indices`` are ``max_pool2d``'s lattice indices (int64)
    for ``mode == 0`` (max) with ``need_indices``, else an empty int64 tensor. ``mode 1``: average.
    Where the 2x2 max runs channels_last (:func:`_pools_channels_last`), a chunk of samples at a time
    (:data:`LATTICE_CHUNK_BYTES`), so the transposes run in cache; ``out`` then comes back NCHW, else in
    the layout the 2x2 max ran in. Measured (2 threads, float32, forward + backward against
    ``MaxPool2d(2)``, interleaved in one process), the whole batch -> 4 MiB chunks (16 samples): r = 0.5
    (64, 64, 32, 32) 1.35 / 1.19x -> 1.22 / 1.03x, (128, 64, 32, 32) 1.26x -> 1.04x. Where the max runs
    NCHW, chunks did not pay: (16, 64, 64, 64) r = 0.5 1.33x -> 1.46x."""
    N, C = x.shape[0], x.shape[1]
    Sh, Sw = int(sizes[0]), int(sizes[1])
    step = _batch_step(x, (Sh, Sw)) if _pools_channels_last(x.shape, sizes, mode, need_indices) else max(N, 1)
    if step >= N:
        return _forward_nchw_chunk(x, sizes, mode, need_indices)
    out = torch.empty((N, C, Sh, Sw), dtype=x.dtype, device=x.device)
    # chunks only where the max keeps its indices channels_last: each chunk writes them in place
    idx = torch.empty((N, C, Sh, Sw), dtype=torch.int64, device=x.device, memory_format=_CL)
    for s in range(0, N, step):
        e = min(N, s + step)
        out[s:e].copy_(_forward_nchw_chunk(x[s:e], sizes, mode, need_indices, indices=idx[s:e])[0])
    return out, idx


def _forward_nchw_chunk(
    x: Tensor, sizes: Sequence[int], mode: int, need_indices: bool, indices: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`_forward_nchw` of one chunk of samples (the max's indices written into ``indices`` if given)."""
    H, W = x.shape[2], x.shape[3]
    Sh, Sw = int(sizes[0]), int(sizes[1])
    z = x.contiguous()  # the matmuls run fastest on NCHW
    A_h, A_wT = axis_matrices(H, Sh, x.dtype, x.device)[0], axis_matrices(W, Sw, x.dtype, x.device)[1]
    if _height_side_first(H, W, Sh, Sw):  # the width first: the smaller intermediate
        z = _mm_scratch("lattice", A_h, _mm_scratch("lattice_1", z, A_wT))
    else:
        if H != 2 * Sh:
            z = _mm_scratch("lattice_1", A_h, z)
        if W != 2 * Sw:
            z = _mm_scratch("lattice", z, A_wT)
    if _pools_channels_last(x.shape, (Sh, Sw), mode, need_indices):
        lattice = _scratch_cl("lattice_cl", z.shape, z.dtype, z.device)
        _copy_to_nhwc(z, lattice.permute(0, 2, 3, 1))
        z = lattice
    return _pool_lattice(z, mode, need_indices, indices)


def _pools_channels_last(x_shape: Sequence[int], sizes: Sequence[int], mode: int, need_indices: bool) -> bool:
    """Whether the NCHW path takes the 2x2 max (with indices) channels_last: ``max_pool2d`` keeps its
    indices several times faster there, which pays for transposing the lattice and, in the backward,
    the lattice gradient. Measured (2 threads), NCHW -> via channels_last, forward + backward of the max
    alone: lattice (64, 64, 42, 28) 18.3 -> 14.5 ms, (128, 64, 42, 28) 36.9 -> 26.1, (64, 64, 42, 32)
    23.6 -> 15.3, (32, 64, 84, 56) 43.7 -> 32.9. When the lattice is the input itself (r = 1/2 on even
    maps), only on maps of at most :data:`IDENTITY_CHANNELS_LAST_PIXELS` pixels with at least
    :data:`IDENTITY_CHANNELS_LAST_MIN_CHANNELS` channels (the transposes then cost less than the max
    saves): (64, 64, 32, 32) 21.0 -> 17.1, (32, 64, 48, 48) 23.6 -> 15.2, (64, 256, 18, 18) 27.4 -> 20.5,
    (64, 64, 28, 28) 17.1 -> 14.2; but (16, 64, 64, 64) 17.9 -> 19.2, (8, 256, 64, 64) 42.6 -> 58.6 and
    (64, 3, 32, 32) 1.1 -> 2.0."""
    if mode != 0 or not need_indices:
        return False
    C, H, W = x_shape[1], x_shape[2], x_shape[3]
    if H == 2 * int(sizes[0]) and W == 2 * int(sizes[1]):
        return C >= IDENTITY_CHANNELS_LAST_MIN_CHANNELS and H * W <= IDENTITY_CHANNELS_LAST_PIXELS
    return True


IDENTITY_CHANNELS_LAST_PIXELS = 56 * 56
"""See :func:`_pools_channels_last`."""
IDENTITY_CHANNELS_LAST_MIN_CHANNELS = 16
"""See :func:`_pools_channels_last`."""


def _mm_scratch(slot: str, a: Tensor, b: Tensor) -> Tensor:
    """``torch.matmul(a, b)`` (batch dimensions broadcast) written into the scratch buffer ``slot``."""
    if a.dim() == 2 or b.dim() == 2:  # one side is an axis matrix (every call here): no broadcasting
        batch = tuple(b.shape[:-2] if a.dim() == 2 else a.shape[:-2])
    else:
        batch = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))  # (a Python function: ~20 us)
    shape = batch + (a.shape[-2], b.shape[-1])
    return torch.matmul(a, b, out=_scratch(slot, shape, b.dtype, b.device))


def _height_side_first(H: int, W: int, Sh: int, Sw: int) -> bool:
    """Order of the NCHW matmuls when both axes resample (an NCHW input with few channels, see
    :func:`use_channels_last`): True when contracting the lattice's height first in the backward costs
    fewer multiply-adds (the forward then applies ``A_w`` first, which for a square input is also its
    cheaper order). Per plane, with ``a = 2S_h``, ``b = 2S_w``: width-side first ``a W (2b + 3H)``,
    height-side first ``H b (2a + 3W)``; for ``H = W`` that is ``a > b``. Measured at (64, 64, 32, 32),
    r = (0.66, 0.44): fwd+bwd 3.5x -> 3.0x ``MaxPool2d(2)``."""
    if H == 2 * Sh or W == 2 * Sw:
        return False
    a, b = 2 * Sh, 2 * Sw
    return H * b * (2 * a + 3 * W) < a * W * (2 * b + 3 * H)


def _backward_nchw(
    grad_out: Tensor, x: Tensor, indices: Tensor, mode: int, need_x: bool, need_size: bool
) -> tuple[Tensor, Tensor]:
    """``(grad_x, grad_sizes)``: ``grad_sizes`` is ``d loss / d (continuous output sizes)``, float64 ``(2,)``
    (zeros unless ``need_size``); ``grad_x`` (NCHW) is an empty tensor unless ``need_x``. A chunk of
    samples at a time, as :func:`_forward_nchw`."""
    N, C, H, W = x.shape
    Sh, Sw = grad_out.shape[2], grad_out.shape[3]
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_x else x.new_empty(0)
    grad_sizes = torch.zeros(2, dtype=torch.float64, device=x.device)
    step = _batch_step(x, (Sh, Sw)) if _pools_channels_last(x.shape, (Sh, Sw), mode, True) else max(N, 1)
    for s in range(0, N, step):
        e = min(N, s + step)
        grad_sizes += _backward_nchw_chunk(
            grad_out[s:e], x[s:e], indices[s:e] if indices.numel() else indices, mode,
            grad_x[s:e] if need_x else None, need_size,
        )
    return grad_x, grad_sizes


def _backward_nchw_chunk(
    grad_out: Tensor, x: Tensor, indices: Tensor, mode: int, grad_x: Tensor | None, need_size: bool
) -> Tensor:
    """:func:`_backward_nchw` of one chunk of samples: writes the input gradient into ``grad_x`` (a
    contiguous NCHW tensor; ``None`` when it is not needed) and returns the size gradients."""
    N, C, H, W = x.shape
    Sh, Sw = grad_out.shape[2], grad_out.shape[3]
    x = x.contiguous()
    id_h, id_w = H == 2 * Sh, W == 2 * Sw
    need_x = grad_x is not None
    grad_out = grad_out.to(x.dtype)
    lattice_shape = (N, C, 2 * Sh, 2 * Sw)
    # where the lattice gradient G is the input gradient itself (both axes identity), it is written there
    G_dest = grad_x if id_h and id_w and need_x else _scratch("lattice_grad", lattice_shape, x.dtype, x.device)
    if mode == 1:
        G = torch.mul(grad_out[:, :, :, None, :, None].expand(N, C, Sh, 2, Sw, 2), 0.25,
                      out=G_dest.view(N, C, Sh, 2, Sw, 2)).view(lattice_shape)
    elif _pools_channels_last(x.shape, (Sh, Sw), mode, True):  # see _forward_nchw; G back to NCHW
        like = _scratch_cl("lattice_cl", lattice_shape, x.dtype, x.device)  # only its shape and layout are read
        G_cl = torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
            grad_out.contiguous(memory_format=_CL), like, [2, 2], [2, 2], [0, 0], [1, 1], False,
            indices.contiguous(memory_format=_CL),
            grad_input=_scratch_cl("lattice_grad_cl", lattice_shape, x.dtype, x.device),
        )
        G = G_dest.copy_(G_cl)
    else:
        like = x.new_empty(lattice_shape)  # only its shape is read
        G = torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
            grad_out.contiguous(), like, [2, 2], [2, 2], [0, 0], [1, 1], False, indices.contiguous(), grad_input=G_dest
        )
    A_h, A_hT, D_h = axis_matrices(H, Sh, x.dtype, x.device)
    A_w, A_wT, D_w = axis_matrices(W, Sw, x.dtype, x.device)
    grad_sizes = torch.zeros(2, dtype=torch.float64, device=x.device)
    if _height_side_first(H, W, Sh, Sw):
        # U = A_h^T G, grad_x = U A_w; <G, D_h x A_w^T> = <D_h^T G, x A_w^T>; <G, A_h x D_w^T> = <U D_w, x>
        U = _mm_scratch("u", A_hT, G)  # (N, C, H, 2S_w)
        if need_x:
            torch.matmul(U, A_w, out=grad_x)
        if need_size:
            D_hT = _axis_all(H, Sh, x.dtype, x.device)[3]
            g_h = _dot(_mm_scratch("v", D_hT, G), _mm_scratch("xw", x, A_wT))
            g_w = _dot(_mm_scratch("ud", U, D_w), x)
            grad_sizes = torch.stack([g_h, g_w])
        return grad_sizes
    if id_w:
        T = G
    elif id_h:  # (N, C, 2S_h, W) = (N, C, H, W): the input gradient itself
        T = torch.matmul(G, A_w, out=grad_x if need_x else _scratch("t", x.shape, x.dtype, x.device))
    else:
        T = _mm_scratch("t", G, A_w)
    if need_x and not id_h:
        torch.matmul(A_hT, T, out=grad_x)
    if need_size:
        # identity axes (L == 2S) use the elementwise slope instead of a D matmul; with A_w = I,
        # <G D_w, A_h x> = <A_h^T G, x D_w^T> = <grad_x, slope_w(x)> (A_h and D_w act on different axes)
        g_h = _dot(T, _identity_axis_slope(x, 2, Sh) if id_h else _mm_scratch("dx", D_h, x))
        if id_w:
            AtG = grad_x if need_x else (T if id_h else _mm_scratch("atg", A_hT, T))
            g_w = _dot(AtG, _identity_axis_slope(x, 3, Sw))
        else:
            xh = x if id_h else _mm_scratch("xh", A_h, x)
            g_w = _dot(_mm_scratch("gd", G, D_w), xh)
        grad_sizes = torch.stack([g_h, g_w])
    return grad_sizes


def _identity_axis_slope(q: Tensor, dim: int, out_size: int) -> Tensor:
    """``D q`` along ``dim`` for an axis with ``L == 2S`` (``A = I``), without a matmul: every lattice
    point of such an axis is a pixel centre (``n_k = 4kS``), so by the kink convention row ``k`` of ``D``
    is ``f_k / 2 (e_{k+1} - e_{k-1})`` with the indices clamped, ``f_k = du_k/ds``. Two elementwise
    passes over ``q`` (a difference and a row scale) instead of an ``(L x L)`` matmul per plane. Equal to
    ``torch.matmul(D, q)`` along ``dim`` up to float rounding (tested)."""
    q = q.contiguous()
    L = q.shape[dim]
    half_slope = _identity_half_slopes(L, out_size, q.dtype, q.device)
    inner = q.stride(dim)
    q3 = q.view(-1, L, inner)
    out3 = _scratch("slope", q3.shape, q.dtype, q.device)
    # interior rows in one contiguous pass: q[k+1] - q[k-1] is the flat element ``inner`` away on each
    # side; rows 0 and L-1 (where that crosses into the neighbouring plane) are rewritten clamped below
    flat_q, flat_out = q3.view(-1), out3.view(-1)
    if L > 2:
        torch.sub(flat_q[2 * inner :], flat_q[: -2 * inner], out=flat_out[inner:-inner])
        # rows 0 and L-1 in one op, q[(1, L-1)] - q[(0, L-2)]: one pass over the strided rows
        torch.sub(q3[:, 1 :: L - 2], q3[:, 0 :: L - 2], out=out3[:, 0 :: L - 1])
    else:
        torch.sub(q3[:, 1], q3[:, 0], out=out3[:, 0])
        torch.sub(q3[:, L - 1], q3[:, L - 2], out=out3[:, L - 1])
    return out3.mul_(half_slope.view(L, 1)).view(q.shape)


_scratch_buffers = threading.local()


def _scratch(slot: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised contiguous tensor of ``shape`` for a temporary that never leaves this module
    (it is reduced or consumed before the function returns): on the CPU a view of a per-thread buffer
    kept per ``slot`` and dtype, grown as needed, because a fresh multi-megabyte allocation there costs
    more in page faults than the pass that fills it (a 94 MB lattice: ~75 ms fresh vs ~8 ms reused).
    Other devices allocate normally (their caching allocators already reuse memory).
    :func:`release_scratch` frees this thread's buffers."""
    numel = math.prod(shape)
    if (device.type if isinstance(device, torch.device) else torch.device(device).type) != "cpu":
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    buffers = getattr(_scratch_buffers, "by_slot", None)
    if buffers is None:
        buffers = _scratch_buffers.by_slot = {}
    key = (slot, dtype)
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        buf = buffers[key] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(tuple(shape))


def _scratch_cl(slot: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`_scratch` of the NCHW ``shape`` ``(N, C, H, W)`` laid out channels_last (an ``(N, H, W, C)``
    buffer seen through a permutation)."""
    N, C, H, W = shape
    return _scratch(slot, (N, H, W, C), dtype, device).permute(0, 3, 1, 2)


def release_scratch() -> None:
    """Free this thread's scratch buffers (see :func:`_scratch`); they are re-created on the next call."""
    _scratch_buffers.by_slot = {}


def _identity_half_slopes(in_len: int, out_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``f_k / 2`` of an identity axis (``in_len == 2 * out_size``), read off the cached ``D`` so both
    formulations share one definition: ``D[k, min(k + 1, L - 1)] = f_k / 2`` on every row."""
    key = ("half_slopes", in_len, out_size, dtype, str(device))
    hit = _device_cache.get(key)
    if hit is None:
        _, D = _axis_matrices_cpu(in_len, out_size)
        k = torch.arange(in_len)
        hit = D[k, (k + 1).clamp(max=in_len - 1)].to(device, dtype).contiguous()
        _device_cache[key] = (hit,)
        return hit
    return hit[0]


SMALL_MAP_PIXELS = 256
"""NCHW inputs whose maps have at most this many pixels (16 x 16) run channels_last. Measured fwd+bwd
against ``MaxPool2d(2)`` (2 threads, r = 0.5 / (0.66, 0.44)), NCHW -> channels_last: (64, 512, 4, 4)
2.1-2.4x -> 1.1x / 5.9-6.8x -> 1.6x; (64, 256, 8, 8) 1.8x -> 1.2x / 3.1-3.6x -> 1.8x; (64, 128, 16, 16)
1.5x -> 1.3x / 3.1-3.4x -> 2.9-3.1x; but (64, 64, 32, 32) 1.3-1.5x -> 1.7-1.9x."""


def use_channels_last(x: Tensor, sizes: Sequence[int]) -> bool:
    """The layout the PyTorch path runs in: channels_last for a channels_last input (no transposes),
    and for any input on small maps (:data:`SMALL_MAP_PIXELS`: per-plane matmuls there are tiny), when
    both axes resample with at least :data:`RESAMPLE_CHANNELS_LAST_MIN_CHANNELS` channels
    (:func:`interpolates`; on CUDA under deterministic algorithms the channels_last matmuls, so the
    layout does not depend on that setting) or when the query lattice is at least
    twice the input (upsampling: ``max_pool2d`` keeps its indices several times faster channels_last,
    which pays for transposing ``x``); else NCHW.
    The two layouts sum in different orders, so an NCHW and a channels_last input agree to float
    rounding, not bit for bit (the fused kernel is bit-identical across layouts)."""
    if is_channels_last(x) or x.shape[2] * x.shape[3] <= SMALL_MAP_PIXELS:
        return True
    C, H, W, Sh, Sw = x.shape[1], x.shape[2], x.shape[3], int(sizes[0]), int(sizes[1])
    both_resample = H != 2 * Sh and W != 2 * Sw
    return (both_resample and C >= RESAMPLE_CHANNELS_LAST_MIN_CHANNELS) or 4 * Sh * Sw >= 2 * H * W


RESAMPLE_CHANNELS_LAST_MIN_CHANNELS = 8
"""An NCHW input with both axes resampled runs channels_last (:func:`interpolates`) from this many
channels; with fewer, a channels_last tensor is mostly stride and the NCHW matmuls are faster. Measured
fwd+bwd against ``MaxPool2d(2)``, NCHW matmuls -> channels_last interpolation: (16, 3, 224, 224)
r = 0.7 13.2x -> 25.2x, r = (0.66, 0.44) 8.1x -> 18.2x; (64, 8, 32, 32) r = (0.66, 0.44) 3.47x -> 3.45x;
(32, 16, 56, 56) r = 0.7 5.56x -> 3.57x."""


def is_channels_last(x: Tensor) -> bool:
    """A 4-d tensor laid out channels_last and not also contiguous (e.g. not ``C == 1``)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=_CL)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for bfloat16/float16 inputs on the CPU, whose 16-bit matmuls are slow there and whose
    interpolation weights would be rounded to 16 bits (the fused kernel also computes these in float32);
    else the input's dtype (on a GPU, 16-bit matmuls are the fast path)."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return x.dtype


def forward2d(x: Tensor, sizes: Sequence[int], mode: int, need_indices: bool) -> tuple[Tensor, Tensor]:
    """``(out (N,C,H_out,W_out), indices)``; ``indices`` are ``max_pool2d``'s lattice indices (int64),
    flattened to one dimension (in the layout the 2x2 max ran in: :func:`use_channels_last` and
    :func:`_pools_channels_last`; :func:`backward2d` reads them back), for ``mode == 0`` (max) with
    ``need_indices``, else an empty int64 tensor. ``mode 1``: average. ``out`` comes back in the input's
    layout where the batch ran in chunks or both axes resample (:data:`LATTICE_CHUNK_BYTES`), else in the
    layout the 2x2 max ran in."""
    work = _compute_dtype(x)
    if work != x.dtype:
        out, idx = forward2d(x.to(work), sizes, mode, need_indices)
        return out.to(x.dtype), idx
    if use_channels_last(x, sizes):
        out, idx = _forward_nhwc(x, sizes, mode, need_indices)
        if idx.numel():
            idx = idx.permute(0, 2, 3, 1).reshape(-1)
        return out, idx
    out, idx = _forward_nchw(x, sizes, mode, need_indices)
    if _pools_channels_last(x.shape, sizes, mode, need_indices) and idx.numel():
        return out, idx.permute(0, 2, 3, 1).reshape(-1)
    return out, idx.reshape(-1)


def backward2d(
    grad_out: Tensor, x: Tensor, indices: Tensor, mode: int, need_x: bool, need_size: bool
) -> tuple[Tensor, Tensor]:
    """``(grad_x, grad_sizes)``: ``grad_sizes`` is ``d loss / d (continuous output sizes)``, float64 ``(2,)``
    (zeros unless ``need_size``); ``grad_x`` is an empty tensor unless ``need_x``. ``indices`` as
    returned by :func:`forward2d`."""
    work = _compute_dtype(x)
    if work != x.dtype:
        grad_x, grad_sizes = backward2d(grad_out.to(work), x.to(work), indices, mode, need_x, need_size)
        return grad_x.to(x.dtype), grad_sizes
    N, C, Sh, Sw = grad_out.shape
    if use_channels_last(x, (Sh, Sw)):
        if indices.numel():
            indices = indices.view(N, Sh, Sw, C).permute(0, 3, 1, 2)
        return _backward_nhwc(grad_out, x, indices, mode, need_x, need_size)
    if indices.numel() and _pools_channels_last(x.shape, (Sh, Sw), mode, True):
        indices = indices.view(N, Sh, Sw, C).permute(0, 3, 1, 2)
    elif indices.numel():
        indices = indices.view(N, C, Sh, Sw)
    return _backward_nchw(grad_out, x, indices, mode, need_x, need_size)


def _pool_lattice(z: Tensor, mode: int, need_indices: bool, indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """2x2 aggregation of the (N, C, 2*Sh, 2*Sw) lattice ``z``: ``(out, indices)`` -- mean for
    ``mode == 1`` (no indices), else max with its int64 indices when ``need_indices``, written into
    ``indices`` (shape ``(N, C, Sh, Sw)``, in ``z``'s layout) when it is given."""
    empty = torch.empty(0, dtype=torch.int64, device=z.device)
    if mode == 1:
        return F.avg_pool2d(z, 2), empty
    if need_indices and indices is not None:
        out = torch.empty_like(indices, dtype=z.dtype)
        return torch.ops.aten.max_pool2d_with_indices.out(
            z, [2, 2], [2, 2], [0, 0], [1, 1], False, out=out, indices=indices
        )
    if need_indices:
        return F.max_pool2d(z, 2, return_indices=True)
    return F.max_pool2d(z, 2), empty
