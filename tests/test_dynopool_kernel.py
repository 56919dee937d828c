"""The fused DynOPool CPU kernel: the scale gradient at kinks (issue 13.4) and the 16-bit dtypes.

Kink convention (see :mod:`poolarch.layers.dynopool`): where a lattice point lies exactly on an input
pixel centre -- including the border points ``u = 0`` and ``u = L - 1`` -- the scale gradient uses
the mean of the two one-sided derivatives, i.e. the gradient averaged over an infinitesimal jitter of
the scale. The reference here is an independent float64 model of the layer in which the output size
is held at its rounded value and only the lattice positions move with the continuous size
``L / alpha`` (what the straight-through estimator differentiates), differentiated by central finite
differences.
"""
from __future__ import annotations

import importlib
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from poolarch.layers import DynOPool2d
from _dynopool_reference import interpolation_matrix, output_size_cases

ext = importlib.import_module("poolarch.layers._dynopool_ext")
dyn = importlib.import_module("poolarch.layers.dynopool")
op_module = importlib.import_module("poolarch.layers._dynopool_op")

pytestmark = pytest.mark.skipif(
    os.environ.get("POOLARCH_DISABLE_EXT", "") == "1", reason="POOLARCH_DISABLE_EXT=1 is set for this run"
)


@pytest.fixture(autouse=True)
def _kernel(monkeypatch):
    monkeypatch.delenv("POOLARCH_DISABLE_EXT", raising=False)
    assert ext.extension_available(), "the fused DynOPool kernel failed to build"


# ----------------------------------------------------------------------------------------------
# Independent float64 model
# ----------------------------------------------------------------------------------------------
def model_loss(x: torch.Tensor, weight: torch.Tensor, sizes: tuple[int, int], s: tuple[float, float],
               aggregation: str) -> float:
    """sum(weight * layer(x)) with the integer output ``sizes`` and the lattice placed for the
    continuous sizes ``s``."""
    A_h = interpolation_matrix(x.shape[2], sizes[0], s[0])
    A_w = interpolation_matrix(x.shape[3], sizes[1], s[1])
    z = torch.einsum("kh,nchw,lw->nckl", A_h, x.double(), A_w)
    out = F.max_pool2d(z, 2) if aggregation == "max" else F.avg_pool2d(z, 2)
    return float((out * weight).sum())


def fd_alpha_grad(x, weight, alpha: torch.Tensor, aggregation: str, step: float = 1e-6) -> torch.Tensor:
    """Central finite difference (step on the continuous size) times d size / d alpha = -L / alpha^2."""
    in_size = x.shape[2:]
    cont = [n / a for n, a in zip(in_size, alpha.double().tolist())]
    sizes = tuple(int(math.floor(max(c, 1.5) + 0.5)) for c in cont)
    grads = []
    for d in range(2):
        plus, minus = [float(v) for v in sizes], [float(v) for v in sizes]
        plus[d] += step
        minus[d] -= step
        d_loss_d_s = (model_loss(x, weight, sizes, plus, aggregation)
                      - model_loss(x, weight, sizes, minus, aggregation)) / (2 * step)
        d_s_d_alpha = -in_size[d] / float(alpha[d]) ** 2 if cont[d] > 1.5 else 0.0
        grads.append(d_loss_d_s * d_s_d_alpha)
    return torch.tensor(grads, dtype=torch.float64)


def kink_count(in_len: int, out_len: int) -> int:
    """Lattice points exactly on a pixel centre: u_k = ((2k+1) L - 2S) / (4S) an integer >= 0."""
    return sum(1 for k in range(2 * out_len)
               if (2 * k + 1) * in_len - 2 * out_len >= 0 and ((2 * k + 1) * in_len - 2 * out_len) % (4 * out_len) == 0)


def has_clamped_tie(in_len: int, out_len: int) -> bool:
    """A cell whose two points along this axis read the same border pixel: one clamped, the other
    exactly on the border pixel (upsampling only). Max aggregation breaks that exact tie like
    ``max_pool2d`` (first point wins), which the jitter average does not follow: documented exception."""
    n = [(2 * k + 1) * in_len - 2 * out_len for k in range(2 * out_len)]
    last = 4 * out_len * (in_len - 1)
    on_border = [v == 0 or v == last for v in n]
    clamped = [v < 0 or v > last for v in n]
    return any((on_border[2 * c] and clamped[2 * c + 1]) or (clamped[2 * c] and on_border[2 * c + 1])
               for c in range(out_len))


