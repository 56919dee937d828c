"""DiffStride2d against closed forms and an independent direct-sum reference (float64)."""
import math

import pytest
import torch

from poolarch.layers import DiffStride2d, LearnableResize, make_pool
from poolarch.layers.diffstride import (
    clamp_stride,
    diffstride2d,
    diffstride_macs,
    diffstride_output_size,
    min_stride,
)

D = torch.float64


def reference(x: torch.Tensor, stride, smoothness: float, out_size, clamp: bool = True) -> torch.Tensor:
    """The masked band-limited signal sampled on the output grid, as an explicit sum over the
    symmetric frequency set of each axis (an even axis' Nyquist bin counted as +-H/2 with half
    weight), with explicit DFT matrices: no FFT, no folding, no cropping. ``clamp``: the authors'
    stride clamp ``S >= H / (H - R)``."""

    def axis(n: int, s: float, out: int) -> torch.Tensor:  # (out, n) real operator along one axis
        if clamp and n > smoothness:
            s = max(s, n / (n - smoothness))
        k = torch.arange(-(n // 2), n // 2 + 1, dtype=D)
        weight = torch.where((k.abs() == n / 2), 0.5, 1.0).to(D)
        mask = ((smoothness + n / (2 * s) - k.abs()) / smoothness).clamp(0, 1) * weight
        forward = torch.exp(-2j * math.pi * torch.outer(k, torch.arange(n, dtype=D)) / n) / n  # (K, n)
        inverse = torch.exp(2j * math.pi * torch.outer(torch.arange(out, dtype=D), k) / out)  # (out, K)
        return inverse @ torch.diag(mask.to(torch.complex128)) @ forward

    oh = axis(x.shape[-2], float(stride[0]), out_size[0])
    ow = axis(x.shape[-1], float(stride[1]), out_size[1])
    return (oh @ x.to(torch.complex128) @ ow.T).real


IMPLS = ["dense", "fft"]


@pytest.mark.parametrize("impl", IMPLS)
def test_stride_one_is_identity(impl):
    x = torch.randn(2, 3, 12, 9, dtype=D)
    one = torch.ones(2, dtype=D)
    torch.testing.assert_close(diffstride2d(x, one, impl=impl, clamp_stride=False), x)
    torch.testing.assert_close(diffstride2d(x, one, crop="support", impl=impl, clamp_stride=False), x)
    layer = DiffStride2d(1.0, impl=impl, clamp_stride=False)  # S = 1 + 1e-4: the Nyquist bins get mask 1 - 1.5e-4
    torch.testing.assert_close(layer(x.float()), x.float(), rtol=0, atol=2e-3)


@pytest.mark.parametrize("size", [(32, 32), (17, 10), (8, 6)])
def test_stride_two_halves(size):
    layer = DiffStride2d(2.0)
    y = layer(torch.randn(1, 2, *size))
    # the clamp raises S = 2 to H / (H - 4) = 3 for H = 6
    assert y.shape[2:] == tuple(max(math.floor(s / max(2, s / (s - 4)) + 0.5), 2) for s in size)
    assert layer.last_out_size == tuple(y.shape[2:])
    assert layer.last_size_surrogate.tolist() == list(layer.last_out_size)


def authors_support_size(height: int, width: int, stride, smoothness: float = 4.0) -> tuple[int, int]:
    """The output size of the authors' LearnableSpectralPooling (google-research/diffstride,
    pooling.py), from their published layout: rows of the full-spectrum axis get the positions
    ``[H/2-1, ..., 0, 0, ..., H/2-1]`` (even H), columns of the rfft half spectrum ``0..W/2`` with the
    threshold ``W/(2S) + 1``; kept where ``(R + threshold - pos) / R > 0``; irfft2d then returns
    ``2 (n - 1)`` columns for ``n`` kept half-spectrum columns. Strides clamped to H/(H-R) first."""
    s_h = max(float(stride[0]), height / (height - smoothness))
    s_w = max(float(stride[1]), width / (width - smoothness))
    half = torch.arange(height // 2 + height % 2, dtype=D)
    rows = torch.cat([half[height % 2:].flip(0), half])
    cols = torch.arange(width // 2 + 1, dtype=D)
    kept_rows = int(((smoothness + max(height / s_h, 2.0) / 2 - rows) > 0).sum())
    kept_cols = int(((smoothness + max(width / s_w, 2.0) / 2 + 1 - cols) > 0).sum())
    return kept_rows, 2 * (kept_cols - 1)


@pytest.mark.parametrize("size,stride,expected", [
    ((32, 32), (2.0, 2.0), (24, 24)),  # 2 ceil(T + R) = 2 ceil(8 + 4)
    ((64, 64), (2.0, 4.0), (40, 24)),  # the authors' own test (tests/pooling_test.py)
    ((16, 16), (1.2, 3.0), (16, 14)),  # S_h clamped to 4/3: 2 ceil(6 + 4) = 20, capped at 16
    ((24, 40), (2.7, 1.3), (18, 40)),
])
def test_support_crop_gives_the_authors_sizes(size, stride, expected):
    y = diffstride2d(torch.randn(1, 1, *size), torch.tensor(stride), 4.0, crop="support")
    assert y.shape[2:] == expected == authors_support_size(*size, stride)


def test_support_sizes_match_the_authors_layout_on_even_maps():
    for h in (8, 12, 16, 32, 56):
        for w in (8, 14, 32):
            for sh, sw in ((1.0, 1.0), (1.5, 2.2), (2.0, 2.0), (3.3, 4.0), (5.0, 1.7)):
                size = diffstride_output_size((h, w), torch.tensor([sh, sw]), 4.0, "support")[1]
                assert size == authors_support_size(h, w, (sh, sw)), (h, w, sh, sw)


def test_stride_clamp_per_axis_in_the_forward_pass():
    assert min_stride(16, 4.0) == pytest.approx(4 / 3) and min_stride(3, 4.0) == 1.0
    x = torch.randn(1, 2, 16, 40, dtype=D)
    s = torch.tensor([1.2, 1.2], dtype=D, requires_grad=True)
    # H = 16: 1.2 -> 16/12 = 1.333; W = 40: 40/36 = 1.111 < 1.2 stays
    torch.testing.assert_close(clamp_stride(s, (16, 40), 4.0), torch.tensor([4 / 3, 1.2], dtype=D))
    y = diffstride2d(x, s, 4.0)
    clamped = torch.tensor([4 / 3, 1.2], dtype=D, requires_grad=True)
    expected = diffstride2d(x, clamped, 4.0, clamp_stride=False)
    assert y.shape[2:] == (12, 33)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(y, reference(x, (1.2, 1.2), 4.0, (12, 33)))
    # straight-through: the gradient is the one at the clamped value, passed to the raw stride
    w = torch.randn_like(y)
    (g,) = torch.autograd.grad((y * w).sum(), s)
    (g_ref,) = torch.autograd.grad((expected * w).sum(), clamped)
    torch.testing.assert_close(g, g_ref)
    assert float(g[0]) != 0
    layer = DiffStride2d((1.2, 1.2))
    layer(x.float())
    assert layer.last_stride == pytest.approx((4 / 3, 1.2)) and float(layer.stride[0]) == pytest.approx(1.2)
    assert layer.output_size((16, 40)) == (12, 33)
    assert DiffStride2d((1.2, 1.2), clamp_stride=False).output_size((16, 40)) == (13, 33)


@pytest.mark.parametrize("impl", IMPLS)
def test_band_limited_input_passes_unchanged(impl):
    H, W, S = 24, 20, (2.0, 2.5)
    Ho, Wo = 12, 8
    terms = [(0, 0, 0.7, 0.0), (1, 2, 1.0, 0.3), (-3, 1, 0.5, 1.1), (5, 3, 0.25, -0.4)]  # |k| < Ho/2, |l| < Wo/2

    def signal(h, w, nh, nw):
        return sum(a * torch.cos(2 * math.pi * (k * h / nh + l * w / nw) + p) for k, l, a, p in terms)

    h, w = torch.meshgrid(torch.arange(H, dtype=D), torch.arange(W, dtype=D), indexing="ij")
    x = signal(h, w, H, W)[None, None]
    y = diffstride2d(x, torch.tensor(S, dtype=D), 4.0, impl=impl)
    ho, wo = torch.meshgrid(torch.arange(Ho, dtype=D), torch.arange(Wo, dtype=D), indexing="ij")
    assert y.shape[2:] == (Ho, Wo)
    torch.testing.assert_close(y[0, 0], signal(ho, wo, Ho, Wo))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("crop", ["window", "support"])
@pytest.mark.parametrize("stride", [(2.0, 2.0), (2.3, 1.7), (3.4, 1.2), (1.1, 1.05)])
def test_matches_direct_sum_reference(crop, stride, impl):
    x = torch.randn(2, 2, 20, 15, dtype=D)
    for clamp in (True, False):
        y = diffstride2d(x, torch.tensor(stride, dtype=D), 4.0, crop, impl=impl, clamp_stride=clamp)
        torch.testing.assert_close(y, reference(x, stride, 4.0, y.shape[2:], clamp))
        if crop == "window" and not clamp:
            assert y.shape[2:] == tuple(max(math.floor(n / s + 0.5), 2) for n, s in zip((20, 15), stride))


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_input_and_stride(impl):
    x = torch.randn(1, 1, 9, 8, dtype=D, requires_grad=True)  # small: gradcheck is O(numel^2)
    s = torch.tensor([2.3, 1.6], dtype=D, requires_grad=True)
    # unclamped (the clamp's straight-through gradient is not a derivative: tested separately)
    assert torch.autograd.gradcheck(lambda a, b: diffstride2d(a, b, 4.0, impl=impl, clamp_stride=False), (x, s))


@pytest.mark.parametrize("impl", IMPLS)
def test_stride_gradient_matches_finite_difference_of_mask(impl):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16, dtype=D)
    weights = torch.randn(1, 1, 7, 7, dtype=D)
    s = torch.tensor([2.3, 2.2], dtype=D, requires_grad=True)
    loss = (diffstride2d(x, s, 4.0, impl=impl) * weights).sum()
    (grad,) = torch.autograd.grad(loss, s)
    assert grad.abs().min() > 0
    eps = 1e-6
    for d in range(2):
        plus, minus = s.detach().clone(), s.detach().clone()
        plus[d] += eps
        minus[d] -= eps
        fd = ((reference(x, plus, 4.0, (7, 7)) - reference(x, minus, 4.0, (7, 7))) * weights).sum() / (2 * eps)
        assert abs(float(grad[d]) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))


def test_strides_stay_at_least_one_after_push_below():
    layer = DiffStride2d((1.2, 3.0))
    opt = torch.optim.SGD(layer.parameters(), lr=100.0)
    y = layer(torch.randn(1, 1, 16, 16))
    (layer.last_size_surrogate.sum() * -1.0).backward()  # pushes the strides down hard
    assert layer.stride_raw.grad is not None
    opt.step()
    assert (layer.stride >= 1).all()
    assert y.shape[2:] == (12, 5)  # S_h = 1.2 clamped to 16 / 12


@pytest.mark.parametrize("impl", IMPLS)
def test_module_interface_and_static(impl):
    layer = DiffStride2d((2.5, 1.5), impl=impl)
    assert isinstance(layer, LearnableResize)
    torch.testing.assert_close(layer.scale, 1 / torch.tensor([2.5, 1.5]))
    torch.testing.assert_close(layer.stride, torch.tensor([2.5, 1.5]))
    x = torch.randn(2, 3, 20, 20)
    y = layer(x)
    assert layer.output_size((20, 20)) == tuple(y.shape[2:]) == (8, 13)
    static = layer.to_static()
    assert not list(static.parameters())
    torch.testing.assert_close(static(x), y)
    assert layer.arch_parameters() == [layer.stride_raw]
    assert f"stride=(2.500, 1.500), smoothness=4, crop=window, impl={impl}" in repr(layer)


def test_surrogate_gradient_is_continuous_size():
    layer = DiffStride2d((2.0, 4.0))
    layer(torch.randn(1, 1, 32, 32))
    layer.last_size_surrogate.sum().backward()
    s = layer.stride.detach()
    dsigma = torch.sigmoid(layer.stride_raw.detach())  # dS/drho for S = 1 + softplus(rho)
    torch.testing.assert_close(layer.stride_raw.grad, -32 / s**2 * dsigma)


def test_shared_stride_and_factory():
    main = make_pool("diffstride", 2)
    short = make_pool("diffstride", 2, share_with=main)
    assert short.stride_raw is main.stride_raw
    assert isinstance(make_pool("diffstride", 2, init_scale=0.25), DiffStride2d)
    torch.testing.assert_close(make_pool("diffstride", 2, init_scale=0.25).stride, torch.tensor([4.0, 4.0]))
    with pytest.raises(TypeError, match="share_stride_with"):
        DiffStride2d(share_stride_with=torch.nn.Identity())


def test_bad_inputs():
    with pytest.raises(ValueError, match="init_stride"):
        DiffStride2d(0.5)
    with pytest.raises(ValueError, match="smoothness"):
        DiffStride2d(2.0, smoothness=-1)
    with pytest.raises(ValueError, match="crop"):
        DiffStride2d(2.0, crop="middle")
    with pytest.raises(ValueError, match="impl"):
        DiffStride2d(2.0, impl="cuda")
    with pytest.raises(ValueError, match="4 dimensions"):
        DiffStride2d()(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="stride"):
        diffstride2d(torch.randn(1, 1, 8, 8), torch.tensor([0.5, 2.0]))
    with pytest.raises(TypeError, match="stride"):
        diffstride2d(torch.randn(1, 1, 8, 8), 2.0)


def test_output_size_function_and_macs_formula():
    surrogate, sizes = diffstride_output_size((30, 7), torch.tensor([3.0, 1.0]))
    assert sizes == (10, 3)  # S_w = 1 clamped to 7 / 3
    assert diffstride_output_size((30, 7), torch.tensor([3.0, 1.0]), clamp_stride=False)[1] == (10, 7)
    # one 8x8 map to 4x4 keeping 7x7 bins: FFTs 2.5*64*6 + 2.5*16*4, placement 2*(4*7*7 + 4*7*4)
    assert diffstride_macs((8, 8), (4, 4), (7, 7), 1, "fft") == round(960 + 160 + 2 * (196 + 112))
    # dense: (8 rows x 8 x 4) + (4 columns x 8 x 4), for 3 maps
    assert diffstride_macs((8, 8), (4, 4), (7, 7), 3, "dense") == 3 * (256 + 128)


@pytest.mark.parametrize("impl,expected", [("fft", 960 + 160 + 768), ("dense", 256 + 128)])
def test_count_macs_uses_the_formula(impl, expected):
    from poolarch.complexity import count_macs

    # 8x8 -> 4x4, all 8 bins kept per axis. fft: FFT 2.5*64*6 + inverse 2.5*16*4 + placement
    # 2*(4*8*8 + 4*8*4); dense: 8*8*4 + 4*8*4
    layer = DiffStride2d(2.0, impl=impl)
    model = torch.nn.Sequential(layer)
    assert count_macs(model, (1, 1, 8, 8)).total == expected
    model(torch.randn(1, 1, 8, 8))
    assert count_macs(torch.nn.Sequential(layer.to_static()), (1, 1, 8, 8)).total == expected
