"""convert() on torchvision and zoo networks, freeze(), export, architecture files."""
from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch import nn

from poolarch.convert import (
    apply_architecture,
    convert,
    freeze,
    load_architecture,
    save_architecture,
)
from poolarch.layers import (DynOPool2d, LearnableResize, ResidualShapeAdaptor2d, StaticResizePool, learnable_resizers,
                             list_pools)
from poolarch.models import create_model
from poolarch.complexity import count_macs

from _shape_adaptor_reference import AuthorsState, assert_same_values_and_grads, authors_shape_adaptor

torch.set_num_threads(1)


def conv_input_sizes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Input shape of every Conv2d call, in call order, plus the output shape (eval mode)."""
    sizes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_pre_hook(lambda m, i: sizes.append(tuple(i[0].shape)))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    with torch.no_grad():
        sizes.append(tuple(model.eval()(x).shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return sizes


def randomise_scales(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for _, m in learnable_resizers(model):
            m.alpha.copy_(torch.rand(m.alpha.shape, generator=generator) * 1.7 + 1.3)


def check_training_step(model: nn.Module, x: torch.Tensor) -> None:
    """Forward + backward in train mode: finite loss, a finite gradient on every parameter, a
    non-zero gradient on every alpha."""
    model.train()
    model.zero_grad()
    out = model(x)
    loss = nn.functional.cross_entropy(out, torch.arange(x.shape[0]) % out.shape[1])
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name, m in learnable_resizers(model):
        assert m.alpha.grad.abs().sum() > 0, name


# name -> (constructor, expected sites, expected share groups); counts from the architectures:
# ResNet-50: stem conv+maxpool merged, 3 downsampling blocks x (main conv, shortcut conv);
# VGG-16: 5 max pools; MobileNetV2 / EfficientNet-B0: stem conv + 4 stride-2 depthwise convs.
TORCHVISION = {
    "resnet50": (torchvision.models.resnet50, 7, 4),
    "vgg16": (torchvision.models.vgg16, 5, 5),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, 5, 5),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, 5, 5),
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_models(name):
    ctor, n_sites, n_groups = TORCHVISION[name]
    torch.manual_seed(0)
    original = ctor(num_classes=4)
    if name == "vgg16":  # the 25088x4096 classifier only costs time; the features are what converts
        original.classifier = nn.Linear(512 * 7 * 7, 4)
    x = torch.randn(2, 3, 64, 64)
    model, report = convert(original)
    assert len(report.sites) == n_sites and len(report.groups) == n_groups
    assert all(s.init_scale == tuple(1 / v for v in s.stride) for s in report.sites)
    assert not learnable_resizers(original)  # the input model is untouched
    assert conv_input_sizes(model, x) == conv_input_sizes(original, x)
    check_training_step(model, x)
    randomise_scales(model, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x)).all()


def test_timm_model_if_installed():
    timm = pytest.importorskip("timm")
    original = timm.create_model("resnet18", num_classes=4, pretrained=False)
    model, report = convert(original)
    x = torch.randn(2, 3, 64, 64)
    assert len(report.sites) == 7 and len(report.groups) == 4
    assert conv_input_sizes(model, x) == conv_input_sizes(original, x)
    check_training_step(model, x)


# (timm name, downsampling stages the original has: every one must become a shared-scale group)
TIMM_MODELS = [("resnet50d", 5), ("efficientnet_b0", 5), ("mobilenetv3_small_100", 5),
               ("convnext_atto", 4), ("regnetx_002", 5)]


@pytest.mark.parametrize("name,stages", TIMM_MODELS)
def test_timm_families_convert_with_unchanged_sizes(name, stages):
    """Average-pool shortcuts (resnet-d), squeeze-excitation, patchify stems and strided
    downsampling convolutions (ConvNeXt), grouped convs (RegNet): at the initial scales every conv
    sees the original input size; random scales still run."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    original = timm.create_model(name, num_classes=4, pretrained=False)
    model, report = convert(original)
    x = torch.randn(2, 3, 64, 64)
    assert len(report.groups) == stages
    assert conv_input_sizes(model, x) == conv_input_sizes(original, x)
    check_training_step(model, x)
    randomise_scales(model, torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x)).all()