def layer_alpha_grad(x: torch.Tensor, alpha: torch.Tensor, aggregation: str, weight: torch.Tensor):
    pool = DynOPool2d(aggregation=aggregation).to(alpha.dtype)
    with torch.no_grad():
        pool.alpha.copy_(alpha)
    y = pool(x)
    assert op_module.ran_fused_kernel(y)
    assert tuple(y.shape) == tuple(weight.shape)
    (y.double() * weight).sum().backward()
    return pool.alpha.grad.double(), pool.last_size_surrogate


def _case(shape, alpha, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g).to(dtype)
    alpha = torch.tensor(alpha, dtype=torch.float64)
    sizes = [int(math.floor(max(n / a, 1.5) + 0.5)) for n, a in zip(shape[2:], alpha.tolist())]
    weight = torch.randn(shape[0], shape[1], *sizes, dtype=torch.float64, generator=g)
    return x, alpha, weight


def _random_kink_cases(count: int, seed: int = 2024):
    """Random shapes and scales with at least one lattice point on a pixel centre."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        h, w = (int(v) for v in rng.integers(3, 24, size=2))
        sizes = [int(v) for v in rng.integers(2, 2 * max(h, w) // 1, size=2)]
        sizes = [min(max(s, 2), int(1.7 * n) + 1) for s, n in zip(sizes, (h, w))]
        if kink_count(h, sizes[0]) + kink_count(w, sizes[1]) == 0:
            continue
        # an alpha whose continuous size is inside the rounding interval of the wanted size
        alpha = [n / (s + float(rng.uniform(-0.45, 0.45))) for n, s in zip((h, w), sizes)]
        cases.append(((1, 2, h, w), alpha))
    return cases


KINK_CASES = (
    [pytest.param((2, 3, n, n), (2.0, 2.0), id=f"half-{n}") for n in (8, 16, 32, 64)]
    + [
        pytest.param((2, 2, 16, 12), (4.0, 3.0), id="quarter-third"),
        pytest.param((1, 3, 12, 10), (1.0, 1.0), id="identity-size"),
        pytest.param((1, 2, 6, 8), (0.5, 0.25), id="upsample-2x-4x"),
        pytest.param((1, 2, 10, 13), (1 / 0.7, 1 / 0.45), id="aniso-10x13"),
        pytest.param((1, 1, 18, 9), (1 / 0.8441, 1 / 0.7843), id="issue-18x9"),
        pytest.param((2, 3, 6, 7), (1 / 1.2, 1 / 1.2), id="up-6x7"),
        pytest.param((1, 2, 16, 10), (2.0, 1 / 0.6), id="half-and-general"),
    ]
    + [pytest.param(shape, alpha, id=f"random-{i}") for i, (shape, alpha) in enumerate(_random_kink_cases(12))]
)


@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("shape,alpha", KINK_CASES)
def test_alpha_gradient_at_kinks_is_central_difference(shape, alpha, aggregation):
    x, alpha, weight = _case(shape, alpha)
    sizes = weight.shape[2:]
    if aggregation == "max" and any(has_clamped_tie(n, s) for n, s in zip(shape[2:], sizes)):
        pytest.skip("exact max tie between a clamped and a border point (documented exception)")
    grad, _ = layer_alpha_grad(x, alpha, aggregation, weight)
    expected = fd_alpha_grad(x, weight, alpha, aggregation)
    torch.testing.assert_close(grad, expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item() + 1e-9)


@pytest.mark.parametrize("shape,alpha", [pytest.param(*c.values, id=c.id) for c in KINK_CASES[:4] + KINK_CASES[7:10]])
def test_alpha_gradient_at_kinks_float32(shape, alpha):
    """Float32 input and alpha: the kink decision does not depend on float32 coordinate rounding."""
    x, alpha, weight = _case(shape, alpha)
    grad, _ = layer_alpha_grad(x.float(), alpha.float(), "max", weight.float())
    expected = fd_alpha_grad(x.float().double(), weight.float().double(), alpha.float().double(), "max")
    torch.testing.assert_close(grad, expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item() + 1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,alpha", [pytest.param(*c.values, id=c.id) for c in KINK_CASES[:1] + KINK_CASES[7:10]])
def test_ulp_perturbed_alpha_gives_the_same_gradient(shape, alpha, dtype):
    x, alpha, weight = _case(shape, alpha)
    x, alpha = x.to(dtype), alpha.to(dtype)
    grads, size_grads = [], []
    for ulps in (-3, -1, 0, 1, 3):
        a = alpha.clone()
        for _ in range(abs(ulps)):
            a = torch.nextafter(a, torch.full_like(a, math.inf if ulps > 0 else 0.0))
        grad, surrogate = layer_alpha_grad(x, a, "max", weight.to(dtype))
        grads.append(grad)
        in_t = torch.tensor(shape[2:], dtype=torch.float64)
        size_grads.append(grad / (-in_t / a.double() ** 2))  # d loss / d size
    for g, s in zip(grads[1:], size_grads[1:]):
        torch.testing.assert_close(g, grads[0], rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
        torch.testing.assert_close(s, size_grads[0], rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=0)


def test_random_cases_have_kinks_and_one_sided_derivatives_differ():
    """The kink cases are not vacuous: the two one-sided differences of the model differ there."""
    shape, alpha = KINK_CASES[8].values  # the (1, 1, 18, 9) example
    x, alpha, weight = _case(shape, alpha)
    sizes = (15, 7)
    assert kink_count(18, 15) + kink_count(9, 7) > 0
    base = model_loss(x, weight, sizes, (15.0, 7.0), "max")
    step = 1e-6
    right = (model_loss(x, weight, sizes, (15.0 + step, 7.0), "max") - base) / step
    left = (base - model_loss(x, weight, sizes, (15.0 - step, 7.0), "max")) / step
    assert abs(right - left) > 1e-2 * max(abs(right), abs(left))


# ----------------------------------------------------------------------------------------------
# bfloat16 / float16
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("aggregation", ["max", "avg"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("scale,hw", [((0.5, 0.5), (8, 10)), ((0.66, 0.44), (9, 11)), ((1.2, 1.3), (6, 7))])
def test_half_precision_matches_float32_kernel(dtype, aggregation, channels_last, scale, hw):
    """16-bit input: the kernel computes in float32 on the rounded input, so the output equals the
    float32 kernel's rounded to the 16-bit type (up to ties in the max), the input gradient is the
    float32 one rounded, and the size gradient agrees to float32 accuracy."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, *hw).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 5, *(math.floor(max(n * r, 1.5) + 0.5) for n, r in zip(hw, scale))).to(dtype)
    s16 = torch.tensor([float(v) for v in g.shape[2:]], requires_grad=True)
    s32 = s16.detach().clone().requires_grad_(True)
    x16 = x.detach().clone().requires_grad_(True)
    x32 = x.float().detach().clone().requires_grad_(True)
    y16 = dyn._dispatch(x16, s16, tuple(g.shape[2:]), aggregation)  # the layers' path: the custom op
    y32 = dyn._dispatch(x32, s32, tuple(g.shape[2:]), aggregation)
    assert y16.dtype == dtype and op_module.ran_fused_kernel(y16)
    assert y16.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    y16.backward(g)
    y32.backward(g.float())
    assert x16.grad.dtype == dtype and s16.grad.dtype == torch.float32
    torch.testing.assert_close(y16, y32.to(dtype), atol=0, rtol=0)
    torch.testing.assert_close(x16.grad, x32.grad.to(dtype), atol=0, rtol=0)
    torch.testing.assert_close(s16.grad, s32.grad, rtol=1e-5, atol=1e-5 * s32.grad.abs().max().item())


