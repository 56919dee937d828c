"""ShapeAdaptor2d, its initialisation, memory bound and training method, against closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poolarch.layers import (
    LearnableResize,
    ShapeAdaptor2d,
    apply_memory_bound,
    init_shape_adaptors,
    make_pool,
    shape_adaptor2d,
)
from poolarch.methods import create_method

D = torch.float64


def s_of(alpha: float, r1: float = 0.5, r2: float = 1.0) -> float:
    return r1 + (r2 - r1) / (1 + math.exp(-alpha))


def test_sigmoid_one_is_identity_branch_and_zero_is_pooled_branch():
    x = torch.randn(2, 3, 12, 10, dtype=D)
    torch.testing.assert_close(shape_adaptor2d(x, torch.tensor(40.0, dtype=D)), x)
    torch.testing.assert_close(shape_adaptor2d(x, torch.tensor(-40.0, dtype=D)), F.max_pool2d(x, 2))
    x3 = torch.randn(1, 2, 12, 9, dtype=D)  # ratio 1/3 branch: 3x3 max-pooling
    torch.testing.assert_close(shape_adaptor2d(x3, torch.tensor(-40.0, dtype=D), r1=1 / 3), F.max_pool2d(x3, 3))


@pytest.mark.parametrize("alpha", [-2.0, -0.3, 0.0, 0.8, 2.5])
def test_output_size_follows_s_alpha_and_mixture(alpha):
    x = torch.randn(1, 2, 20, 14, dtype=D)
    y = shape_adaptor2d(x, torch.tensor(alpha, dtype=D))
    s = s_of(alpha)
    size = (math.floor(20 * s + 0.5), math.floor(14 * s + 0.5))
    assert y.shape[2:] == size
    sig = 1 / (1 + math.exp(-alpha))
    expected = (1 - sig) * F.interpolate(F.max_pool2d(x, 2), size=size, mode="bilinear") + sig * F.interpolate(
        x, size=size, mode="bilinear"
    )
    torch.testing.assert_close(y, expected)


def test_gradcheck_alpha_and_input():
    x = torch.randn(1, 2, 10, 8, dtype=D, requires_grad=True)
    a = torch.tensor([0.4], dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, v: shape_adaptor2d(u, v), (x, a))
    assert torch.autograd.gradcheck(lambda u, v: shape_adaptor2d(u, v, penalty=0.9, align_corners=True), (x, a))


def test_module_interface_static_and_surrogate():
    layer = ShapeAdaptor2d(init_ratio=0.7)
    assert isinstance(layer, LearnableResize)
    torch.testing.assert_close(layer.scale, torch.tensor([0.7, 0.7]))
    x = torch.randn(2, 3, 20, 16)
    y = layer(x)
    assert y.shape[2:] == layer.output_size((20, 16)) == (14, 11)
    assert layer.last_size_surrogate.tolist() == [14.0, 11.0]
    layer.last_size_surrogate.sum().backward()
    sig = 0.4  # sigmoid(alpha) at s = 0.7
    torch.testing.assert_close(layer.alpha.grad, torch.tensor([(20 + 16) * 0.5 * sig * (1 - sig)]))
    static = layer.to_static()
    assert not list(static.parameters())
    torch.testing.assert_close(static(x), y)
    assert layer.arch_parameters() == [layer.alpha]
    assert "ratio=0.700" in repr(layer)


def test_factory_and_sharing():
    pool = make_pool("shape_adaptor", 2)
    assert isinstance(pool, ShapeAdaptor2d) and (pool.r1, pool.r2) == (0.5, 1.0)
    assert pool(torch.randn(1, 1, 32, 32)).shape[2:] == (16, 16)  # starts like MaxPool2d(2)
    shortcut = make_pool("shape_adaptor", 2, share_with=pool)
    assert shortcut.alpha is pool.alpha
    wide = make_pool("shape_adaptor", 2, init_scale=0.8)
    torch.testing.assert_close(wide.ratio, torch.tensor(0.8))
    with pytest.raises(ValueError, match="square"):
        make_pool("shape_adaptor", 2, init_scale=(0.6, 0.8))


def test_bad_inputs():
    with pytest.raises(ValueError, match="r1"):
        ShapeAdaptor2d(r1=0.4)
    with pytest.raises(ValueError, match="r1 must be smaller"):
        ShapeAdaptor2d(r1=1.0, r2=0.5)
    with pytest.raises(ValueError, match="init_ratio"):
        ShapeAdaptor2d(init_ratio=0.3)
    with pytest.raises(ValueError, match="4 dimensions"):
        ShapeAdaptor2d()(torch.randn(2, 8, 8))
    with pytest.raises(ValueError, match="penalty"):
        shape_adaptor2d(torch.randn(1, 1, 8, 8), torch.tensor(0.0), penalty=1.5)
    with pytest.raises(TypeError, match="alpha"):
        shape_adaptor2d(torch.randn(1, 1, 8, 8), torch.zeros(2))


def chain(n: int) -> nn.Sequential:
    return nn.Sequential(*[ShapeAdaptor2d() for _ in range(n)])


def test_automatic_initialisation_meets_target():
    model = chain(3)
    ratio = init_shape_adaptors(model, 64, 16)
    assert ratio == pytest.approx(0.25 ** (1 / 3))
    product = math.prod(float(m.ratio.detach()) for m in model)
    assert 64 * product == pytest.approx(16, rel=1e-6)
    # unreachable target: clipped to the boundary (r1 plus the margin)
    init_shape_adaptors(model, 64, 2)
    assert all(float(m.ratio.detach()) == pytest.approx(0.5 + 0.5 * 0.02) for m in model)


def test_memory_bound_caps_final_size():
    model = chain(2)
    init_shape_adaptors(model, 32, 24)  # final continuous size 24
    assert apply_memory_bound(model, 32, 30) == 1.0
    p = apply_memory_bound(model, 32, 12)
    assert p == pytest.approx((12 / 24) ** 0.5)
    assert 32 * math.prod(float(m.ratio.detach()) for m in model) == pytest.approx(12, rel=1e-6)
    # the mixing weight is the one of the penalised ratio: (p s - r1) / (r2 - r1)
    layer = model[0]
    x = torch.randn(1, 1, 32, 32, dtype=D)
    s = float(layer.ratio.detach())
    size = (math.floor(32 * s + 0.5),) * 2
    w = (s - 0.5) / 0.5
    expected = (1 - w) * F.interpolate(F.max_pool2d(x, 2), size=size, mode="bilinear") + w * F.interpolate(
        x, size=size, mode="bilinear"
    )
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)  # alpha is float32
    apply_memory_bound(model, 32, None)
    assert all(m.penalty == 1.0 for m in model)


def test_method_updates_alpha_every_k_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), ShapeAdaptor2d(0.75), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    method = create_method("shape_adaptor", lr=0.1, scale_lr=0.5, update_every=3, target_size=6)
    x = torch.randn(4, 1, 8, 8)
    method.setup(model, x)
    assert float(model[1].ratio.detach()) == pytest.approx(0.75)  # 8 * s = 6
    opt = torch.optim.SGD(method.param_groups(model), lr=0.1, momentum=0.9)
    changed = []
    for step in range(7):
        before = model[1].alpha.detach().clone()
        out = method.forward(model, x)
        loss = (out - 1).pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        changed.append(bool((model[1].alpha.detach() != before).any()))
    assert changed == [True, False, False, True, False, False, True]
    assert method.state_dict()["step"] == 7
    assert set(method.epoch_end(model, 0)) == {"sa_ratio_0"}


def test_count_macs_charges_two_bilinear_resizes():
    from poolarch.complexity import count_macs

    layer = ShapeAdaptor2d(0.75)
    # 8x8 -> 6x6, 2 channels: 4 taps per output element for each of the 2 resized branches
    assert count_macs(nn.Sequential(layer), (1, 2, 8, 8)).total == 8 * 2 * 36
    layer(torch.randn(1, 2, 8, 8))
    assert count_macs(nn.Sequential(layer.to_static()), (1, 2, 8, 8)).total == 8 * 2 * 36
