"""Model zoo: registry, feature-map sizes, published MACs/parameter counts, gradients, scale sharing."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from poolarch.complexity import count_macs
from poolarch.layers import DynOPool2d, LearnableResize, learnable_resizers, list_pools
from poolarch.models import create_model, list_models, model_input_size, register_model

torch.set_num_threads(1)

ZOO = ["vgg16_cifar", "resnet50_cifar", "mobilenetv2_cifar", "resnet20_cifar", "resnet18_cifar", "plainnet10",
       "vgg_small"]
# spatial sizes of the stage outputs on a 32x32 input (Jang et al. 2023 Table 1, Javan et al. 2023 Table 5, the multi-resolution-block paper (WACV submission 832) Sec. 4.2)
STAGE_SIZES = {
    "vgg16_cifar": [32, 16, 8, 4, 2],
    "resnet50_cifar": [32, 16, 8, 4],
    "resnet18_cifar": [32, 16, 8, 4],
    "resnet20_cifar": [32, 16, 8],
    "mobilenetv2_cifar": [32, 32, 16, 8, 8, 4, 4],  # one stage per (t, c, n, s) row; maps 32-16-8-4
    "plainnet10": [32, 16, 8, 4],
    "vgg_small": [32, 16, 8, 4],
}
SMALL = {"vgg16_cifar": {"width": 0.125}, "mobilenetv2_cifar": {"width": 0.25}}


def stage_output_sizes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    hooks = [s.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:]))) for s in model.stages]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return sizes


def test_registry_lists_the_zoo_and_rejects_bad_input():
    assert set(ZOO) <= set(list_models())
    with pytest.raises(ValueError, match="model must be one of .*'no_such_net'"):
        create_model("no_such_net")
    with pytest.raises(ValueError, match="pool"):
        create_model("resnet20_cifar", pool="median")
    with pytest.raises(ValueError, match="init_scales"):
        create_model("resnet20_cifar", pool="dynopool", init_scales=[0.5])
    with pytest.raises(ValueError, match="init_scales"):
        create_model("resnet20_cifar", pool="max", init_scales=[0.5, 0.5])
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet20_cifar", num_classes=0)
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet20_cifar")(lambda **kw: nn.Identity())


def test_register_model_adds_a_builder():
    @register_model("_test_tiny_net", input_size=4)
    def tiny(num_classes=10, pool="max", in_chans=3, init_scales=None, hidden=4):
        return nn.Sequential(nn.Conv2d(in_chans, hidden, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(hidden, num_classes))

    assert "_test_tiny_net" in list_models()
    model = create_model("_test_tiny_net", num_classes=7, hidden=5)
    assert model(torch.zeros(1, 3, 4, 4)).shape == (1, 7)
    assert model.default_input_size == model_input_size("_test_tiny_net") == (4, 4)
    with pytest.raises(ValueError, match="input_size must be an int or"):
        register_model("_test_bad_size", input_size=(4, 4, 4))


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("pool", ["max", "avg", "strided", "dynopool"])
def test_stage_sizes_match_the_papers(name, pool):
    model = create_model(name, pool=pool, **SMALL.get(name, {}))
    sizes = stage_output_sizes(model, torch.randn(1, 3, 32, 32))
    assert [s[0] for s in sizes] == STAGE_SIZES[name] and all(h == w for h, w in sizes)
    # stage_strides: the reduction entering each stage, consistent with the sizes
    strides = model.stage_strides
    assert len(strides) == len(sizes)
    total = 1
    for s in strides:
        total *= s
    assert 32 // total == STAGE_SIZES[name][-1]


@pytest.mark.parametrize(
    "name,pool,gmacs",
    [("vgg16_cifar", "max", 0.31), ("resnet50_cifar", "strided", 1.31), ("mobilenetv2_cifar", "strided", 0.09)],
)
def test_macs_match_paper_000_table_1(name, pool, gmacs):
    model = create_model(name, num_classes=100, pool=pool)
    measured = count_macs(model, (1, 3, 32, 32)).total / 1e9
    assert abs(measured - gmacs) / gmacs < 0.03, measured


# Jang et al. 2023: Table 1 (32x32, 100 classes) and Table 4 (HRNet-W48, 480x480, 21 classes)
PUBLISHED_DEFAULT_GMACS = [("vgg16_cifar", 100, 32, 0.31), ("resnet50_cifar", 100, 32, 1.31),
                           ("mobilenetv2_cifar", 100, 32, 0.09), ("hrnet_w48", 21, 480, 82.55)]


@pytest.mark.parametrize("name,num_classes,size,gmacs", PUBLISHED_DEFAULT_GMACS)
def test_default_pool_is_the_human_design_with_the_published_macs(name, num_classes, size, gmacs):
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes)  # pool="human"
        measured = count_macs(model, (1, 3, size, size)).total / 1e9
    # within 2%, or equal to the published figure at its printed precision (MobileNetV2: 0.088 -> "0.09")
    assert abs(measured - gmacs) / gmacs < 0.02 or round(measured, 2) == gmacs, measured
    human = {"vgg16_cifar": "max"}.get(name, "strided")
    with torch.device("meta"):
        explicit = create_model(name, num_classes=num_classes, pool=human)
        assert count_macs(explicit, (1, 3, size, size)).total / 1e9 == measured
    assert not list(learnable_resizers(model))


def test_parameter_counts_match_published_numbers():
    # He et al. 2016 (Table 6): ResNet-20 0.27M; CIFAR ResNet-18: 11.2M; the multi-resolution-block paper (WACV submission 832): 10x64 net ~0.3M
    def millions(model):
        return sum(p.numel() for p in model.parameters()) / 1e6

    assert abs(millions(create_model("resnet20_cifar")) - 0.27) < 0.01
    assert abs(millions(create_model("resnet18_cifar")) - 11.2) < 0.1
    assert abs(millions(create_model("plainnet10")) - 0.3) < 0.05
    plain = create_model("plainnet10")
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and all(c.out_channels == 64 for c in convs)


@pytest.mark.parametrize("name", ZOO)
def test_forward_backward_reaches_every_parameter_and_alpha(name):
    torch.manual_seed(0)
    model = create_model(name, pool="dynopool", num_classes=5, **SMALL.get(name, {}))
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    alphas = [m.alpha for _, m in learnable_resizers(model)]
    assert alphas and all(a.grad.abs().sum() > 0 for a in alphas)


@pytest.mark.parametrize("name", ["resnet20_cifar", "resnet18_cifar", "resnet50_cifar"])
def test_residual_branches_share_one_scale_and_random_scales_run(name):
    torch.manual_seed(0)
    model = create_model(name, pool="dynopool")
    resizers = [m for _, m in learnable_resizers(model)]
    # every downsampling block: main path + shortcut resizer, one alpha parameter between them
    assert len(resizers) == 2 * sum(1 for s in model.stage_strides if s > 1)
    assert len({id(m.alpha) for m in resizers}) == len(resizers) // 2
    with torch.no_grad():
        for m in resizers:
            m.alpha.uniform_(1.3, 3.0)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_per_layer_initial_scales():
    model = create_model("vgg16_cifar", pool="dynopool", width=0.125, init_scales=[0.75, None, (0.5, 0.25), None])
    sizes = stage_output_sizes(model, torch.randn(1, 3, 32, 32))
    # round-half-up of in * r, at least 2: 32*0.75=24, 24/2=12, (6, 3), (3, round(1.5)=2)
    assert sizes == [(32, 32), (24, 24), (12, 12), (6, 3), (3, 2)]


@pytest.mark.parametrize("pool", ["max", "dynopool"])
def test_vgg_small_for_mnist_and_width(pool):
    model = create_model("vgg_small", pool=pool, in_chans=1, width=0.5)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [8, 16, 32, 64]
    with pytest.raises(ValueError, match="width"):
        create_model("vgg_small", width=0)


def test_dynopool_zoo_equals_maxpool_zoo_on_even_sizes():
    # DynOPool at r=1/2 on even sizes is MaxPool2d(2): same weights -> same logits
    torch.manual_seed(0)
    ref = create_model("plainnet10", pool="max").eval()
    dyn = create_model("plainnet10", pool="dynopool").eval()
    dyn.load_state_dict(ref.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(dyn(x), ref(x))


def test_plainnet_pool_positions_are_configurable():
    model = create_model("plainnet10", pool_after=(2, 4))
    assert [s[0] for s in stage_output_sizes(model, torch.randn(1, 3, 32, 32))] == [32, 16, 8]
    with pytest.raises(ValueError, match="pool_after"):
        create_model("plainnet10", pool_after=(0, 11))


@pytest.mark.parametrize("kind", [k for k in ("shape_adaptor", "diffstride") if k in list_pools()])
def test_baseline_resizers_plug_into_the_zoo(kind):
    model = create_model("resnet20_cifar", pool=kind)
    resizers = learnable_resizers(model)
    # Shape Adaptor: one residual adaptor per downsampling block (its authors' ResNets); else main + shortcut
    assert len(resizers) == (2 if kind == "shape_adaptor" else 4)
    assert all(isinstance(m, LearnableResize) for _, m in resizers)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_mobilenet_strided_blocks_have_one_resizer_and_no_residual():
    model = create_model("mobilenetv2_cifar", pool="dynopool", width=0.25)
    resizers = learnable_resizers(model)
    assert len(resizers) == 3 and all(isinstance(m, DynOPool2d) for _, m in resizers)
    for block in model.stages.modules():
        if any(isinstance(m, DynOPool2d) for m in getattr(block, "conv", nn.Sequential()).children()):
            assert not block.use_residual
