"""DynOPool against slow, obviously-correct references (grid_sample on the full 4-point grid).

Every numerical check runs for both implementations: the fused C++ CPU kernel ("fused") and the
pure-PyTorch reference path ("torch", forced with ``POOLARCH_DISABLE_EXT=1``).
"""
from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poolarch.layers import DynOPool1d, DynOPool2d, DynOPool3d, StaticResizePool, dynopool, dynopool2d
from _dynopool_reference import output_size_cases

dyn = importlib.import_module("poolarch.layers.dynopool")
ext = importlib.import_module("poolarch.layers._dynopool_ext")
op = importlib.import_module("poolarch.layers._dynopool_op")



@pytest.fixture
def backend(dynopool_path: str) -> str:
    return dynopool_path


def _check_backend(y: torch.Tensor, backend: str) -> None:
    if y.requires_grad:
        fused = getattr(y, "used_fused", None)  # recorded by _run before the graph is freed
        assert (op.ran_fused_kernel(y) if fused is None else fused) == (backend == "fused")


# ----------------------------------------------------------------------------------------------
# Slow references
# ----------------------------------------------------------------------------------------------
def _ste_sizes(in_size, alpha: torch.Tensor, min_size: float = 1.5) -> torch.Tensor:
    """Straight-through output sizes: value round(max(L/alpha, min)), gradient of the continuous one."""
    cont = torch.clamp(torch.tensor(list(in_size), dtype=alpha.dtype) / alpha, min=min_size)
    return torch.floor(cont.detach() + 0.5) + (cont - cont.detach())


def _lattice_coords(n_cells: int, s: torch.Tensor) -> torch.Tensor:
    """Normalised [-1, 1] coordinates of the 2 query points per cell (+-1/4 cell around centres)."""
    centres = -1 + (2 * torch.arange(n_cells, dtype=s.dtype) + 1) / s  # cell width 2/s
    quarter = 0.5 / s
    return torch.stack([centres - quarter, centres + quarter], dim=-1).reshape(-1)


def reference_dynopool(x: torch.Tensor, alpha: torch.Tensor, aggregation: str = "max", s=None) -> torch.Tensor:
    """grid_sample on the full 2^d-point grid (border padding, align_corners=False) + pooling; 1-3 d.

    ``s`` (continuous output sizes) defaults to the straight-through sizes from ``alpha``; the
    integer sizes are always the rounded ones.
    """
    ndim = x.dim() - 2
    in_size = x.shape[2:]
    s = _ste_sizes(in_size, alpha) if s is None else s
    sizes = [int(v) for v in torch.floor(s.detach() + 0.5).tolist()]
    coords = [_lattice_coords(n, s[d]) for d, n in enumerate(sizes)]
    if ndim == 1:  # as a 2-d image of height 1: normalised y = 0 is exactly row 0
        coords = [torch.zeros(1, dtype=x.dtype)] + coords
        x = x.unsqueeze(2)
    mesh = torch.meshgrid(*coords, indexing="ij")
    grid = torch.stack(mesh[::-1], dim=-1)  # grid_sample wants (x, y[, z]) order
    grid = grid.unsqueeze(0).expand(x.shape[0], *grid.shape)
    z = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if ndim == 1:
        z = z.squeeze(2)
    pool = {("max", 1): F.max_pool1d, ("max", 2): F.max_pool2d, ("max", 3): F.max_pool3d,
            ("avg", 1): F.avg_pool1d, ("avg", 2): F.avg_pool2d, ("avg", 3): F.avg_pool3d}[(aggregation, ndim)]
    return pool(z, 2)


def _run(fn, x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor | None = None):
    x = x.detach().clone().requires_grad_(True)
    alpha = alpha.detach().clone().requires_grad_(True)
    y = fn(x, alpha)
    y.used_fused = op.ran_fused_kernel(y)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype) if weight is None else weight
    (y * w).sum().backward()
    return y, x.grad, alpha.grad


def has_kink(in_len: int, out_size: int) -> bool:
    """A lattice point on a pixel centre: (k + 1/2) L / (2S) - 1/2 an integer in [0, L-1]."""
    return any(((2 * k + 1) * in_len - 2 * out_size) % (4 * out_size) == 0
               and 0 <= (2 * k + 1) * in_len - 2 * out_size for k in range(2 * out_size))


