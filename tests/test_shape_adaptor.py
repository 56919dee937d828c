"""ShapeAdaptor2d, its initialisation, memory bound and training method, against closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poolarch.layers import (
    LearnableResize,
    ResidualShapeAdaptor2d,
    ShapeAdaptor2d,
    chain_shape_adaptors,
    residual_shape_adaptor2d,
    apply_memory_bound,
    init_shape_adaptors,
    make_pool,
    shape_adaptor2d,
)
from poolarch.methods import create_method
from poolarch.models import create_model

from _shape_adaptor_reference import AuthorsState, assert_same_values_and_grads, authors_shape_adaptor

D = torch.float64


def s_of(alpha: float, r1: float = 0.5, r2: float = 1.0) -> float:
    return r1 + (r2 - r1) / (1 + math.exp(-alpha))


def test_sigmoid_one_is_identity_branch_and_zero_is_pooled_branch():
    x = torch.randn(2, 3, 12, 10, dtype=D)
    torch.testing.assert_close(shape_adaptor2d(x, torch.tensor(40.0, dtype=D)), x)
    torch.testing.assert_close(shape_adaptor2d(x, torch.tensor(-40.0, dtype=D)), F.max_pool2d(x, 2))
    x3 = torch.randn(1, 2, 12, 9, dtype=D)  # ratio 1/3 branch: 3x3 max-pooling
    torch.testing.assert_close(shape_adaptor2d(x3, torch.tensor(-40.0, dtype=D), r1=1 / 3), F.max_pool2d(x3, 3))


CLOSED_FORM_SIZE = {  # one layer, no carried size: the three size rules
    "local": lambda v: max(math.floor(v), 1),
    "global": lambda v: max(round(v), 1),  # Python's round: halves to even
    "nearest": lambda v: max(math.floor(v + 0.5), 1),
}


@pytest.mark.parametrize("rounding", ["local", "global", "nearest"])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("alpha", [-2.0, -0.3, 0.0, 0.8, 2.5])
def test_output_size_follows_s_alpha_and_mixture(alpha, align_corners, rounding):
    x = torch.randn(1, 2, 20, 14, dtype=D)
    y = shape_adaptor2d(x, torch.tensor(alpha, dtype=D), align_corners=align_corners, rounding=rounding)
    s = s_of(alpha)
    size = tuple(CLOSED_FORM_SIZE[rounding](n * s) for n in (20, 14))
    assert y.shape[2:] == size
    sig = 1 / (1 + math.exp(-alpha))
    kw = dict(size=size, mode="bilinear", align_corners=align_corners)
    expected = (1 - sig) * F.interpolate(F.max_pool2d(x, 2), **kw) + sig * F.interpolate(x, **kw)
    torch.testing.assert_close(y, expected)


def test_defaults_are_the_authors():
    layer = ShapeAdaptor2d()
    assert layer.rounding == "local" and layer.align_corners
    assert shape_adaptor2d.__defaults__[-2:] == (True, "local")


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
    size = (math.floor(32 * s),) * 2  # default rule "local": the authors' int(.)
    w = (s - 0.5) / 0.5
    kw = dict(size=size, mode="bilinear", align_corners=True)
    expected = (1 - w) * F.interpolate(F.max_pool2d(x, 2), **kw) + w * F.interpolate(x, **kw)
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


# --- the authors' released code (Liu et al., ECCV 2020): tests/_shape_adaptor_reference.py ----


def authors_sizes(mode: str, input_dim: int, alphas) -> list[int]:
    state, sizes = AuthorsState(mode, input_dim), []
    x = torch.zeros(1, 1, input_dim, input_dim)
    for a in alphas:
        x = authors_shape_adaptor(state, F.max_pool2d(x, 2), x, torch.tensor(float(a)))
        sizes.append(x.shape[-1])
    return sizes


def chained(n: int, rounding: str, alphas=None) -> nn.Sequential:
    model = nn.Sequential(*[ShapeAdaptor2d(rounding=rounding) for _ in range(n)])
    with torch.no_grad():
        for m, a in zip(model, alphas if alphas is not None else [0.0] * n):
            m.alpha.fill_(a)
    chain_shape_adaptors(model)
    return model


def out_sizes(model: nn.Module, size) -> list[tuple[int, ...]]:
    model(torch.randn(1, 1, *size))
    return [m.last_out_size for m in model if isinstance(m, ShapeAdaptor2d)]


def test_authors_size_sequence_global_mode_carries_the_continuous_product():
    # H = 224, s = 0.75 (alpha = 0): 168, 126, 94.5 -> 94 (halves to even), 70.875 -> 71, 53.16 -> 53
    assert authors_sizes("global", 224, [0.0] * 5) == [168, 126, 94, 71, 53]
    assert [s[0] for s in out_sizes(chained(5, "global"), (224, 224))] == [168, 126, 94, 71, 53]
    # without the running product (each layer from its own input): 94 * 0.75 = 70.5 -> 70
    unchained = nn.Sequential(*[ShapeAdaptor2d(rounding="global") for _ in range(5)])
    assert [s[0] for s in out_sizes(unchained, (224, 224))] == [168, 126, 94, 70, 52]
    # poolarch's former rule rounds 94.5 up
    assert [s[0] for s in out_sizes(chained(5, "nearest"), (224, 224))][2] == 95


@pytest.mark.parametrize("rounding", ["local", "global"])
def test_authors_single_adaptor_sizes(rounding):
    # H = 14, alpha = 0: 10.5 -> 10 in both modes (int; round halves to even)
    assert authors_sizes(rounding, 14, [0.0]) == [10]
    assert out_sizes(chained(1, rounding), (14, 14)) == [(10, 10)]
    assert ShapeAdaptor2d(rounding=rounding).output_size((14, 14)) == (10, 10)
    # local mode, H = 32, alpha = -0.346: s = 0.7072, 22.63 -> 22
    assert authors_sizes("local", 32, [-0.346]) == [22]
    assert out_sizes(chained(1, "local", [-0.346]), (32, 32)) == [(22, 22)]


def test_former_rule_is_available():
    assert out_sizes(chained(1, "nearest"), (14, 14)) == [(11, 11)]
    assert out_sizes(chained(1, "nearest", [-0.346]), (32, 32)) == [(23, 23)]


@pytest.mark.parametrize("mode", ["local", "global"])
@pytest.mark.parametrize("penalty", [1.0, 0.9])
def test_forward_and_gradients_equal_the_authors_function_on_a_chain(mode, penalty):
    """Three adaptors with 1x1 convs between them (sizes carried across other layers)."""
    torch.manual_seed(0)
    alphas = [0.0, 1.3, -0.7]
    convs = [nn.Conv2d(2, 2, 1).double() for _ in alphas]
    model = nn.Sequential()
    for conv, a in zip(convs, alphas):
        adaptor = ShapeAdaptor2d(rounding=mode).double()
        with torch.no_grad():
            adaptor.alpha.fill_(a)
        adaptor.penalty = penalty
        model.append(conv)
        model.append(adaptor)
    chain_shape_adaptors(model)
    x = torch.randn(2, 2, 45, 45, dtype=D, requires_grad=True)
    y = model(x)

    ref_alphas = [torch.tensor(a, dtype=D, requires_grad=True) for a in alphas]
    state, z = AuthorsState(mode, 45, penalty), x
    for conv, a in zip(convs, ref_alphas):
        z = conv(z)
        z = authors_shape_adaptor(state, F.max_pool2d(z, 2), z, a)
    assert y.shape == z.shape
    torch.testing.assert_close(y, z)
    w = torch.randn_like(y)
    grads = torch.autograd.grad((y * w).sum(), [x] + [m.alpha for m in model if isinstance(m, ShapeAdaptor2d)])
    ref = torch.autograd.grad((z * w).sum(), [x] + ref_alphas)
    torch.testing.assert_close(grads[0], ref[0])
    for g, r in zip(grads[1:], ref[1:]):
        torch.testing.assert_close(g.reshape(()), r)


class AuthorsBlock(nn.Module):
    """A downsampling residual block as the authors build it: 1x1 stride-2 conv shortcut, 3x3 main path."""

    def __init__(self, adaptor: ResidualShapeAdaptor2d):
        super().__init__()
        self.shortcut = nn.Conv2d(2, 2, 1, stride=2)
        self.main = nn.Conv2d(2, 2, 3, padding=1)
        self.adaptor = adaptor

    def forward(self, x):
        return torch.relu(self.adaptor(self.shortcut(x), self.main(x)))


@pytest.mark.parametrize("mode", ["local", "global"])
def test_residual_form_equals_the_authors_function(mode):
    torch.manual_seed(1)
    alphas = [0.0, 0.4, -1.1]
    blocks = nn.Sequential(*[AuthorsBlock(ResidualShapeAdaptor2d(rounding=mode)) for _ in alphas]).double()
    for b, a in zip(blocks, alphas):
        with torch.no_grad():
            b.adaptor.alpha.fill_(a)
    chain_shape_adaptors(blocks)
    x = torch.randn(2, 2, 30, 30, dtype=D, requires_grad=True)
    y = blocks(x)

    ref_alphas = [torch.tensor(a, dtype=D, requires_grad=True) for a in alphas]
    state, z = AuthorsState(mode, 30), x
    for b, a in zip(blocks, ref_alphas):
        z = torch.relu(authors_shape_adaptor(state, b.shortcut(z), b.main(z), a, residual=True))
    assert y.shape == z.shape and [b.adaptor.last_out_size[0] for b in blocks] == authors_sizes(mode, 30, alphas)
    torch.testing.assert_close(y, z)
    w = torch.randn_like(y)
    grads = torch.autograd.grad((y * w).sum(), [x] + [b.adaptor.alpha for b in blocks])
    ref = torch.autograd.grad((z * w).sum(), [x] + ref_alphas)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g.reshape(r.shape), r)


def test_residual_form_closed_form_gradcheck_and_static():
    shortcut = torch.randn(1, 2, 5, 6, dtype=D, requires_grad=True)
    main = torch.randn(1, 2, 10, 12, dtype=D, requires_grad=True)
    a = torch.tensor([0.3], dtype=D, requires_grad=True)
    y = residual_shape_adaptor2d(shortcut, main, a)
    s = s_of(0.3)
    size = (math.floor(10 * s), math.floor(12 * s))
    sig = 1 / (1 + math.exp(-0.3))
    kw = dict(size=size, mode="bilinear", align_corners=True)
    torch.testing.assert_close(y, 2 * (1 - sig) * F.interpolate(shortcut, **kw) + 2 * sig * F.interpolate(main, **kw))
    assert torch.autograd.gradcheck(lambda u, v, b: residual_shape_adaptor2d(u, v, b), (shortcut, main, a))
    layer = ResidualShapeAdaptor2d(0.7)
    assert isinstance(layer, ShapeAdaptor2d) and "factor=2" in repr(layer)
    out = layer(shortcut.detach().float(), main.detach().float())
    static = layer.to_static()
    assert not list(static.parameters())
    torch.testing.assert_close(static(shortcut.detach().float(), main.detach().float()), out)
    with pytest.raises(ValueError, match="factor"):
        ResidualShapeAdaptor2d(factor=0)
    with pytest.raises(ValueError, match="main must have 4"):
        layer(shortcut, main[0])


def test_chain_resets_every_pass_survives_deepcopy_and_shared_pairs_agree():
    import copy

    model = chained(3, "global")
    twin = copy.deepcopy(model)  # before a forward pass (last_size_surrogate is not a leaf)
    assert out_sizes(model, (168, 168)) == out_sizes(model, (168, 168)) == [(126,) * 2, (94,) * 2, (71,) * 2]
    # a new pass starting at 94 (a size the last pass produced from 94.5) starts from 94, not 94.5
    assert out_sizes(model, (94, 94)) == [(70,) * 2, (53,) * 2, (40,) * 2]  # 70.5, 52.875, 39.66 (not 71 from 94.5)
    assert chain_shape_adaptors(model) is model[0].chain  # idempotent
    assert twin[0].chain is twin[2].chain and twin[0].chain is not model[0].chain
    assert out_sizes(twin, (168, 168)) == [(126,) * 2, (94,) * 2, (71,) * 2]

    class Pair(nn.Module):  # a main path and a shortcut sharing alpha, after an adaptor: 94.5 -> both 70.875
        def __init__(self):
            super().__init__()
            self.first = ShapeAdaptor2d(rounding="global")
            self.second = ShapeAdaptor2d(rounding="global")
            self.a = ShapeAdaptor2d(rounding="global")
            self.b = ShapeAdaptor2d(share_with=self.a, rounding="global")
            for m in (self.first, self.second, self.a):
                with torch.no_grad():
                    m.alpha.fill_(0.0)

        def forward(self, x):
            x = self.second(self.first(x))
            return self.a(x) + self.b(x)

    pair = Pair()
    chain_shape_adaptors(pair)
    assert pair(torch.randn(1, 1, 168, 168)).shape[2:] == (71, 71)  # 168 -> 126 -> 94.5 (94) -> 70.875
    assert pair.b.rounding == "global" and pair.b.last_out_size == (71, 71)


def test_fixed_resizing_between_adaptors_restarts_from_the_actual_size():
    model = nn.Sequential(ShapeAdaptor2d(rounding="global"), nn.MaxPool2d(2), ShapeAdaptor2d(rounding="global"))
    for m in (model[0], model[2]):
        with torch.no_grad():
            m.alpha.fill_(0.0)
    chain_shape_adaptors(model)
    # 126 * 0.75 = 94.5 -> 94, max-pool 47, 47 * 0.75 = 35.25 -> 35
    assert out_sizes(model, (126, 126)) == [(94, 94), (35, 35)]


def test_non_square_maps_are_sized_per_axis():
    # the authors size both axes from the width; poolarch carries each axis (docs/differences.md)
    sizes = out_sizes(chained(3, "global"), (224, 100))
    assert sizes == [(168, 75), (126, 56), (94, 42)]  # 100: 75, 56.25, 42.19


def test_chain_rounding_override_and_bad_rounding():
    model = chained(2, "local")
    chain_shape_adaptors(model, rounding="global")
    assert all(m.rounding == "global" for m in model)
    with pytest.raises(ValueError, match="rounding"):
        ShapeAdaptor2d(rounding="floor")
    with pytest.raises(ValueError, match="same rounding"):
        ShapeAdaptor2d(share_with=model[0])
    with pytest.raises(ValueError, match="rounding"):
        chain_shape_adaptors(model, rounding="up")
    with pytest.raises(ValueError, match="rounding"):
        shape_adaptor2d(torch.randn(1, 1, 8, 8), torch.tensor(0.0), rounding="ceil")


def test_frozen_chained_model_scripts_and_exports():
    from poolarch.convert import freeze

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.shortcut, self.main = nn.Conv2d(2, 2, 1, stride=2), nn.Conv2d(2, 2, 3, padding=1)
            self.adaptor = ResidualShapeAdaptor2d(0.7, rounding="global")

        def forward(self, x):
            return self.adaptor(self.shortcut(x), self.main(x))

    model = nn.Sequential(Block(), ShapeAdaptor2d(0.8, rounding="global"))
    init_shape_adaptors(model, 32, 18)
    x = torch.randn(2, 2, 32, 32)
    y = model.eval()(x)
    frozen = freeze(model)
    torch.testing.assert_close(torch.jit.script(frozen)(x), y)
    torch.testing.assert_close(torch.export.export(frozen, (x,)).module()(x), y)


# -- the residual form in the zoo's residual blocks (issue 13, sec. 2) ---------------------------
def _zoo_block(kind: str, alpha: float):
    from poolarch.layers import make_residual_pool
    from poolarch.models._blocks import BasicBlock, Bottleneck

    mix = make_residual_pool("shape_adaptor", 2)
    with torch.no_grad():
        mix.alpha.fill_(alpha)
    block = BasicBlock(4, 6, 2, mix=mix) if kind == "basic" else Bottleneck(4, 8, 2, mix=mix)
    return block.double().train()


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
@pytest.mark.parametrize("alpha", [0.0, -1.3, 2.1])
def test_zoo_residual_block_equals_the_authors_block(kind, alpha):
    """A zoo block built with the residual adaptor computes, line by line, the authors' block:
    every conv at stride 1 on the main path, the 1x1 stride-2 projection + BN as the shortcut, and
    ``relu(2(1-s) resize(shortcut) + 2s resize(main))`` -- forward and gradients."""
    torch.manual_seed(3)
    block = _zoo_block(kind, alpha)
    convs = [m for n, m in block.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith("shortcut")]
    assert all(c.stride == (1, 1) for c in convs)
    assert block.shortcut[0].stride == (2, 2) and block.shortcut[0].kernel_size == (1, 1)
    x = torch.randn(2, 4, 15, 15, dtype=D, requires_grad=True)
    y = block(x)

    # the authors' forward (model_list.py BasicBlock/Bottleneck with apply_sa=True), transcribed
    a = torch.tensor(alpha, dtype=D, requires_grad=True)
    if kind == "basic":
        out = block.conv1(x)  # conv3x3(stride 1) -> bn1 -> relu
        out = block.conv2(out)  # conv3x3 -> bn2
    else:
        out = block.conv1(x)  # conv1x1 -> bn1 -> relu
        out = block.conv2(out)  # conv3x3(stride 1) -> bn2 -> relu
        out = block.conv3(out)  # conv1x1 -> bn3
    downsample = block.shortcut(x)  # conv1x1(stride 2) -> bn
    z = torch.relu(authors_shape_adaptor(AuthorsState("local", 15), downsample, out, a, residual=True))
    assert y.shape == z.shape == (2, block.shortcut[0].out_channels, int(15 * s_of(alpha)), int(15 * s_of(alpha)))
    assert_same_values_and_grads(y, z, [x, block.mix.alpha], [x, a])


def test_zoo_residual_block_rejects_mix_with_resizers_or_without_stride():
    from poolarch.layers import make_residual_pool
    from poolarch.models._blocks import BasicBlock

    with pytest.raises(ValueError, match="mix"):
        BasicBlock(4, 4, 1, mix=make_residual_pool("shape_adaptor", 2))
    with pytest.raises(ValueError, match="mix"):
        BasicBlock(4, 4, 2, resize=make_pool("shape_adaptor", 2), mix=make_residual_pool("shape_adaptor", 2))
    with pytest.raises(ValueError, match="residual form"):
        make_residual_pool("dynopool", 2)
    with pytest.raises(ValueError, match="init_scale"):
        make_residual_pool("shape_adaptor", 2, init_scale=0.3)


@pytest.mark.parametrize("name,blocks", [("resnet20_cifar", 2), ("resnet50_cifar", 3)])
def test_zoo_resnets_use_one_residual_adaptor_per_downsampling_block(name, blocks):
    from poolarch.architecture import freeze
    from poolarch.complexity import ComplexityLoss, count_macs
    from poolarch.layers import StaticResidualShapeAdaptor2d, learnable_resizers

    torch.manual_seed(0)
    model = create_model(name, pool="shape_adaptor", num_classes=10)
    resizers = learnable_resizers(model)
    assert len(resizers) == blocks and all(isinstance(m, ResidualShapeAdaptor2d) for _, m in resizers)
    assert all(n.endswith(".mix") for n, _ in resizers)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _, m in resizers:
            m.alpha.copy_(torch.randn(1, generator=gen))
    x = torch.randn(2, 3, 32, 32)
    # forward / backward reach every alpha
    loss_fn = ComplexityLoss(model, (1, 3, 32, 32))
    out = model(x)
    (out.square().mean() + loss_fn()).backward()
    assert all(m.alpha.grad is not None and m.alpha.grad.abs().item() > 0 for _, m in resizers)
    # the differentiable GMACs equal the counted ones; each adaptor is charged its two bilinear resizes
    count = count_macs(model, (1, 3, 32, 32))
    torch.testing.assert_close(loss_fn().detach(), torch.tensor(count.total / 1e9), rtol=1e-6, atol=0)
    for n, m in resizers:
        assert count.per_module[n] == 8 * _channels_out(model, n) * math.prod(m.last_out_size)
    # freeze: a static residual adaptor, same outputs
    model.eval()
    with torch.no_grad():
        expected = model(x)
    frozen = freeze(model).eval()
    assert not learnable_resizers(frozen)
    assert sum(isinstance(m, StaticResidualShapeAdaptor2d) for m in frozen.modules()) == blocks
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), expected)
        assert count_macs(frozen, (1, 3, 32, 32)).total == count.total


def _channels_out(model: nn.Module, name: str) -> int:
    block = model.get_submodule(name.rsplit(".", 1)[0])
    return block.shortcut[0].out_channels
