"""DynOPool's scale gradient at kinks (issue 13.4), on every path.

A kink: a lattice point exactly on an input pixel centre, where bilinear interpolation is not
differentiable in the point's position (including the borders u = 0 and u = L-1, where clamping
makes one side flat). The convention: the mean of the two one-sided derivatives, i.e. the gradient
averaged over an infinitesimal jitter of the scale. The reference is an independent float64 model of
the layer, written point by point, in which the output size is held at its rounded value and only
the lattice positions move with the continuous size ``L / alpha`` (what the straight-through
estimator differentiates), differentiated by central finite differences (step 1e-6 on the size).
"""
from __future__ import annotations

import importlib
import math
import random

import pytest
import torch
import torch.nn.functional as F

from poolarch.layers import DynOPool2d
from _dynopool_reference import interpolation_matrix

fast = importlib.import_module("poolarch.layers._dynopool_torch")



@pytest.fixture
def path(dynopool_path: str) -> str:
    return dynopool_path


# ----------------------------------------------------------------------------------------------
# Independent float64 model
# ----------------------------------------------------------------------------------------------
def model_loss(x, weight, sizes, s, aggregation) -> float:
    A_h = interpolation_matrix(x.shape[2], sizes[0], s[0])
    A_w = interpolation_matrix(x.shape[3], sizes[1], s[1])
    z = torch.einsum("kh,nchw,lw->nckl", A_h, x, A_w)
    out = F.max_pool2d(z, 2) if aggregation == "max" else F.avg_pool2d(z, 2)
    return float((out * weight).sum())


def fd_size_grad(x, weight, sizes, aggregation, step: float = 1e-6) -> torch.Tensor:
    """Central finite difference of the model in the continuous sizes, at ``s = sizes``."""
    grads = []
    for d in range(2):
        plus, minus = [float(v) for v in sizes], [float(v) for v in sizes]
        plus[d] += step
        minus[d] -= step
        grads.append((model_loss(x, weight, sizes, plus, aggregation)
                      - model_loss(x, weight, sizes, minus, aggregation)) / (2 * step))
    return torch.tensor(grads, dtype=torch.float64)


def lattice_on_pixels(in_len: int, out_size: int) -> int:
    """Number of lattice points exactly on a pixel centre (the integer test of the convention)."""
    return sum(1 for k in range(2 * out_size)
               if (n := (2 * k + 1) * in_len - 2 * out_size) >= 0 and n % (4 * out_size) == 0)


def border_tie(in_len: int, out_size: int) -> bool:
    """Both query points of a cell at or beyond the same border (equal values: a max tie whose
    first-wins argmax the jitter would break -- the one documented exception of the convention)."""
    n = [(2 * k + 1) * in_len - 2 * out_size for k in range(2 * out_size)]
    right = 4 * out_size * (in_len - 1)
    return any((n[2 * c] <= 0 and n[2 * c + 1] <= 0) or (n[2 * c] >= right and n[2 * c + 1] >= right)
               for c in range(out_size))


def layer_size_grad(x, weight, alpha, aggregation):
    """``(d loss/d s, d loss/d alpha, used_kernel)`` of the layer at ``alpha``."""
    pool = DynOPool2d(aggregation=aggregation).to(x.dtype)
    with torch.no_grad():
        pool.alpha.copy_(alpha)
    y = pool(x)
    used = importlib.import_module("poolarch.layers._dynopool_op").ran_fused_kernel(y)
    grad_s, grad_a = torch.autograd.grad((y * weight).sum(), (pool.last_size_surrogate, pool.alpha))
    return grad_s, grad_a, used, pool.last_out_size


# (L_h, L_w, S_h, S_w): every point on a pixel (r = 1/2 on 8/16/32/64), integer ratios, both borders.
ALIGNED = [(8, 8, 4, 4), (16, 16, 8, 8), (32, 32, 16, 16), (64, 64, 32, 32), (16, 8, 8, 4),
           (12, 9, 4, 3), (6, 10, 2, 5), (9, 6, 6, 4), (5, 7, 6, 7), (18, 9, 9, 6)]