def fd_alpha_grad(x: torch.Tensor, alpha: torch.Tensor, aggregation: str = "max", weight=None,
                  step: float = 1e-6) -> torch.Tensor:
    """d sum(weight * layer) / d alpha by central finite differences of the float64 grid_sample
    reference in which the output size is held at its rounded value and only the lattice moves with
    the continuous size ``L / alpha`` (what the straight-through estimator differentiates; at a kink
    it is the mean of the two one-sided derivatives)."""
    x64 = x.detach().double()
    a64 = alpha.detach().double().reshape(-1)
    cont = [n / a for n, a in zip(x.shape[2:], a64.tolist())]
    sizes = [float(math.floor(max(c, 1.5) + 0.5)) for c in cont]
    if weight is None:
        weight = torch.randn(tuple(x.shape[:2]) + tuple(int(v) for v in sizes),
                             generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    weight = weight.double()
    grads = []
    for d, n in enumerate(x.shape[2:]):
        plus, minus = list(sizes), list(sizes)
        plus[d] += step
        minus[d] -= step
        lp = (reference_dynopool(x64, a64, aggregation, s=torch.tensor(plus, dtype=torch.float64)) * weight).sum()
        lm = (reference_dynopool(x64, a64, aggregation, s=torch.tensor(minus, dtype=torch.float64)) * weight).sum()
        ds_da = -n / a64[d].item() ** 2 if cont[d] > 1.5 else 0.0
        grads.append(((lp - lm) / (2 * step)).item() * ds_da)
    return torch.tensor(grads, dtype=torch.float64)


def alpha_grad_reference(x, alpha, aggregation, autograd_ref):
    """The grid_sample reference's autograd alpha-gradient where no lattice point sits on a pixel
    centre; the finite-difference model (mean of both sides, the kink convention) where one does.
    Returns ``(reference, at_kink)``."""
    a = alpha.detach().double().reshape(-1).tolist()
    kink = any(has_kink(n, int(math.floor(max(n / v, 1.5) + 0.5))) for n, v in zip(x.shape[2:], a))
    if not kink:
        return autograd_ref, False
    return fd_alpha_grad(x, alpha, aggregation).to(autograd_ref.dtype), True


SCALES = [
    pytest.param((0.5, 0.5), (8, 10), id="half-even"),
    pytest.param((0.5, 0.5), (7, 9), id="half-odd"),
    pytest.param((0.66, 0.44), (9, 11), id="aniso-down"),
    pytest.param((1.2, 1.2), (6, 7), id="up"),
    pytest.param((0.37, 1.6), (11, 5), id="down-up"),
    pytest.param((0.05, 0.9), (8, 8), id="min-size"),
]


# ----------------------------------------------------------------------------------------------
# Agreement with the grid_sample reference
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("scale,hw", SCALES)
def test_matches_grid_sample_reference_float32(backend, aggregation, scale, hw):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw)
    alpha = torch.tensor([1 / scale[0], 1 / scale[1]])
    y, gx, ga = _run(lambda x, a: dynopool2d(x, a, aggregation), x, alpha)
    _check_backend(y, backend)
    y_ref, gx_ref, ga_ref = _run(lambda x, a: reference_dynopool(x, a, aggregation), x, alpha)
    expected_size = tuple(math.floor(max(n * r, 1.5) + 0.5) for n, r in zip(hw, scale))
    assert tuple(y.shape[2:]) == expected_size
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    ga_ref, _ = alpha_grad_reference(x, alpha, aggregation, ga_ref)
    torch.testing.assert_close(ga, ga_ref, rtol=1e-4, atol=1e-4 * ga_ref.abs().max().item() + 1e-6)


@pytest.mark.parametrize("aggregation", ["max", "avg"])
def test_alpha_gradient_float64_tight(backend, aggregation):
    torch.manual_seed(1)
    x = torch.randn(3, 2, 10, 13, dtype=torch.float64)
    alpha = torch.tensor([1 / 0.7, 1 / 0.45], dtype=torch.float64)
    y, gx, ga = _run(lambda x, a: dynopool2d(x, a, aggregation), x, alpha)
    _check_backend(y, backend)
    y_ref, gx_ref, ga_ref = _run(lambda x, a: reference_dynopool(x, a, aggregation), x, alpha)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(gx, gx_ref, atol=1e-12, rtol=0)
    ga_ref, at_kink = alpha_grad_reference(x, alpha, aggregation, ga_ref)
    tol = 1e-6 if at_kink else 1e-10  # finite differences at kinks
    torch.testing.assert_close(ga, ga_ref, atol=tol, rtol=tol)


# ----------------------------------------------------------------------------------------------
# gradcheck (float64)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("scale", [(0.5, 0.5), (0.7, 0.45), (1.3, 0.8)])
def test_gradcheck_input(backend, aggregation, scale):
    torch.manual_seed(2)
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([1 / scale[0], 1 / scale[1]], dtype=torch.float64)
    _check_backend(dynopool2d(x, alpha, aggregation), backend)
    assert torch.autograd.gradcheck(lambda t: dynopool2d(t, alpha, aggregation), (x,), eps=1e-6, atol=1e-7)