def test_resnet50_stem_merge_and_shared_shortcuts():
    model, report = convert(torchvision.models.resnet50(num_classes=4))
    stem = report.sites[0]
    assert (stem.kind, stem.name, stem.merged, stem.stride, stem.init_scale) == (
        "strided_conv+pool", "conv1", "maxpool", (4, 4), (0.25, 0.25))
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, DynOPool2d)
    for layer in ("layer2", "layer3", "layer4"):
        group = next(g for g in report.groups if g[0].startswith(layer))
        main, shortcut = (model.get_submodule(p) for p in group)
        assert group == [f"{layer}.0.bn2.2", f"{layer}.0.downsample.1.1"] and main.alpha is shortcut.alpha
        assert model.get_submodule(f"{layer}.0.conv2").stride == (1, 1)
    text = str(report)
    assert "strided_conv+pool" in text and "layer2.0.downsample.0" in text
    assert "after a copy of the activation layer2.0.relu" in text
    assert report.input_size == (224, 224) and "torchvision" in report.input_size_source


def test_rule_b_puts_the_resizer_after_the_shared_activation():
    """Jang et al. 2023 rule B: ReLU o Conv_s -> DynOPool_s o ReLU o Conv_1. torchvision's Bottleneck calls
    one ``relu`` module three times; the converted block must compute, written out by hand,
    relu(bn3(conv3(DynOPool(relu(bn2(conv2_1(...)))))) + shortcut) -- not DynOPool before the ReLU."""
    torch.manual_seed(0)
    model, _ = convert(torchvision.models.resnet50(num_classes=4))
    block = model.layer2[0].eval()
    bn2, act, pool = block.bn2
    assert isinstance(act, nn.ReLU) and isinstance(pool, DynOPool2d)
    with torch.no_grad():
        for m in block.modules():  # non-trivial BatchNorm statistics: negative values reach the ReLU
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 256, 15, 15)
    relu = nn.functional.relu
    with torch.no_grad():
        h = relu(block.bn1(block.conv1(x)))
        h = pool(relu(bn2(block.conv2(h))))
        expected = relu(block.bn3(block.conv3(h)) + block.downsample(x))
        h = relu(pool(bn2(block.conv2(relu(block.bn1(block.conv1(x)))))))  # resizer before the ReLU
        before_relu = relu(block.bn3(block.conv3(h)) + block.downsample(x))
        out = block(x)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, before_relu)  # the placement matters: the check can fail


def test_exclude_and_init_scale_overrides():
    base = torchvision.models.resnet50(num_classes=4)
    model, report = convert(base, exclude=["maxpool", "layer4"], init_scales={"layer2.0.conv2": 0.75})
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.layer4[0].conv2.stride == (2, 2)
    assert report.sites[0].kind == "strided_conv" and report.sites[0].init_scale == (0.5, 0.5)
    assert ("maxpool", "excluded") in report.skipped
    scales = {s.name: s.init_scale for s in report.sites}
    assert scales["layer2.0.conv2"] == scales["layer2.0.downsample.0"] == (0.75, 0.75)
    with pytest.raises(ValueError, match="init_scales"):
        convert(base, init_scales={"no.such.layer": 0.5})
    with pytest.raises(ValueError, match="init_scales"):
        convert(base, init_scales=[0.5])


def test_converting_a_learnable_model_changes_nothing():
    model = create_model("resnet20_cifar", pool="dynopool")
    with pytest.warns(UserWarning, match=r"nothing to convert .*already has 4 learnable resizer"):
        converted, report = convert(model)
    assert report.sites == [] and len(learnable_resizers(converted)) == 4


class FunctionalPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return nn.functional.max_pool2d(self.conv(x), 2).mean((2, 3))


@pytest.mark.parametrize("model,kwargs,reason", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), {}, "no MaxPool2d/AvgPool2d or Conv2d with stride > 1"),
    (FunctionalPool(), {}, r"functional calls \(max_pool2d\)"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.MaxPool2d(2)), {"exclude": ["0", "1"]},
     r"skipped: 0 \(excluded\); 1 \(excluded\)"),
])
def test_nothing_to_convert_warns_why(model, kwargs, reason):
    with pytest.warns(UserWarning, match="convert\\(\\) found nothing to convert .*" + reason):
        converted, report = convert(model, **kwargs)
    assert report.sites == [] and not learnable_resizers(converted)


def test_bad_arguments():
    model = create_model("vgg_small")
    with pytest.raises(ValueError, match="method"):
        convert(model, method="max")
    with pytest.raises(ValueError, match="rule"):
        convert(model, rule="D")
    with pytest.raises(TypeError, match="model"):
        convert("vgg")

    class Untraceable(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="traceable"):
        convert(Untraceable())


ZOO = [("vgg16_cifar", {"width": 0.125}), ("resnet50_cifar", {}), ("mobilenetv2_cifar", {"width": 0.25}),
       ("resnet20_cifar", {}), ("resnet18_cifar", {}), ("plainnet10", {}), ("vgg_small", {})]


@pytest.mark.parametrize("name,kwargs", ZOO)
@pytest.mark.parametrize("pool", ["max", "strided"])
def test_zoo_models(name, kwargs, pool):
    torch.manual_seed(0)
    original = create_model(name, pool=pool, **kwargs)
    x = torch.randn(2, 3, 32, 32)
    model, report = convert(original)
    native = create_model(name, pool="dynopool", **kwargs)  # the zoo's own DynOPool version
    assert len(learnable_resizers(model)) == len(report.sites) == len(learnable_resizers(native))
    assert len(report.groups) == len({id(m.alpha) for _, m in learnable_resizers(native)})
    assert conv_input_sizes(model, x) == conv_input_sizes(original, x)
    check_training_step(model, x)
    randomise_scales(model, torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x)).all()


def test_rule_a_at_half_scale_equals_max_pooling():
    # DynOPool(0.5) on even sizes == MaxPool2d(2): converting a max-pool net keeps its function
    torch.manual_seed(0)
    original = create_model("vgg16_cifar", pool="max", width=0.125).eval()
    model, report = convert(original)
    assert {s.kind for s in report.sites} == {"pool"}
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), original(x))


def test_rule_c_places_the_resizer_before_the_stride_1_conv():
    original = create_model("resnet20_cifar", pool="strided")
    model, report = convert(original, rule="C")
    site = report.sites[0]
    assert site.placement == f"before {site.name}" and site.resizer == f"{site.name}.0"
    wrapped = model.get_submodule(site.name)
    assert isinstance(wrapped[0], DynOPool2d) and wrapped[1].stride == (1, 1)
    x = torch.randn(2, 3, 32, 32)
    assert conv_input_sizes(model, x)[-1] == conv_input_sizes(original, x)[-1]
    check_training_step(model, x)