def test_bfloat16_layer_gradient_reaches_alpha():
    """``--amp`` on CPU feeds DynOPool bf16 activations while alpha stays float32: the kernel runs and
    alpha's gradient (float32) equals the float32 layer's on the same (rounded) input."""
    torch.manual_seed(1)
    x = torch.randn(4, 8, 16, 16).bfloat16()
    pools = [DynOPool2d((0.66, 0.44)) for _ in range(2)]
    ys = [pools[0](x), pools[1](x.float())]
    assert ys[0].dtype == torch.bfloat16 and op_module.ran_fused_kernel(ys[0])
    w = torch.randn(ys[1].shape).bfloat16()
    for pool, y in zip(pools, ys):
        (y.float() * w.float()).sum().backward()
    assert pools[0].alpha.grad.dtype == torch.float32
    torch.testing.assert_close(pools[0].alpha.grad, pools[1].alpha.grad, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# The eager C++ autograd node against the custom op
# ----------------------------------------------------------------------------------------------
def _layer_run(x, scale, aggregation, x_grad, alpha_dtype, eager_node, monkeypatch, node="DynOPoolFunction"):
    """(out, x.grad, alpha.grad) of one forward + backward of a DynOPool2d on ``x``; ``eager_node=False``
    forces the custom op ``poolarch::dynopool2d`` and its Python autograd. ``node``: the eager path's
    autograd node (the kernel's C++ node, or ``_TorchPathFunction`` on the PyTorch path)."""
    with monkeypatch.context() as m:
        if not eager_node:
            m.setattr(op_module, "forward_eager", lambda *args: None)
            m.setattr(op_module, "layer_forward_eager", lambda *args: None)
        layer = DynOPool2d(scale, aggregation=aggregation).to(alpha_dtype)
        xi = x.clone().requires_grad_(x_grad)
        y = layer(xi)
        assert op_module.ran_fused_kernel(y) == (node == "DynOPoolFunction")
        assert (node in y.grad_fn.name()) == eager_node
        weight = torch.linspace(-1.0, 2.0, y.numel(), dtype=torch.float64).reshape(y.shape).to(y.dtype)
        (y * weight).sum().backward()
        return y.detach(), (xi.grad if x_grad else None), layer.alpha.grad


@pytest.mark.parametrize(
    "shape, scale, aggregation, dtype, channels_last, x_grad, alpha_dtype",
    [
        ((2, 3, 16, 16), 0.5, "max", torch.float32, False, True, torch.float32),
        ((2, 5, 17, 12), (0.61, 0.37), "max", torch.float32, True, True, torch.float32),
        ((1, 4, 9, 11), (1.3, 0.8), "avg", torch.float64, False, True, torch.float64),
        ((2, 3, 10, 14), (0.45, 0.7), "max", torch.bfloat16, True, False, torch.float32),
        ((2, 3, 10, 14), (0.45, 0.7), "max", torch.float32, False, True, torch.float64),
    ],
)
def test_eager_node_matches_custom_op_bit_for_bit(shape, scale, aggregation, dtype, channels_last, x_grad, alpha_dtype, monkeypatch):
    """The eager C++ autograd node (``forward_eager``) gives the output, input gradient and alpha
    gradient of the custom op with its Python autograd, bit for bit, in every dtype and layout."""
    monkeypatch.delenv("POOLARCH_DISABLE_EXT", raising=False)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    eager = _layer_run(x, scale, aggregation, x_grad, alpha_dtype, True, monkeypatch)
    custom = _layer_run(x, scale, aggregation, x_grad, alpha_dtype, False, monkeypatch)
    for a, b in zip(eager, custom):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b), (a, b)
    assert eager[2].abs().sum() > 0