def definition_size_grad(x: torch.Tensor, weight: torch.Tensor, aggregation: str) -> list[float]:
    """d sum(weight * out) / d (output sizes) written out from the definition with explicit loops
    (float64, tiny shapes): lattice point k sits at u_k = (k + 1/2) L / (2 s) - 1/2 = n_k / (4s) with
    the integer n_k = (2k+1) L - 2s; du_k/ds = -(k + 1/2) L / (2 s^2) where u_k >= 0; d value/d u_k is
    the tap difference x[i0+1] - x[i0] (0 right of the last pixel), and on a pixel centre m (a kink,
    n_k % 4s == 0) the mean of both sides, (x[m+1] - x[m-1]) / 2 with clamped indices; resampled
    along the other axis."""
    _, _, H, W = x.shape
    Ho, Wo = weight.shape[2:]

    def taps(n_in: int, n_lat: int, s: float):
        out = []
        for k in range(n_lat):
            n = (2 * k + 1) * n_in - n_lat
            u = max((k + 0.5) * n_in / n_lat - 0.5, 0.0)
            du_ds = -(k + 0.5) * n_in / (2 * s * s) if n >= 0 else 0.0
            i0 = min(int(math.floor(u)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            if n >= 0 and n % (2 * n_lat) == 0:  # kink on pixel m = i0
                s0, s1, c = max(i0 - 1, 0), i1, 0.5
            else:
                s0, s1, c = i0, i1, 1.0
            out.append((i0, i1, u - i0, du_ds, s0, s1, c))
        return out

    th, tw = taps(H, 2 * Ho, Ho), taps(W, 2 * Wo, Wo)

    def blend(a, b, lam):
        return (1 - lam) * a + lam * b

    def value(k, l):
        i0, i1, lh = th[k][:3]
        j0, j1, lw = tw[l][:3]
        return blend(blend(x[:, :, i0, j0], x[:, :, i0, j1], lw), blend(x[:, :, i1, j0], x[:, :, i1, j1], lw), lh)

    def slope_h(k, l):
        s0, s1, c = th[k][4:]
        j0, j1, lw = tw[l][:3]
        return c * (blend(x[:, :, s1, j0], x[:, :, s1, j1], lw) - blend(x[:, :, s0, j0], x[:, :, s0, j1], lw))

    def slope_w(k, l):
        i0, i1, lh = th[k][:3]
        s0, s1, c = tw[l][4:]
        return c * (blend(x[:, :, i0, s1], x[:, :, i1, s1], lh) - blend(x[:, :, i0, s0], x[:, :, i1, s0], lh))

    gh = torch.zeros((), dtype=torch.float64)
    gw = torch.zeros((), dtype=torch.float64)
    for i in range(Ho):
        for j in range(Wo):
            points = [(2 * i + a, 2 * j + b) for a in (0, 1) for b in (0, 1)]
            values = torch.stack([value(k, l) for k, l in points])  # (4, N, C)
            if aggregation == "max":
                share = F.one_hot(values.argmax(0), 4).permute(2, 0, 1).to(x.dtype)  # first maximum wins
            else:
                share = torch.full_like(values, 0.25)
            for p, (k, l) in enumerate(points):
                g = weight[:, :, i, j] * share[p]
                gh = gh + (g * slope_h(k, l)).sum() * th[k][3]
                gw = gw + (g * slope_w(k, l)).sum() * tw[l][3]
    return [gh.item(), gw.item()]


@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("in_hw,out_hw", [((9, 11), (6, 4)), ((8, 10), (4, 5)), ((5, 5), (7, 6))])
def test_size_gradient_definition_and_finite_differences(backend, aggregation, in_hw, out_hw):
    """The gradient w.r.t. the continuous output sizes (what reaches alpha) equals the written-out
    definition and the central finite difference of the grid_sample reference with the lattice moved
    continuously (also at r = 1/2 on even sizes, where every lattice point sits on a pixel: the mean
    of the two one-sided derivatives)."""
    torch.manual_seed(3)
    x = torch.randn(1, 2, *in_hw, dtype=torch.float64)
    alpha = torch.tensor([in_hw[0] / out_hw[0], in_hw[1] / out_hw[1]], dtype=torch.float64)
    weight = torch.randn(1, 2, *out_hw, dtype=torch.float64)
    pool = DynOPool2d(aggregation=aggregation).double()
    with torch.no_grad():
        pool.alpha.copy_(alpha)
    y = pool(x)
    _check_backend(y, backend)
    assert pool.last_out_size == out_hw
    (grad_s,) = torch.autograd.grad((y * weight).sum(), pool.last_size_surrogate)
    expected = torch.tensor(definition_size_grad(x, weight, aggregation), dtype=torch.float64)
    torch.testing.assert_close(grad_s, expected, rtol=1e-10, atol=1e-10)
    eps = 1e-6
    s0 = torch.tensor([float(v) for v in out_hw], dtype=torch.float64)
    numeric = []
    for d in range(2):
        step = torch.zeros(2, dtype=torch.float64)
        step[d] = eps
        plus = (reference_dynopool(x, alpha, aggregation, s=s0 + step) * weight).sum()
        minus = (reference_dynopool(x, alpha, aggregation, s=s0 - step) * weight).sum()
        numeric.append(((plus - minus) / (2 * eps)).item())
    torch.testing.assert_close(grad_s, torch.tensor(numeric, dtype=torch.float64), rtol=1e-5, atol=1e-7)


def test_gradcheck_size_gradient_of_fused_kernel():
    """The kernel's size gradient through the surrogate equals autograd of the continuous reference."""
    if not ext.extension_enabled():
        pytest.skip("POOLARCH_DISABLE_EXT=1")
    assert ext.extension_available()
    torch.manual_seed(4)
    x = torch.randn(2, 1, 7, 7, dtype=torch.float64, requires_grad=True)
    s = torch.tensor([5.0, 3.0], dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 5, 3, dtype=torch.float64)
    y = dyn._dispatch(x, s, (5, 3), "max")  # the layers' path: the custom op
    assert op.ran_fused_kernel(y)
    gx, gs = torch.autograd.grad((y * weight).sum(), (x, s))
    s_ref = s.detach().clone().requires_grad_(True)
    y_ref = reference_dynopool(x, torch.ones(2, dtype=torch.float64), "max", s=s_ref)
    gx_ref, gs_ref = torch.autograd.grad((y_ref * weight).sum(), (x, s_ref))
    torch.testing.assert_close(gx, gx_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(gs, gs_ref, atol=1e-10, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Exact properties
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 5, 4, 4), (3, 1, 4, 10)])
def test_half_scale_even_sizes_is_maxpool_exactly(backend, shape, channels_last):
    torch.manual_seed(5)
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    pool = DynOPool2d(0.5)
    y = pool(x1)
    _check_backend(y, backend)
    y_ref = nn.MaxPool2d(2)(x2)
    assert torch.equal(y, y_ref)
    g = torch.randn_like(y_ref)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(x1.grad, x2.grad)


@pytest.mark.parametrize(
    "length,scale", [(32, 0.5), (7, 0.5), (5, 0.3), (3, 0.1), (10, 0.25), (10, 0.15), (9, 1.7), (1, 3.0)]
)
def test_output_size_formula(length, scale):
    expected = math.floor(max(length * scale, 1.5) + 0.5)
    pool = DynOPool2d((scale, scale))
    assert pool.output_size((length, length)) == (expected, expected)
    y = pool(torch.randn(1, 1, length, length))
    assert tuple(y.shape[2:]) == (expected, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_size_eager_matches_the_tensor_formula(dtype, monkeypatch):
    """The eager size (rounding on Python floats, clamp only where it binds) equals the tensor formula
    that torch.compile traces, bit for bit: sizes, surrogate values and alpha gradients, also at the
    rounding boundaries (size exactly k + 1/2 before rounding) and where min_size binds."""
    gen = torch.Generator().manual_seed(0)
    cases = [(length, alpha, [1.5, 1.3, 0.7][kind]) for length, alpha, kind in output_size_cases(gen, 400, 300, 400, (-3, 3))]
    cases.append(((36, 253), [0.22857142857142856, 168.66666666666666], 1.5))  # 253 / alpha == 1.5 in float32
    binding = 0
    for length, alpha, min_size in cases:
        results = []
        for fast in (True, False):
            if not fast:
                monkeypatch.setattr(dyn, "_output_size_eager", lambda *args: None)
            a = torch.tensor(alpha, dtype=dtype, requires_grad=True)
            surrogate, sizes = dyn.dynopool_output_size(length, a, min_size)
            (surrogate * torch.tensor([0.3, -1.7], dtype=dtype)).sum().backward()
            results.append((sizes, surrogate.detach(), a.grad))
            monkeypatch.undo()
        (s1, v1, g1), (s2, v2, g2) = results
        assert s1 == s2 and torch.equal(v1, v2) and torch.equal(g1, g2), (length, alpha, min_size)
        binding += any(n / a <= min_size for n, a in zip(length, alpha))
    assert binding > 20  # the clamp branch ran
    assert dyn._output_size_eager((4, 4), torch.ones(2, dtype=torch.bfloat16), [1.0, 1.0], 1.5) is None


def test_size_cache_survives_inference_mode():
    """The cached input-size tensor made under inference_mode is an ordinary tensor: a later training
    step saves it for alpha's backward."""
    pool = DynOPool2d(0.6)
    x = torch.randn(1, 2, 13, 11)
    with torch.inference_mode():
        pool(x)
    pool(x).sum().backward()
    assert pool.alpha.grad is not None and torch.isfinite(pool.alpha.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes(backend, dtype):
    torch.manual_seed(6)
    x64 = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    alpha = torch.tensor([1 / 0.6, 1 / 0.8])
    x = x64.to(dtype).requires_grad_(True)
    a = alpha.to(dtype).requires_grad_(True)
    y = dynopool2d(x, a)
    assert y.dtype == dtype and tuple(y.shape) == (2, 3, 5, 6)
    y.float().square().sum().backward()
    assert x.grad.dtype == dtype and a.grad is not None and torch.isfinite(a.grad.float()).all()
    y_ref = reference_dynopool(x.detach().double(), alpha.double())
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(y.double(), y_ref, atol=tol * 4, rtol=tol)


@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("scale", [(0.5, 0.5), (0.66, 0.44), (1.2, 1.2)])
def test_channels_last_agrees(backend, aggregation, scale):
    torch.manual_seed(7)
    x = torch.randn(2, 5, 9, 8)
    alpha = torch.tensor([1 / scale[0], 1 / scale[1]])
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        xx = x.contiguous(memory_format=fmt)
        y, gx, ga = _run(lambda t, a: dynopool2d(t, a, aggregation), xx, alpha)
        _check_backend(y, backend)
        results.append((y.contiguous(), gx.contiguous(), ga))
    for a, b in zip(*results):
        if backend == "fused":  # one summation order for both layouts
            assert torch.equal(a, b)
        else:  # the PyTorch path runs in the input's layout: the same sums in another order
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(
    "size,scale",
    [((8, 10), (0.5, 0.5)), ((8, 6), (0.5, 0.7)), ((6, 8), (0.8, 0.5)), ((4, 10), (0.5, 1.3)), ((2, 4), (0.5, 0.5))],
)
def test_identity_axes(backend, fmt, size, scale):
    """Axes with L == 2S (every lattice point a kink; the PyTorch path replaces the D matmul by a
    clamped central difference), alone or next to a resampled axis, in both layouts: outputs and input
    gradients against grid_sample, the alpha gradient against the finite-difference kink model."""
    torch.manual_seed(9)
    x = torch.randn(2, 3, *size, dtype=torch.float64).contiguous(memory_format=fmt)
    alpha = torch.tensor([1 / scale[0], 1 / scale[1]], dtype=torch.float64)
    y, gx, ga = _run(dynopool2d, x, alpha)
    _check_backend(y, backend)
    y_ref, gx_ref, ga_ref = _run(reference_dynopool, x.contiguous(), alpha)
    ga_ref, at_kink = alpha_grad_reference(x, alpha, "max", ga_ref)
    assert at_kink
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(gx, gx_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ga, ga_ref, rtol=1e-5, atol=1e-8)  # the finite-difference model's precision


@pytest.mark.parametrize("length", [2, 4, 6, 32])
@pytest.mark.parametrize("dim", [2, 3])
def test_identity_axis_slope_is_the_slope_matrix(length, dim):
    """The PyTorch path's elementwise slope of an identity axis (L == 2S; its border rows in one strided
    op for L > 2) equals the slope matrix D applied along that axis."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    q = torch.randn(2, 3, length, length + 1, dtype=torch.float64) if dim == 2 else \
        torch.randn(2, 3, 5, length, dtype=torch.float64)
    D = torch_path.axis_matrices(length, length // 2, torch.float64, q.device)[2]
    expected = torch.matmul(D, q.movedim(dim, -1).unsqueeze(-1)).squeeze(-1).movedim(-1, dim)
    torch.testing.assert_close(torch_path._identity_axis_slope(q, dim, length // 2), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("hw,sizes", [((32, 32), (21, 14)), ((32, 32), (38, 38)), ((9, 7), (3, 5)), ((5, 6), (7, 2)),
                                      ((1, 5), (2, 3))])
def test_interpolated_lattice_matches_the_matmuls(monkeypatch, fmt, dtype, aggregation, hw, sizes):
    """Where both axes resample, the PyTorch path's bilinear-interpolation formulation (lattice, input
    gradient, size gradients) equals its matmul formulation with the exact weights: to float64 rounding,
    and in float32 to the rounding of interpolate's float32 source coordinates."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    torch.manual_seed(11)
    x = torch.randn(2, 8, *hw, dtype=dtype).contiguous(memory_format=fmt)
    mode = 0 if aggregation == "max" else 1
    results = []
    for interpolate in (True, False):
        monkeypatch.setattr(torch_path, "interpolates", lambda device, on=interpolate: on)
        out, idx = torch_path.forward2d(x, sizes, mode, need_indices=True)
        g = torch.linspace(-1, 1, out.numel(), dtype=dtype).view(out.shape)
        grad_x, grad_sizes = torch_path.backward2d(g, x, idx, mode, True, True)
        grad_x_only, _ = torch_path.backward2d(g, x, idx, mode, True, False)
        _, sizes_only = torch_path.backward2d(g, x, idx, mode, False, True)
        results.append((out, idx, grad_x, grad_sizes, grad_x_only, sizes_only))
    (out, _, gx, gs, gx1, gs1), (out_m, _, gx_m, gs_m, _, _) = results  # winners may differ only at exact ties
    tol = 1e-12 if dtype == torch.float64 else 2e-6 * max(hw)
    torch.testing.assert_close(out, out_m, atol=tol, rtol=0)
    torch.testing.assert_close(gx, gx_m, atol=tol, rtol=0)
    torch.testing.assert_close(gs, gs_m, rtol=tol, atol=tol * gs_m.abs().max().item())
    assert torch.equal(gx1, gx) and torch.equal(gs1, gs)


FORMULATIONS = pytest.mark.parametrize(
    "channels,hw,sizes",
    [(16, (9, 7), (6, 5)), (16, (6, 6), (7, 7)), (16, (18, 18), (9, 9)), (4, (18, 18), (9, 9)), (16, (18, 18), (9, 6)),
     (16, (18, 18), (6, 9)), (4, (18, 18), (12, 5)), (4, (18, 18), (5, 12)), (16, (8, 6), (4, 3))],
    ids=["both-resample", "upsample", "identity", "identity-nchw-max", "identity-h", "identity-w", "matmuls-h-first",
         "matmuls-w-first", "small"],
)
"""The PyTorch path's formulations (checked by test_batch_chunks_cover_the_formulations)."""


@pytest.mark.parametrize("planes", ["direct", "padded"])
@pytest.mark.parametrize("grad_fmt", [torch.contiguous_format, torch.channels_last], ids=["grad_nchw", "grad_cl"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aggregation", ["max", "avg"])
@FORMULATIONS
def test_batch_chunks_equal_one_pass(monkeypatch, planes, grad_fmt, fmt, dtype, aggregation, channels, hw, sizes):
    """The NCHW and interpolated formulations run the batch in chunks on the CPU (LATTICE_CHUNK_BYTES):
    chunks of 1 and 2 of 3 samples (an uneven last chunk) give the output, the indices and the input
    gradient of one pass bit for bit, and the size gradients to summation rounding. ``padded``: every
    NCHW plane counts as aliasing (ALIASING_PLANE_BYTES), so NCHW inputs go to channels_last through
    padded copies, the interpolated path's a chunk at a time (_nhwc_chunks)."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    if planes == "padded":
        monkeypatch.setattr(torch_path, "ALIASING_PLANE_BYTES", 1)
        x_nchw = torch.empty(3, channels, *hw, dtype=dtype)
        x_cl = x_nchw.contiguous(memory_format=torch.channels_last)
        assert torch_path._pads_planes(x_nchw) and not torch_path._pads_planes(x_cl)
    torch.manual_seed(13)
    x = torch.randn(3, channels, *hw, dtype=dtype).contiguous(memory_format=fmt)
    mode = 0 if aggregation == "max" else 1
    per_sample = channels * max(hw[0] * hw[1], 4 * sizes[0] * sizes[1]) * x.element_size()
    results = []
    monkeypatch.setattr(torch_path, "_intra_op_threads", lambda: 1)
    for step in (3, 2, 1):
        monkeypatch.setattr(torch_path, "LATTICE_CHUNK_BYTES", step * per_sample + per_sample // 2)
        assert torch_path._batch_step(x, sizes) == step
        out, idx = torch_path.forward2d(x, sizes, mode, need_indices=True)
        g = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(4)).contiguous(memory_format=grad_fmt)
        grad_x, grad_sizes = torch_path.backward2d(g, x, idx, mode, True, True)
        grad_x_only, _ = torch_path.backward2d(g, x, idx, mode, True, False)
        _, sizes_only = torch_path.backward2d(g, x, idx, mode, False, True)
        assert torch.equal(grad_x_only, grad_x) and torch.equal(sizes_only, grad_sizes)
        results.append((out.contiguous(), idx, grad_x.contiguous(), grad_sizes))
    (out, idx, grad_x, grad_sizes), *chunked = results
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for out_c, idx_c, grad_x_c, grad_sizes_c in chunked:
        assert torch.equal(out_c, out) and torch.equal(idx_c, idx) and torch.equal(grad_x_c, grad_x)
        torch.testing.assert_close(grad_sizes_c, grad_sizes, rtol=tol, atol=tol * grad_sizes.abs().max().item())


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("aggregation", ["max", "avg"])
@FORMULATIONS
def test_empty_batch_on_every_formulation(fmt, aggregation, channels, hw, sizes):
    """An empty batch gives empty outputs and input gradients and zero size gradients."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    x = torch.randn(0, channels, *hw).contiguous(memory_format=fmt)
    mode = 0 if aggregation == "max" else 1
    out, idx = torch_path.forward2d(x, sizes, mode, need_indices=True)
    grad_x, grad_sizes = torch_path.backward2d(torch.zeros(out.shape), x, idx, mode, True, True)
    assert out.shape == (0, channels, *sizes) and grad_x.shape == x.shape
    assert torch.equal(grad_sizes, torch.zeros(2, dtype=torch.float64))


def test_batch_chunks_are_a_multiple_of_the_threads(monkeypatch):
    """A chunk holds a multiple of the intra-op thread count, or the whole batch when fewer samples fit
    LATTICE_CHUNK_BYTES; off the CPU, always the whole batch."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    x = torch.empty(64, 16, 8, 8)
    per_sample = 16 * 8 * 8 * 4  # bytes (the lattice of r = 1/2 is the input)
    monkeypatch.setattr(torch_path, "_intra_op_threads", lambda: 4)
    for fit, step in ((64, 64), (100, 64), (11, 8), (4, 4), (3, 64), (1, 64)):
        monkeypatch.setattr(torch_path, "LATTICE_CHUNK_BYTES", fit * per_sample + per_sample // 3)
        assert torch_path._batch_step(x, (4, 4)) == step
    assert torch_path._batch_step(torch.empty(64, 16, 8, 8, device="meta"), (4, 4)) == 64


def test_batch_chunks_cover_the_formulations(monkeypatch):
    """The cases of test_batch_chunks_equal_one_pass reach the formulations their names say."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    x16, x4 = torch.randn(3, 16, 18, 18), torch.randn(3, 4, 18, 18)
    assert torch_path.use_channels_last(torch.randn(3, 16, 9, 7), (6, 5))  # both-resample, upsample, small
    assert not torch_path.use_channels_last(x16, (9, 9)) and torch_path._pools_channels_last(x16.shape, (9, 9), 0, True)
    assert not torch_path.use_channels_last(x4, (9, 9)) and not torch_path._pools_channels_last(x4.shape, (9, 9), 0, True)
    assert not torch_path.use_channels_last(x16, (9, 6)) and not torch_path.use_channels_last(x16, (6, 9))
    for sizes in ((12, 5), (5, 12)):
        assert not torch_path.use_channels_last(x4, sizes)
    assert torch_path._height_side_first(18, 18, 12, 5) and not torch_path._height_side_first(18, 18, 5, 12)


@pytest.mark.parametrize("hw", [(8, 8), (32, 32), (6, 10)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identity_lattice_max_through_channels_last_is_exact(monkeypatch, hw, dtype):
    """r = 1/2 on an NCHW map: the 2x2 max taken through a channels_last copy (indices, input gradient
    written by the max-pool backward, size gradients) equals the NCHW max bit for bit."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    monkeypatch.setattr(torch_path, "SMALL_MAP_PIXELS", 0)
    torch.manual_seed(12)
    x = torch.randn(2, 16, *hw, dtype=dtype)
    sizes = (hw[0] // 2, hw[1] // 2)
    results = []
    for channels_last in (True, False):
        monkeypatch.setattr(torch_path, "IDENTITY_CHANNELS_LAST_MIN_CHANNELS", 16 if channels_last else 17)
        assert torch_path._pools_channels_last(x.shape, sizes, 0, True) is channels_last
        out, idx = torch_path.forward2d(x, sizes, 0, need_indices=True)
        g = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
        grad_x, grad_sizes = torch_path.backward2d(g, x, idx, 0, True, True)
        results.append((out.contiguous(), grad_x.contiguous(), grad_sizes))
        assert grad_x.is_contiguous()
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("in_len,out_size", [(4, 5), (32, 38), (32, 21), (32, 14), (7, 3), (6, 3), (1, 2), (5, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_band_dot_is_the_weighted_dot(in_len, out_size, dtype):
    """The size-gradient sum <P, D X> from D's two taps per row (two row gathers and a dot) equals the
    dense float64 formula, on axes with kinks, clamped points and upsampling; the taps rebuild D."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    D = torch_path.axis_matrices(in_len, out_size, torch.float64, torch.device("cpu"))[2]
    B, K, M = 3, 2 * out_size, 6
    p, m, w = torch_path._slope_taps(in_len, out_size, B, dtype, torch.device("cpu"))
    rebuilt = torch.zeros(K, in_len, dtype=torch.float64)
    rebuilt[torch.arange(K), p[:K]] += w.double().flatten()
    rebuilt[torch.arange(K), m[:K]] -= w.double().flatten()
    torch.testing.assert_close(rebuilt, D, rtol=1e-6 if dtype == torch.float32 else 0, atol=0)
    assert torch.equal(p.view(B, K) - p[:K], (torch.arange(B) * in_len).view(B, 1).expand(B, K))
    gen = torch.Generator().manual_seed(5)
    P, X = torch.randn(B, K, M, generator=gen, dtype=torch.float64), torch.randn(B, in_len, M, generator=gen, dtype=torch.float64)
    expected = (P * torch.matmul(D, X)).sum()
    bufs = torch.empty(B * K, M, dtype=dtype), torch.empty(B * K, M, dtype=dtype)
    got = torch_path._band_dot(P.to(dtype), X.to(dtype).view(B * in_len, M), (p, m, w), bufs).double()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * P.abs().sum().item())


def test_interpolation_is_off_on_cuda_under_deterministic_algorithms():
    """interpolate's bilinear backward has no deterministic CUDA kernel: there the matmuls run."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert not torch_path.interpolates(torch.device("cuda"))
        assert torch_path.interpolates(torch.device("cpu"))
        torch.use_deterministic_algorithms(False)
        assert torch_path.interpolates(torch.device("cuda"))
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (3, 5, 16, 16), (2, 4, 8, 16), (2, 3, 5, 7), (2, 1, 32, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_copy_to_nhwc_is_the_transposed_copy(shape, dtype):
    """The NCHW -> NHWC copy through padded planes (planes of a multiple of 4 KiB) is the plain
    transposed copy."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    x = torch.randn(shape).to(dtype)
    out = torch.empty(shape[0], shape[2], shape[3], shape[1], dtype=dtype)
    assert torch.equal(torch_path._copy_to_nhwc(x, out), x.permute(0, 2, 3, 1))


@pytest.mark.parametrize("n,c", [(1, 1), (3, 5), (2, 17)])
def test_any_batch_and_channels(backend, n, c):
    torch.manual_seed(8)
    x = torch.randn(n, c, 7, 9)
    alpha = torch.tensor([1 / 0.6, 1 / 0.7])
    y, gx, ga = _run(dynopool2d, x, alpha)
    _check_backend(y, backend)
    y_ref, gx_ref, ga_ref = _run(reference_dynopool, x, alpha)
    ga_ref, _ = alpha_grad_reference(x, alpha, "max", ga_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ga, ga_ref, rtol=1e-4, atol=1e-4 * ga_ref.abs().max().item() + 1e-6)


def test_non_contiguous_input(backend):
    x = torch.randn(2, 3, 10, 12)[:, :, ::2, 1:]
    alpha = torch.tensor([1 / 0.7, 1 / 0.5])
    y, _, ga = _run(dynopool2d, x, alpha)
    y_ref, _, ga_ref = _run(reference_dynopool, x, alpha)
    ga_ref, _ = alpha_grad_reference(x, alpha, "max", ga_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ga, ga_ref, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# 1-d and 3-d
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("length,scale", [(12, 0.45), (11, 0.6), (7, 1.4)])
def test_dynopool1d_matches_reference(aggregation, length, scale):
    torch.manual_seed(9)
    x = torch.randn(2, 3, length, dtype=torch.float64)
    alpha = torch.tensor([1 / scale], dtype=torch.float64)
    y, gx, ga = _run(lambda t, a: dynopool(t, a, aggregation), x, alpha)
    y_ref, gx_ref, ga_ref = _run(lambda t, a: reference_dynopool(t, a, aggregation), x, alpha)
    assert y.shape[-1] == math.floor(max(length * scale, 1.5) + 0.5)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(gx, gx_ref, atol=1e-12, rtol=0)
    ga_ref, at_kink = alpha_grad_reference(x, alpha, aggregation, ga_ref)
    tol = 1e-6 if at_kink else 1e-10  # finite differences at kinks
    torch.testing.assert_close(ga, ga_ref, atol=tol, rtol=tol)
    module = DynOPool1d(scale, aggregation)
    assert torch.equal(module(x.float()), dynopool(x.float(), module.alpha.detach(), aggregation))


def test_dynopool1d_half_scale_is_maxpool1d():
    x = torch.randn(2, 3, 10)
    assert torch.equal(DynOPool1d(0.5)(x), F.max_pool1d(x, 2))


@pytest.mark.parametrize("aggregation", ["max", "avg"])
def test_dynopool3d_matches_reference(aggregation):
    torch.manual_seed(10)
    x = torch.randn(1, 2, 5, 6, 7, dtype=torch.float64)
    alpha = torch.tensor([1 / 0.8, 1 / 0.6, 1 / 0.4], dtype=torch.float64)
    y, gx, ga = _run(lambda t, a: dynopool(t, a, aggregation), x, alpha)
    y_ref, gx_ref, ga_ref = _run(lambda t, a: reference_dynopool(t, a, aggregation), x, alpha)
    assert tuple(y.shape[2:]) == (4, 4, 3)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(gx, gx_ref, atol=1e-12, rtol=0)
    ga_ref, at_kink = alpha_grad_reference(x, alpha, aggregation, ga_ref)
    tol = 1e-6 if at_kink else 1e-10  # finite differences at kinks
    torch.testing.assert_close(ga, ga_ref, atol=tol, rtol=tol)


def test_dynopool3d_half_scale_is_maxpool3d():
    x = torch.randn(2, 3, 4, 6, 8)
    assert torch.equal(DynOPool3d(0.5)(x), F.max_pool3d(x, 2))


# ----------------------------------------------------------------------------------------------
# Module contract
# ----------------------------------------------------------------------------------------------
def test_scale_sharing(backend):
    torch.manual_seed(11)
    a = DynOPool2d((0.6, 0.45))
    b = DynOPool2d(share_scale_with=a)
    assert b.alpha is a.alpha
    x1, x2 = torch.randn(2, 3, 13, 9), torch.randn(2, 3, 13, 9)
    y1, y2 = a(x1), b(x2)
    assert y1.shape == y2.shape and a.last_out_size == b.last_out_size
    w1, w2 = torch.randn_like(y1), torch.randn_like(y2)
    (g1,) = torch.autograd.grad((y1 * w1).sum(), a.alpha, retain_graph=True)
    (g2,) = torch.autograd.grad((y2 * w2).sum(), a.alpha, retain_graph=True)
    ((y1 * w1).sum() + (y2 * w2).sum()).backward()
    torch.testing.assert_close(a.alpha.grad, g1 + g2)
    assert list(b.parameters())[0] is a.alpha


def test_extra_repr_and_exposed_state():
    pool = DynOPool2d((0.5, 0.25), aggregation="avg")
    text = repr(pool)
    assert "scale=(0.500, 0.250)" in text and "aggregation=avg" in text and "last=" not in text
    torch.testing.assert_close(pool.scale, torch.tensor([0.5, 0.25]))
    pool(torch.randn(1, 2, 8, 16))
    assert pool.last_in_size == (8, 16) and pool.last_out_size == (4, 4)
    assert "last=(8, 16)->(4, 4)" in repr(pool)
    s = pool.last_size_surrogate
    assert s.tolist() == [4.0, 4.0]
    s.sum().backward()  # d(H / alpha_h)/d alpha_h = -H / alpha_h^2
    torch.testing.assert_close(pool.alpha.grad, torch.tensor([-8 / 2.0**2, -16 / 4.0**2]))


@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("scale", [(0.5, 0.5), (0.62, 1.3)])
def test_to_static_identical(backend, aggregation, scale):
    torch.manual_seed(12)
    pool = DynOPool2d(scale, aggregation)
    x = torch.randn(2, 3, 10, 9)
    y = pool(x)
    static = pool.to_static()
    assert isinstance(static, StaticResizePool) and not list(static.parameters())
    assert static.out_size == pool.last_out_size
    assert torch.equal(static(x), y.detach())


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("in_size,out_size",
                         [((9,), (5,)), ((7, 10), (3, 6)), ((4, 5), (6, 3)), ((5, 4, 6), (2, 3, 4))])
def test_static_resize_pool_torchscript(backend, aggregation, in_size, out_size):
    """``torch.jit.script(StaticResizePool)`` equals the grid_sample reference at the fixed size, and
    a wrong-rank input gives the same ValueError message in eager and scripted mode."""
    static = StaticResizePool(out_size, aggregation)
    scripted = torch.jit.script(static)
    x = torch.randn(2, 3, *in_size, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = reference_dynopool(x, None, aggregation, s=torch.tensor(out_size, dtype=torch.float64))
    torch.testing.assert_close(scripted(x), expected)
    torch.testing.assert_close(static(x), expected)
    torch.testing.assert_close(scripted(x.float()), static(x.float()), atol=1e-6, rtol=1e-6)
    n = len(out_size)
    for wrong in (torch.randn(5), torch.randn(2, 3, *in_size, 2)):
        message = (f"input must have {n + 2} dimensions (N, C, {', '.join('DHW'[3 - n:])}) for {n}-d DynOPool, "
                   f"got shape {tuple(wrong.shape)}")
        with pytest.raises(ValueError) as eager_error:
            static(wrong)
        assert str(eager_error.value) == message
        with pytest.raises(torch.jit.Error) as scripted_error:
            scripted(wrong)
        assert "ValueError: " + message in str(scripted_error.value)


def test_to_static_requires_forward():
    with pytest.raises(RuntimeError):
        DynOPool2d().to_static()


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0.0, -0.5, float("nan"), float("inf"), (0.5, -1.0)])
def test_bad_init_scale(value):
    with pytest.raises(ValueError, match="init_scale"):
        DynOPool2d(value)


@pytest.mark.parametrize("value", [0.0, -2.0, float("nan"), float("inf")])
def test_bad_alpha(value):
    with pytest.raises(ValueError, match="alpha"):
        dynopool2d(torch.randn(1, 1, 4, 4), torch.tensor([2.0, value]))


@pytest.mark.parametrize("module,shape", [(DynOPool2d, (4, 4)), (DynOPool2d, (1, 1, 1, 4, 4)),
                                          (DynOPool1d, (1, 4, 4, 4)), (DynOPool3d, (1, 1, 4, 4))])
def test_wrong_rank(module, shape):
    with pytest.raises(ValueError, match="dimensions"):
        module()(torch.randn(shape))


def test_unknown_aggregation():
    with pytest.raises(ValueError, match="aggregation"):
        DynOPool2d(aggregation="median")
    with pytest.raises(ValueError, match="aggregation"):
        dynopool2d(torch.randn(1, 1, 4, 4), torch.tensor([2.0, 2.0]), aggregation="sum")


# ----------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------
def test_dispatch_rules(monkeypatch):
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    alpha = torch.tensor([1 / 0.7, 1 / 0.7])
    monkeypatch.setenv("POOLARCH_DISABLE_EXT", "1")
    assert not op.ran_fused_kernel(dynopool2d(x, alpha))
    monkeypatch.delenv("POOLARCH_DISABLE_EXT")
    assert op.ran_fused_kernel(dynopool2d(x, alpha)) == ext.extension_available()
    bf16_in_kernel = ext.extension_available() and torch.bfloat16 in ext._DTYPES
    assert op.ran_fused_kernel(dynopool2d(x.bfloat16(), alpha)) == bf16_in_kernel  # else the PyTorch path
    assert not op.kernel_usable(torch.randn(1, 2, 6))  # 1-d: the reference path


@pytest.mark.parametrize(
    "hw,sizes,channels,expected",
    [((16, 16), (8, 8), 3, True), ((4, 4), (2, 3), 3, True), ((17, 16), (8, 8), 8, False),
     ((32, 32), (16, 11), 8, False), ((34, 17), (17, 8), 8, False), ((17, 17), (8, 8), 8, True),
     ((32, 32), (21, 14), 8, True), ((32, 32), (21, 14), 7, False), ((17, 17), (8, 8), 3, False),
     ((32, 32), (38, 38), 3, True), ((32, 32), (38, 16), 8, True)],
)
def test_torch_path_layout_rule(hw, sizes, channels, expected):
    """The PyTorch path runs an NCHW input channels_last on small maps (at most SMALL_MAP_PIXELS
    pixels), when both axes resample (with at least RESAMPLE_CHANNELS_LAST_MIN_CHANNELS = 8 channels)
    and when upsampling, NCHW otherwise (an identity axis, or few channels, on a larger map); a
    channels_last input always runs channels_last."""
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    x = torch.randn(2, channels, *hw)
    assert torch_path.use_channels_last(x, sizes) is expected
    assert torch_path.use_channels_last(x.contiguous(memory_format=torch.channels_last), sizes)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_outputs_keep_the_input_layout(dynopool_path, fmt):
    """Whatever layout a path runs in, the output and the input gradient come back in the input's."""
    x = torch.randn(2, 5, 8, 8).contiguous(memory_format=fmt).requires_grad_(True)
    y = DynOPool2d((0.66, 0.44))(x)
    y.backward(torch.randn_like(y))
    assert y.is_contiguous(memory_format=fmt) and x.grad.is_contiguous(memory_format=fmt)


def test_build_failure_warns_once_and_falls_back(monkeypatch):
    monkeypatch.delenv("POOLARCH_DISABLE_EXT", raising=False)
    monkeypatch.setitem(ext._state, "loaded", None)

    def broken() -> bool:
        raise RuntimeError("no compiler")

    monkeypatch.setattr(ext, "_load", broken)
    x = torch.randn(1, 1, 6, 6)
    alpha = torch.tensor([1 / 0.7, 1 / 0.7])
    with pytest.warns(RuntimeWarning, match="pure-PyTorch"):
        y = dynopool2d(x, alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y2 = dynopool2d(x, alpha)
    torch.testing.assert_close(y, reference_dynopool(x, alpha))
    assert torch.equal(y, y2)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("scale", [(0.5, 0.5), (0.5, 0.7), (0.66, 0.44), (0.44, 0.66), (1.2, 1.2), (0.5, 1.3)])
def test_fallback_results_survive_the_next_call(monkeypatch, fmt, scale):
    """The PyTorch path keeps its temporaries in reused scratch buffers: what it returns (output, input
    gradient) must be fresh memory, left unchanged by a later call on other data of the same shape."""
    monkeypatch.setenv("POOLARCH_DISABLE_EXT", "1")
    alpha = torch.tensor([1 / scale[0], 1 / scale[1]])
    torch.manual_seed(10)
    first = _run(dynopool2d, torch.randn(2, 3, 8, 10).contiguous(memory_format=fmt), alpha)
    kept = [t.clone() for t in first]
    _run(dynopool2d, torch.randn(2, 3, 8, 10).contiguous(memory_format=fmt) * 3, alpha)
    for before, after in zip(kept, first):
        assert torch.equal(before, after)
    torch_path = importlib.import_module("poolarch.layers._dynopool_torch")
    torch_path.release_scratch()
    again = _run(dynopool2d, torch.randn(2, 3, 8, 10).contiguous(memory_format=fmt), alpha)
    assert all(torch.isfinite(t).all() for t in again)