class TwoBranch(nn.Module):
    """Two strided branches joined by concatenation, then a pool on odd sizes."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 4, 1, stride=2), nn.BatchNorm2d(4))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.pool(torch.cat([self.a(x), self.b(x)], dim=1)))


def test_concatenated_branches_share_a_scale():
    model, report = convert(TwoBranch())
    assert report.groups[0] == ["a.1.1", "b.1.1"]
    assert model.a[1][1].alpha is model.b[1][1].alpha
    randomise_scales(model, torch.Generator().manual_seed(3))
    assert model(torch.randn(2, 3, 20, 20)).shape == (2, 3)


def test_example_input_matches_floor_rounding_of_odd_sizes():
    # 14 -> 7 (stride-2 convs) -> MaxPool2d(2) floors to 3; round(7 / 2) would give 4
    original = TwoBranch()
    x = torch.randn(1, 3, 14, 14)
    plain, report = convert(original)  # sizes kept at 224 (no nominal size known), where 1/2 is exact
    assert report.input_size == (224, 224) and report.input_size_source.startswith("default 224")
    assert conv_input_sizes(plain, x) == conv_input_sizes(original, x)  # no conv after the pool
    plain.eval()(x)
    assert plain.pool.last_out_size == (4, 4)
    matched, report = convert(original, example_input=x)
    matched.eval()(x)
    assert matched.pool.last_out_size == (3, 3)
    # the middle of the scales that round 7 to 3 (halves up): [2.5/7, 3.5/7) -> 3/7
    assert report.sites[-1].init_scale == pytest.approx((3 / 7, 3 / 7), rel=1e-12)
    assert (report.sites[-1].in_size, report.sites[-1].out_size) == ((7, 7), (3, 3))
    assert report.input_size == (14, 14) and report.input_size_source == "example_input"


@pytest.mark.parametrize("kind", [k for k in ("shape_adaptor", "diffstride") if k in list_pools()])
def test_convert_to_baseline_resizers(kind):
    model, report = convert(create_model("resnet20_cifar", pool="strided"), method=kind)
    # Shape Adaptor: one residual adaptor per downsampling block; else main path + shortcut
    assert len(report.sites) == (2 if kind == "shape_adaptor" else 4)
    assert all(isinstance(m, LearnableResize) for _, m in learnable_resizers(model))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def trained_like(name="vgg_small", **kwargs) -> nn.Module:
    """A DynOPool zoo model with arbitrary learned scales (as after training)."""
    torch.manual_seed(0)
    model = create_model(name, pool="dynopool", **kwargs)
    randomise_scales(model, torch.Generator().manual_seed(4))
    return model


def test_freeze_equals_trained_model_and_is_a_plain_cnn():
    model = trained_like("resnet20_cifar")
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    expected = model(x)
    frozen = freeze(model)
    assert not learnable_resizers(frozen) and learnable_resizers(model)
    assert sum(isinstance(m, StaticResizePool) for m in frozen.modules()) == 4
    n_alpha = len({id(m.alpha) for _, m in learnable_resizers(model)})
    assert sum(p.numel() for p in frozen.parameters()) == sum(p.numel() for p in model.parameters()) - 2 * n_alpha
    torch.testing.assert_close(frozen.eval()(x), expected)
    # fine-tunable as a plain CNN
    frozen.train()
    opt = torch.optim.SGD(frozen.parameters(), lr=0.1)
    before = [p.detach().clone() for p in frozen.parameters()]
    nn.functional.cross_entropy(frozen(x), torch.tensor([0, 1])).backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in frozen.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, frozen.parameters()))


@pytest.mark.parametrize("pool", ["dynopool", "shape_adaptor", "diffstride"])
def test_export_round_trip(tmp_path, pool):
    if pool == "dynopool":
        model = trained_like("vgg_small", width=0.5)
    else:
        torch.manual_seed(0)
        model = create_model("vgg_small", pool=pool, width=0.5)
    x = torch.randn(2, 3, 32, 32)
    frozen = freeze(model, example_input=x).eval()
    expected = frozen(x)
    with torch.no_grad():  # the frozen network computes what the learnable one did
        torch.testing.assert_close(expected, model.eval()(x), atol=1e-5, rtol=1e-4)
    exported = torch.export.export(frozen, (x,))
    torch.testing.assert_close(exported.module()(x), expected)
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "frozen.onnx"
    torch.onnx.export(frozen, (x,), str(path), dynamo=True, verbose=False)  # torch.export-based exporter
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    from onnx.reference import ReferenceEvaluator

    (onnx_out,) = ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_out), expected, atol=1e-4, rtol=1e-4)


def test_architecture_file_rebuilds_the_network(tmp_path):
    model = trained_like("resnet20_cifar")
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    expected = model(x)
    path = tmp_path / "architecture.yaml"
    save_architecture(model, path)
    arch = load_architecture(path)
    assert [r.name for r in arch.resizers] == [n for n, _ in learnable_resizers(model)]
    assert len(arch.groups) == 2 and all(len(g) == 2 for g in arch.groups)
    for record, (_, m) in zip(arch.resizers, learnable_resizers(model)):
        assert record.out_size == list(m.last_out_size)
        torch.testing.assert_close(torch.tensor(record.scale, dtype=torch.float64), m.scale.detach().double())
    # rebuilt without the checkpoint: same sizes; with the weights: same outputs
    rebuilt = apply_architecture(create_model("resnet20_cifar", pool="dynopool"), path)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x), expected)
    static = apply_architecture(create_model("resnet20_cifar", pool="dynopool"), arch, static=True)
    assert not learnable_resizers(static)
    static.load_state_dict(freeze(model).state_dict())
    torch.testing.assert_close(static.eval()(x), expected)
    with pytest.raises(ValueError, match="arch"):
        apply_architecture(create_model("vgg_small", pool="dynopool"), arch)


@pytest.mark.parametrize("pool", ["dynopool", "shape_adaptor", "diffstride"])
def test_architecture_file_sets_each_pools_own_parameters(tmp_path, pool):
    """apply_architecture puts the recorded scales into a fresh network through each resizer's
    set_scale (DynOPool alpha = 1/r, Shape Adaptor's logit, DiffStride's stride parameter): the
    fresh network has the same scales and sizes and, given only the weights, the same outputs."""
    torch.manual_seed(0)
    model = create_model("resnet20_cifar", pool=pool)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # arbitrary learned-looking values of each pool's own parameter
        for name, p in model.named_parameters():
            if name.endswith("alpha") and pool == "dynopool":
                p.copy_(torch.rand(p.shape, generator=gen) * 1.5 + 1.3)
            elif name.endswith("alpha"):
                p.copy_(torch.randn(p.shape, generator=gen) * 2)
            elif name.endswith("stride_raw"):
                p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(2, 3, 32, 32)
    expected = model.eval()(x)
    path = tmp_path / "architecture.yaml"
    save_architecture(model, path)
    rebuilt = apply_architecture(create_model("resnet20_cifar", pool=pool), path)
    for (_, a), (_, b) in zip(learnable_resizers(model), learnable_resizers(rebuilt)):
        torch.testing.assert_close(b.scale.detach(), a.scale.detach(), rtol=1e-5, atol=1e-6)
    weights = {k: v for k, v in model.state_dict().items() if not k.endswith(("alpha", "stride_raw"))}
    rebuilt.load_state_dict(weights, strict=False)
    torch.testing.assert_close(rebuilt.eval()(x), expected, rtol=1e-4, atol=1e-4)
    assert [m.last_out_size for _, m in learnable_resizers(rebuilt)] == [
        m.last_out_size for _, m in learnable_resizers(model)]


def _scripted_vgg16():
    return trained_like("vgg16_cifar", width=0.25)


def _scripted_resnet18():
    torch.manual_seed(0)
    model, _ = convert(torchvision.models.resnet18(num_classes=10))
    randomise_scales(model, torch.Generator().manual_seed(5))
    return model


def _scripted_baseline(kind):
    def build():
        if kind not in list_pools():
            pytest.skip(f"pool {kind!r} is not registered")
        torch.manual_seed(0)
        return create_model("resnet20_cifar", pool=kind)
    return build


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("build", [_scripted_vgg16, _scripted_resnet18, _scripted_baseline("shape_adaptor"),
                                   _scripted_baseline("diffstride")],
                         ids=["vgg16_cifar", "torchvision_resnet18", "shape_adaptor", "diffstride"])
def test_torchscript_of_frozen_model_equals_eager(build):
    """``torch.jit.script(freeze(model))`` computes what the eager frozen model computes (issue 3,
    sec. 3), and the eager model still rejects a wrong-rank input with ValueError."""
    model = build().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
    frozen = freeze(model).eval()
    assert not learnable_resizers(frozen)
    scripted = torch.jit.script(frozen)
    with torch.no_grad():
        expected = frozen(x)
        torch.testing.assert_close(scripted(x), expected, atol=1e-6, rtol=1e-5)
    # a wrong-rank input to a frozen resizer: the same ValueError as before freezing (eager), and
    # an error naming the rule from the scripted module
    name, resizer = learnable_resizers(model)[0]
    wrong_rank = torch.randn(2, 4, 8)
    # a residual resizer (Shape Adaptor in the zoo's ResNets) takes (shortcut, main)
    args = (wrong_rank,) * (2 if isinstance(resizer, ResidualShapeAdaptor2d) else 1)
    message = r"(input|shortcut) must have 4 dimensions \(N, C, H, W\) .*got shape \(2, 4, 8\)"
    with pytest.raises(ValueError, match=message):
        model.get_submodule(name)(*args)
    with pytest.raises(ValueError, match=message):
        frozen.get_submodule(name)(*args)
    scripted_resizer = functools.reduce(getattr, name.split("."), scripted)  # no get_submodule on ScriptModules
    with pytest.raises(torch.jit.Error, match="ValueError: " + message):
        scripted_resizer(*args)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
def test_patchify_and_even_kernel_convs_become_same_padded(padding_mode):
    """A 4x4 stride-4 stem and a 2x2 stride-2 conv (ConvNeXt style) do not keep the size at stride
    1 with their padding 0: convert makes them ``padding="same"`` (reference: a fresh
    ``nn.Conv2d(padding="same")`` with the same weights), so the initial sizes equal the original's."""
    torch.manual_seed(0)
    original = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4, padding_mode=padding_mode), nn.ReLU(),
                             nn.Conv2d(4, 6, 2, stride=2, padding_mode=padding_mode),
                             nn.Conv2d(6, 6, 3, stride=2, padding=1, padding_mode=padding_mode),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    model, report = convert(original)
    assert len(report.sites) == 3
    x = torch.randn(2, 3, 64, 48)
    assert conv_input_sizes(model, x) == conv_input_sizes(original, x)
    # 52 / 4 = 13 is odd: the valid 2x2 conv floors to 6, round(6.5) = 7 -- example_input matches it
    odd = torch.randn(2, 3, 64, 52)
    matched, _ = convert(original, example_input=odd)
    assert conv_input_sizes(matched, odd) == conv_input_sizes(original, odd)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(c.stride == (1, 1) for c in convs)
    for conv in convs:
        ref = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding="same",
                        padding_mode=padding_mode)
        ref.load_state_dict(conv.state_dict())
        z = torch.randn(1, conv.in_channels, 9, 8)
        assert torch.allclose(conv(z), ref(z), atol=1e-6)
    check_training_step(model, x)