@pytest.mark.parametrize("alpha_dtype, create_graph", [(torch.float32, False), (torch.float64, False), (torch.float32, True)])
def test_layer_forward_matches_the_python_steps_bit_for_bit(alpha_dtype, create_graph, monkeypatch):
    """The one-call eager layer (``layer_forward``: sizes, the surrogate's node and the kernel's node in
    C++) equals the Python steps it replaces -- the tensor formula of ``dynopool_output_size`` (what
    torch.compile traces), then ``forward_eager`` -- bit for bit: sizes, output, surrogate, and the
    gradients of x and alpha through both (also with ``create_graph``), at rounding boundaries (size
    exactly k + 1/2) and where min_size binds (also exactly at it: clamp's gradient is 0 there)."""
    gen = torch.Generator().manual_seed(1)
    cases = [(length, alpha, [1.5, 1.3, 0.7][kind], kind % 2)
             for length, alpha, kind in output_size_cases(gen, 120, 64, 80, (-1.5, 2.0))]
    cases.append(((16, 19), [16 / 1.5, 19 / 64.5], 1.5, 0))  # 16 / alpha == 1.5 (the bound), 19 / alpha == 64.5
    binding = 0
    for length, alpha, min_size, mode in cases:
        x = torch.randn((2, 3, *length), generator=gen, dtype=torch.float64).float()
        results = []
        for one_call in (True, False):
            a = torch.tensor(alpha, dtype=alpha_dtype, requires_grad=True)
            xi = x.clone().requires_grad_(True)
            if one_call:
                out, surrogate = op_module.layer_forward_eager(xi, a, min_size, mode)
                sizes = tuple(out.shape[2:])
            else:
                with monkeypatch.context() as m:
                    m.setattr(dyn, "_output_size_eager", lambda *args: None)
                    surrogate, sizes = dyn.dynopool_output_size(length, a, min_size)
                out = op_module.forward_eager(xi, surrogate, sizes[0], sizes[1], mode)
            weight = torch.linspace(-1.0, 2.0, out.numel(), dtype=torch.float64).reshape(out.shape).float()
            loss = (out * weight).sum() + (surrogate * torch.tensor([0.3, -1.7], dtype=alpha_dtype)).sum()
            grads = torch.autograd.grad(loss, (xi, a), create_graph=create_graph)
            assert grads[1].requires_grad == create_graph
            results.append((sizes, out.detach(), surrogate.detach(), *(t.detach() for t in grads)))
        for u, v in zip(*results):
            assert u == v if isinstance(u, tuple) else (u.dtype == v.dtype and torch.equal(u, v)), (length, alpha)
        binding += any(n / a <= min_size for n, a in zip(length, alpha))
    assert binding > 10  # the clamp branch ran