def _random_cases(n: int = 12, seed: int = 0):
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        L_h, L_w = rng.randint(2, 24), rng.randint(2, 24)
        S_h, S_w = rng.randint(2, 2 * L_h), rng.randint(2, 2 * L_w)
        if border_tie(L_h, S_h) or border_tie(L_w, S_w):
            continue
        if lattice_on_pixels(L_h, S_h) + lattice_on_pixels(L_w, S_w) > 0:
            cases.append((L_h, L_w, S_h, S_w))
    return cases


@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("case", ALIGNED + _random_cases(), ids=lambda c: "x".join(map(str, c)))
def test_kink_gradient_is_central_difference(path, aggregation, case):
    L_h, L_w, S_h, S_w = case
    gen = torch.Generator().manual_seed(sum(case))
    x = torch.randn(2, 3, L_h, L_w, dtype=torch.float64, generator=gen)
    weight = torch.randn(2, 3, S_h, S_w, dtype=torch.float64, generator=gen)
    alpha = torch.tensor([L_h / S_h, L_w / S_w], dtype=torch.float64)
    grad_s, grad_a, used, sizes = layer_size_grad(x, weight, alpha, aggregation)
    assert used == (path == "fused") and sizes == (S_h, S_w)
    expected = fd_size_grad(x, weight, (S_h, S_w), aggregation)
    torch.testing.assert_close(grad_s, expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item() + 1e-9)
    torch.testing.assert_close(grad_a, expected * torch.tensor([-L_h, -L_w]) / alpha**2, rtol=1e-3,
                               atol=1e-3 * (expected.abs().max().item() * max(L_h, L_w)) + 1e-9)


@pytest.mark.parametrize("case", [(8, 8, 4, 4), (32, 32, 16, 16), (12, 9, 4, 3), (9, 6, 6, 4)],
                         ids=lambda c: "x".join(map(str, c)))
def test_kink_gradient_ignores_ulp_changes_of_alpha(path, case):
    """alpha a few ulps off the exact ratio: the same size, the same size-gradient bit for bit."""
    L_h, L_w, S_h, S_w = case
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, L_h, L_w, dtype=torch.float64, generator=gen)
    weight = torch.randn(2, 3, S_h, S_w, dtype=torch.float64, generator=gen)
    exact = torch.tensor([L_h / S_h, L_w / S_w], dtype=torch.float64)
    base, _, _, _ = layer_size_grad(x, weight, exact, "max")
    for direction in (math.inf, -math.inf):
        alpha = exact
        for _ in range(3):
            alpha = torch.nextafter(alpha, torch.full_like(alpha, direction))
            grad_s, _, _, sizes = layer_size_grad(x, weight, alpha, "max")
            assert sizes == (S_h, S_w)
            assert torch.equal(grad_s, base)


def test_kink_gradient_float32(path):
    """float32 layer (r = 1/2 and an integer ratio) against the float64 model."""
    for L_h, L_w, S_h, S_w in [(32, 32, 16, 16), (12, 9, 4, 3)]:
        gen = torch.Generator().manual_seed(3)
        x = torch.randn(2, 4, L_h, L_w, dtype=torch.float64, generator=gen)
        weight = torch.randn(2, 4, S_h, S_w, dtype=torch.float64, generator=gen)
        alpha = torch.tensor([L_h / S_h, L_w / S_w])
        grad_s, _, _, _ = layer_size_grad(x.float(), weight.float(), alpha, "max")
        expected = fd_size_grad(x, weight, (S_h, S_w), "max")
        torch.testing.assert_close(grad_s.double(), expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item())


def test_kink_tolerance_is_exact():
    """The convention decides kinks on integers; the named tolerance is zero and the axis matrix puts
    half of the slope on each side of a kink (here every point of L=8 -> S=4, incl. both borders)."""
    assert fast.KINK_TOLERANCE == 0
    A, _, D = fast.axis_matrices(8, 4, torch.float64, torch.device("cpu"))
    assert torch.equal(A, torch.eye(8, dtype=torch.float64))
    f = torch.tensor([-(k + 0.5) * 8 / (2 * 16) for k in range(8)], dtype=torch.float64)
    expected = torch.zeros(8, 8, dtype=torch.float64)
    for k in range(8):
        expected[k, min(k + 1, 7)] += f[k] / 2
        expected[k, max(k - 1, 0)] -= f[k] / 2
    assert torch.equal(D, expected)