def test_set_scale_rejects_scales_a_pool_cannot_have():
    from poolarch.layers import DiffStride2d, DynOPool2d, ShapeAdaptor2d

    with pytest.raises(ValueError, match="scale"):
        DynOPool2d().set_scale((0.0, 0.5))
    with pytest.raises(ValueError, match=r"scale must be one ratio in \[0.5, 1\]"):
        ShapeAdaptor2d().set_scale((0.6, 0.7))
    with pytest.raises(ValueError, match=r"scale must be one ratio in \[0.5, 1\]"):
        ShapeAdaptor2d().set_scale((0.3, 0.3))
    with pytest.raises(ValueError, match=r"scale must be in \(0, 1\]"):
        DiffStride2d().set_scale((1.5, 0.5))
    pool = ShapeAdaptor2d()
    pool.set_scale((0.8, 0.8))
    assert float(pool.ratio) == pytest.approx(0.8, rel=1e-6)


def block_output_sizes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Output shape of every residual block of a torchvision ResNet (eval mode)."""
    sizes: list[tuple[int, ...]] = []
    blocks = [b for layer in ("layer1", "layer2", "layer3", "layer4") for b in model.get_submodule(layer)]
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape))) for b in blocks]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_shape_adaptor_convert_mixes_torchvision_blocks_with_one_residual_adaptor(arch):
    """convert(method="shape_adaptor") rewrites each torchvision block with a downsample branch as the
    authors' residual block: the main path's strided conv at stride 1, the strided 1x1 projection
    kept, and one residual adaptor in place of the sum (checked line by line against the authors'
    formula), with the sizes of the original network; freeze() gives the same outputs."""
    from poolarch.layers import ResidualShapeAdaptor2d, StaticResidualShapeAdaptor2d

    torch.manual_seed(0)
    original = getattr(torchvision.models, arch)(num_classes=10).double().eval()
    model, report = convert(original, method="shape_adaptor", example_input=(1, 3, 64, 64))
    model = model.double()  # the new adaptors' alphas too
    residual = [s for s in report.sites if s.kind == "residual_block"]
    assert [s.resizer for s in residual] == ["layer2.0.mix", "layer3.0.mix", "layer4.0.mix"]
    assert [s.merged for s in residual] == ["layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    assert all(len(g) == 1 for g in report.groups)
    main_conv = "conv1" if arch == "resnet18" else "conv2"
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for layer in ("layer2", "layer3", "layer4"):
        block = model.get_submodule(f"{layer}.0")
        assert type(block).__name__ == type(original.get_submodule(f"{layer}.0")).__name__
        assert getattr(block, main_conv).stride == (1, 1) and block.downsample[0].stride == (2, 2)
        assert isinstance(block.mix, ResidualShapeAdaptor2d)
    assert block_output_sizes(model, x) == block_output_sizes(original, x)  # sizes kept
    # layer2.0 against the authors' block, forward and gradient
    with torch.no_grad():
        model.layer2[0].mix.alpha.fill_(0.7)
    block = model.layer2[0]
    z = torch.randn(2, block.conv1.in_channels, 16, 16, dtype=torch.float64, requires_grad=True)
    y = block(z)
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    if arch == "resnet18":
        out = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(z)))))
    else:
        out = block.relu(block.bn1(block.conv1(z)))
        out = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(out)))))
    ref = block.relu(authors_shape_adaptor(AuthorsState("local", 16), block.downsample(z), out, a, residual=True))
    assert_same_values_and_grads(y, ref, [z, block.mix.alpha], [z, a])
    # freeze: static residual adaptors, same outputs; counted MACs unchanged by freezing
    model.eval()
    with torch.no_grad():
        expected = model(x)
        frozen = freeze(model).eval()
        assert sum(isinstance(m, StaticResidualShapeAdaptor2d) for m in frozen.modules()) == 3
        torch.testing.assert_close(frozen(x), expected)
    assert count_macs(frozen, (1, 3, 64, 64)).total == count_macs(model, (1, 3, 64, 64)).total


def test_shape_adaptor_convert_of_a_zoo_resnet_equals_the_zoo_build():
    """Converting the human-designed zoo ResNet gives the network the zoo builds with
    pool="shape_adaptor": same blocks (class kept), same parameters, same outputs."""
    torch.manual_seed(0)
    model, report = convert(create_model("resnet20_cifar"), method="shape_adaptor", example_input=(1, 3, 32, 32))
    assert [s.kind for s in report.sites] == ["residual_block"] * 2
    built = create_model("resnet20_cifar", pool="shape_adaptor")
    assert [(n, p.shape) for n, p in built.named_parameters()] == [(n, p.shape) for n, p in model.named_parameters()]
    assert type(model.stages[1][0]) is type(built.stages[1][0])
    built.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(built.eval()(x), model.eval()(x))