@pytest.mark.parametrize(
    "alpha", [[0.0, 2.0], [2.0, -1.0], [float("nan"), 2.0], [2.0, float("inf")], [1e-30, 2.0], [2.0, 2.0, 2.0]]
)
def test_layer_forward_declines_what_the_python_steps_decide(alpha):
    """Alpha not positive and finite, a size beyond the int range, not two values: the one-call layer
    returns None (the Python steps then raise their error), and a layer with such an alpha raises it."""
    x = torch.randn(1, 2, 8, 8)
    assert op_module.layer_forward_eager(x, torch.tensor(alpha), 1.5, 0) is None
    if len(alpha) == 2 and not alpha[0] == 1e-30:
        layer = DynOPool2d()
        with torch.no_grad():
            layer.alpha.copy_(torch.tensor(alpha))
        with pytest.raises(ValueError, match="alpha must be positive and finite"):
            layer(x)


@pytest.mark.parametrize(
    "shape, scale, aggregation, dtype, channels_last",
    [
        ((2, 3, 16, 16), 0.5, "max", torch.float32, False),
        ((2, 5, 17, 12), (0.61, 0.37), "max", torch.float32, True),
        ((2, 3, 24, 20), (0.61, 0.37), "max", torch.float64, False),  # NCHW, the max via channels_last
        ((1, 4, 9, 11), (1.3, 0.8), "avg", torch.float64, False),
        ((2, 3, 10, 14), (0.45, 0.7), "max", torch.bfloat16, True),
    ],
)
def test_eager_torch_path_matches_custom_op_bit_for_bit(shape, scale, aggregation, dtype, channels_last, monkeypatch):
    """The PyTorch path in eager mode (one Python autograd function, ``forward_eager``) gives the output,
    input gradient and alpha gradient of the custom op with its registered autograd, bit for bit."""
    monkeypatch.setenv("POOLARCH_DISABLE_EXT", "1")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    runs = [_layer_run(x, scale, aggregation, True, torch.float32, eager, monkeypatch, node="_TorchPathFunction")
            for eager in (True, False)]
    for a, b in zip(*runs):
        assert a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b), (a, b)
    assert runs[0][2].abs().sum() > 0


@pytest.mark.parametrize("path, node", [("kernel", "DynOPoolFunction"), ("torch", "_TorchPathFunction")])
def test_eager_first_order_with_create_graph_and_no_double_backward(path, node, monkeypatch):
    """On both eager paths (the kernel's C++ node, the PyTorch path's Python function):
    ``create_graph=True`` gives the same first-order gradients as without it, and a second backward
    through the layer raises (as on the custom op's own path) instead of silently treating the
    first-order gradient as a constant or differentiating the backward formula."""
    if path == "torch":
        monkeypatch.setenv("POOLARCH_DISABLE_EXT", "1")
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    layer = DynOPool2d((0.6, 0.45))
    y = layer(x)
    assert node in y.grad_fn.name()
    gx, ga = torch.autograd.grad(y.pow(2).sum(), (x, layer.alpha), create_graph=True)
    gx0, ga0 = torch.autograd.grad(layer(x).pow(2).sum(), (x, layer.alpha))
    assert torch.equal(gx.detach(), gx0) and torch.equal(ga.detach(), ga0)
    assert gx.requires_grad
    with pytest.raises(RuntimeError, match="no autograd formula"):
        gx.sum().backward()
