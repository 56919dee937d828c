"""Multi-resolution blocks (the multi-resolution-block paper (WACV submission 832)): block, networks, pruning, one-resolution export, bilevel method."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from poolarch.layers import MultiResBlock, architecture_parameters
from poolarch.models.multires import (
    MultiResNet,
    PoolingCNN,
    conv_relu_bn,
    export_one_resolution,
    plot_multires,
    predefined_schedule,
)
from poolarch.methods import RunInfo, create_method
from poolarch.methods import MultiResMethod

torch.set_num_threads(1)


# -- independent references ------------------------------------------------------------------
def pool_ref(x: torch.Tensor, k: int, kind: str) -> torch.Tensor:
    """k x k pooling by reshaping (sizes divisible by k)."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // k, k, w // k, k)
    return blocks.amax(dim=(3, 5)) if kind == "max" else blocks.mean(dim=(3, 5))


def up_ref(y: torch.Tensor, k: int) -> torch.Tensor:
    """Nearest upsampling by ``k`` via repeat_interleave."""
    return y.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)


def block_ref(x, block, weights, levels, kind="max"):
    """Eq. 4 written out: sum_r w_r * U(B(S(x)))."""
    out = torch.zeros(())
    for w, r in zip(weights, levels):
        out = out + w * up_ref(block(pool_ref(x, 2**r, kind)), 2**r)
    return out


def macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def set_logits(block: MultiResBlock, logits) -> None:
    with torch.no_grad():
        block.alpha.copy_(torch.as_tensor(logits, dtype=block.alpha.dtype))


def logits_for(level: int, resolutions: int = 3, strength: float = 3.0) -> list[float]:
    return [strength if r == level else 0.0 for r in range(resolutions)]


# -- block -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(16, 16), (15, 9), (4, 6)])
@pytest.mark.parametrize("resolutions", [1, 2, 3])
def test_block_shapes(size, resolutions):
    block = MultiResBlock(conv_relu_bn(3, 5), resolutions=resolutions)
    y = block(torch.randn(2, 3, *size))
    assert y.shape == (2, 5, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_block_matches_written_out_eq4(kind):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    block = MultiResBlock(conv, resolutions=3, pool=kind, temperature=0.7).double()
    set_logits(block, [0.3, -1.0, 0.8])
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    alpha = torch.tensor([0.3, -1.0, 0.8], dtype=torch.float64) / 0.7
    w = alpha.exp() / alpha.exp().sum()  # Eq. 5 with temperature
    torch.testing.assert_close(block(x), block_ref(x, conv, w, [0, 1, 2], kind), rtol=1e-12, atol=1e-12)


def test_alpha_gradcheck():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    block = MultiResBlock(conv, resolutions=3, temperature=2.0).double()
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)

    def f(alpha):
        with torch.no_grad():
            block.alpha.copy_(alpha)
        w = torch.softmax(alpha / 2.0, 0)
        return sum(w[r] * up_ref(conv(pool_ref(x, 2**r, "max")), 2**r) for r in range(3))

    # the block's autograd gradient w.r.t. alpha equals the reference's numerical gradient
    alpha = torch.tensor([0.1, -0.4, 0.5], dtype=torch.float64, requires_grad=True)
    set_logits(block, alpha.detach())
    g_out = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    (g_block,) = torch.autograd.grad((block(x) * g_out).sum(), block.alpha)
    eps = 1e-6
    num = torch.zeros(3, dtype=torch.float64)
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = eps
        with torch.no_grad():
            num[i] = ((f(alpha + e) - f(alpha - e)) * g_out).sum() / (2 * eps)
    torch.testing.assert_close(g_block, num, rtol=1e-6, atol=1e-8)


def test_uniform_mixing_is_scale_invariant_average():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    block = MultiResBlock(conv, resolutions=3, mixing="uniform").double()
    assert block.arch_parameters() == []
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    branches = [up_ref(conv(pool_ref(x, 2**r, "max")), 2**r) for r in range(3)]
    reference = (branches[0] + branches[1] + branches[2]) / 3
    torch.testing.assert_close(block(x), reference, rtol=1e-12, atol=1e-12)
    # a learned block at its (uniform) initialisation computes the same thing
    learned = MultiResBlock(conv, resolutions=3).double()
    torch.testing.assert_close(learned(x), reference, rtol=1e-12, atol=1e-12)
    # the scale-invariant network has no architecture parameters at all
    assert architecture_parameters(MultiResNet(channels=4, num_layers=2, mixing="uniform")) == []


def test_unshared_weights_use_one_copy_per_resolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    block = MultiResBlock(conv, resolutions=2, share_weights=False, same_init=False).double()
    assert not torch.equal(block.blocks[0].weight, block.blocks[1].weight)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    ref = 0.5 * block.blocks[0](x) + 0.5 * up_ref(block.blocks[1](pool_ref(x, 2, "max")), 2)
    torch.testing.assert_close(block(x), ref, rtol=1e-12, atol=1e-12)
    same = MultiResBlock(nn.Conv2d(2, 3, 3, padding=1), resolutions=2, share_weights=False, same_init=True)
    assert torch.equal(same.blocks[0].weight, same.blocks[1].weight)
    assert same.blocks[0].weight is not same.blocks[1].weight


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size", [(16, 12), (15, 9), (6, 10)])
def test_pyramid_equals_direct_pooling(kind, size):
    from poolarch.layers.multires import pyramid

    x = torch.randn(2, 3, *size, dtype=torch.float64)
    pooled = pyramid(x, [0, 1, 2, 3], kind)
    op = F.max_pool2d if kind == "max" else F.avg_pool2d
    for level in (1, 2, 3):
        k = 2**level
        torch.testing.assert_close(pooled[level], op(x, k, k, ceil_mode=True), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("small", [(4, 3), (5, 5), (8, 6)])
def test_add_upsampled_equals_interpolate(mode, small):
    from poolarch.layers.multires import add_upsampled

    out = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    y = torch.randn(2, 3, *small, dtype=torch.float64)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    reference = out + F.interpolate(y, size=(8, 6), mode=mode, **kwargs)
    torch.testing.assert_close(add_upsampled(out, y, (8, 6), mode), reference, rtol=1e-12, atol=1e-12)


def test_block_cost_at_three_resolutions_within_1_4x():
    c, h = 16, 32
    full = conv_relu_bn(c, c)
    block = MultiResBlock(full, resolutions=3)
    x = torch.randn(1, c, h, h)
    conv_macs = c * c * 9 * h * h  # closed form of the full-resolution convolution
    assert macs(full, x) == conv_macs
    m3 = macs(block, x)
    assert m3 == conv_macs * (1 + 1 / 4 + 1 / 16)  # branches at 1, 1/2, 1/4 of the size
    assert m3 <= 1.4 * macs(full, x)
    # the library's counter (conv/linear + resizing MACs; bilinear upsampling is charged)
    from poolarch.complexity import count_macs

    for mode in ("nearest", "bilinear"):
        multi = MultiResBlock(full, resolutions=3, upsample=mode)
        assert count_macs(multi, x).total <= 1.4 * count_macs(full, x).total


def test_bad_arguments():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    with pytest.raises(ValueError, match="resolutions"):
        MultiResBlock(conv, resolutions=0)
    with pytest.raises(ValueError, match="pool"):
        MultiResBlock(conv, pool="min")
    with pytest.raises(ValueError, match="upsample"):
        MultiResBlock(conv, upsample="cubic")
    with pytest.raises(ValueError, match="temperature"):
        MultiResBlock(conv, temperature=0.0)
    with pytest.raises(ValueError, match="mixing"):
        MultiResBlock(conv, mixing="random")
    with pytest.raises(TypeError, match="block"):
        MultiResBlock(lambda x: x)
    with pytest.raises(ValueError, match="threshold"):
        MultiResBlock(conv).prune(1.5)
    with pytest.raises(ValueError, match="block"):
        MultiResNet(block="resnet")
    with pytest.raises(ValueError, match="prune_threshold"):
        MultiResMethod(prune_threshold=0.0)
    with pytest.raises(TypeError, match="schedule"):
        PoolingCNN("012")


# -- networks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("block", ["conv", "mbconv"])
@pytest.mark.parametrize("learn_depth", [False, True])
def test_net_shapes_and_gradients_reach_alpha_and_beta(block, learn_depth):
    torch.manual_seed(0)
    net = MultiResNet(num_classes=5, channels=8, num_layers=3, resolutions=3, block=block, learn_depth=learn_depth)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    out = net(x)
    assert out.shape == (4, 5)
    F.cross_entropy(out, y).backward()
    arch = architecture_parameters(net)
    assert len(arch) == 3 + (1 if learn_depth else 0)
    for p in arch:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    if learn_depth:
        assert net.depth.beta.grad.abs().sum() > 0


def test_learned_depth_reads_weighted_sum_of_layers():
    torch.manual_seed(0)
    net = MultiResNet(num_classes=3, channels=4, num_layers=3, learn_depth=True).double().eval()
    with torch.no_grad():
        net.depth.beta.copy_(torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    h, outs = x, []
    for layer in net.layers:
        h = layer(h)
        outs.append(h)
    beta = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64)
    w = beta.exp() / beta.exp().sum()
    mixed = sum(w[i] * outs[i] for i in range(3))  # Eq. 6: sum_l beta_l h_l, then the classifier
    torch.testing.assert_close(net(x), net.head(mixed.mean((2, 3))), rtol=1e-12, atol=1e-12)
    assert net.architecture()["learned_depth"] == 3


def test_prune_removes_exactly_the_low_weights_and_keeps_paths():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    block = MultiResBlock(conv, resolutions=3).double()
    logits = torch.tensor([1.0, 0.36, -1.0], dtype=torch.float64)
    set_logits(block, logits)
    w = torch.softmax(logits, 0)  # ~ [0.585, 0.308, 0.107]
    removed = block.prune(0.2)
    assert removed == [r for r in range(3) if w[r] < 0.2] == [2]
    assert block.active.tolist() == [True, True, False]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    kept = w[:2] / w[:2].sum()  # documented: kept weights renormalise
    torch.testing.assert_close(block(x), block_ref(x, conv, kept, [0, 1]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(block.weights(), torch.cat([kept, kept.new_zeros(1)]))
    # the removed branch is not computed any more
    assert macs(block, x) == 4 * 3 * 9 * (64 + 16) * 2


def test_net_prune_thresholds_match_independent_selection():
    torch.manual_seed(0)
    net = MultiResNet(channels=4, num_layers=4, resolutions=3)
    logits = torch.randn(4, 3) * 2
    for layer, row in zip(net.layers, logits):
        set_logits(layer, row)
    w = torch.softmax(logits, 1)
    removed = net.prune(0.1)
    for i in range(4):
        expected = [r for r in range(3) if w[i, r] < 0.1 and r != int(w[i].argmax())]
        assert removed[i] == expected
        assert net.layers[i].active_levels() == [r for r in range(3) if r not in expected]


def _net_with_schedule(schedule, **kwargs):
    torch.manual_seed(0)
    net = MultiResNet(num_classes=3, channels=4, num_layers=len(schedule), resolutions=3, **kwargs)
    for layer, level in zip(net.layers, schedule):
        set_logits(layer, logits_for(level))
    # non-trivial BN statistics so eval mode is not the identity
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 3, 16, 16))
    return net.eval()


@pytest.mark.parametrize("learn_depth", [False, True])
def test_one_resolution_export_is_plain_cnn_with_same_function(learn_depth):
    schedule = [0, 1, 1, 2]
    net = _net_with_schedule(schedule, learn_depth=learn_depth)
    plain = export_one_resolution(net).eval()
    assert plain.schedule == schedule
    assert not any(isinstance(m, (nn.Upsample, MultiResBlock)) for m in plain.modules())
    net.keep_argmax()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(plain(x), net(x), rtol=1e-5, atol=1e-5)


def test_one_resolution_export_macs_equal_independent_cnn():
    schedule = [0, 1, 1, 2]
    plain = export_one_resolution(_net_with_schedule(schedule)).eval()
    c = 4
    reference = nn.Sequential(  # written by hand: pooling before layers 2 and 4
        nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c),
        nn.MaxPool2d(2), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c),
        nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c),
        nn.MaxPool2d(2), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 3),
    ).eval()
    x = torch.randn(1, 3, 16, 16)
    assert macs(plain, x) == macs(reference, x)
    closed_form = 3 * c * 9 * 256 + c * c * 9 * (64 + 64 + 16) + c * 3
    assert macs(plain, x) == closed_form


def test_one_resolution_export_non_monotone_uses_upsample():
    schedule = [0, 2, 1]
    net = _net_with_schedule(schedule)
    plain = export_one_resolution(net).eval()
    assert sum(isinstance(m, nn.Upsample) for m in plain.modules()) == 1
    net.keep_argmax()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(plain(x), net(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="schedule"):
        export_one_resolution(net, on_rise="error")


def test_baselines():
    assert predefined_schedule(10, 3, 3) == [min(i // 3, 2) for i in range(10)]
    x = torch.randn(1, 3, 16, 16)
    no_pool = PoolingCNN([0] * 3, channels=4)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in no_pool.modules())
    assert macs(no_pool, x) == 3 * 4 * 9 * 256 + 2 * 16 * 9 * 256 + 4 * 10
    pre = PoolingCNN(predefined_schedule(4, 3, 2), channels=4, pool="avg")
    assert sum(isinstance(m, nn.AvgPool2d) for m in pre.modules()) == 1
    assert pre(x).shape == (1, 10)


def test_registered_models():
    from poolarch.models import create_model, list_models

    names = set(list_models())
    for name in ("multires_net", "multires_effconv", "multires_scale_invariant", "multires_no_pool", "multires_predefined"):
        assert name in names
        net = create_model(name, num_classes=4, channels=4, num_layers=2)
        assert net(torch.randn(1, 3, 8, 8)).shape == (1, 4)
    one = create_model("multires_one_res", num_classes=4, channels=4, schedule=[0, 1])
    assert one.schedule == [0, 1]


def test_plot_multires_writes_png(tmp_path):
    net = MultiResNet(channels=4, num_layers=3, learn_depth=True)
    path = plot_multires(net.architecture(), str(tmp_path / "alpha.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# -- bilevel method ----------------------------------------------------------------------------
def _method_and_net(**kwargs):
    torch.manual_seed(0)
    net = MultiResNet(num_classes=3, channels=4, num_layers=2, learn_depth=True)
    method = create_method("multires", arch_lr=1e-2, **kwargs)
    method.setup(net, torch.randn(2, 3, 8, 8))
    return method, net


def test_param_groups_exclude_arch_parameters():
    method, net = _method_and_net()
    grouped = {id(p) for g in method.param_groups(net) for p in g["params"]}
    arch = {id(p) for p in architecture_parameters(net)}
    assert arch and not (grouped & arch)
    assert grouped | arch == {id(p) for p in net.parameters()}


def test_val_step_changes_alpha_and_beta_not_weights():
    method, net = _method_and_net()
    arch = architecture_parameters(net)
    arch_ids = {id(p) for p in arch}
    weights_before = {n: p.detach().clone() for n, p in net.named_parameters() if id(p) not in arch_ids}
    arch_before = [p.detach().clone() for p in arch]
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    method.val_step(net, x, y, F.cross_entropy)
    for p, before in zip(arch, arch_before):
        assert not torch.equal(p, before)
        # Adam's first step moves every coordinate by ~lr against the gradient sign
        assert torch.allclose((p - before).abs(), torch.full_like(p, 1e-2), rtol=0.05)
    for n, p in net.named_parameters():
        if id(p) not in arch_ids:
            assert torch.equal(p, weights_before[n]), n
            assert p.grad is None


def test_method_state_round_trip_resumes_adam():
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    m1, n1 = _method_and_net()
    m1.val_step(n1, x, y, F.cross_entropy)
    m2, n2 = _method_and_net()
    n2.load_state_dict(n1.state_dict())
    m2.load_state_dict(m1.state_dict())
    m1.val_step(n1, x, y, F.cross_entropy)
    m2.val_step(n2, x, y, F.cross_entropy)
    for a, b in zip(architecture_parameters(n1), architecture_parameters(n2)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kwargs", [{"prune_threshold": 0.3}, {"one_res": True}])
def test_method_prunes_at_prune_epoch_then_freezes_alpha(kwargs):
    method, net = _method_and_net(prune_epoch=2, **kwargs)
    for layer, row in zip(net.layers, ([2.0, 0.0, -1.0], [0.0, 1.0, 0.9])):
        set_logits(layer, row)
    method.epoch_end(net, 0)
    assert all(layer.active.all() for layer in net.layers)
    metrics = method.epoch_end(net, 1)
    if "one_res" in kwargs:
        assert [layer.active_levels() for layer in net.layers] == [[0], [1]]
    else:
        w = [torch.softmax(torch.tensor(r), 0) for r in ([2.0, 0.0, -1.0], [0.0, 1.0, 0.9])]
        assert [layer.active_levels() for layer in net.layers] == [
            [r for r in range(3) if w[i][r] >= 0.3] for i in range(2)
        ]
    assert math.isclose(sum(metrics[f"alpha/l1_r{r}"] for r in range(3)), 1.0, rel_tol=1e-5)
    before = [p.detach().clone() for p in architecture_parameters(net)]
    method.val_step(net, torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,)), F.cross_entropy)
    assert all(torch.equal(p, b) for p, b in zip(architecture_parameters(net), before))


def test_prune_epoch_defaults_to_half_of_the_epochs():
    """The run's length reaches the method once, in the RunInfo given to setup."""
    net, x = MultiResNet(channels=4, num_layers=2), torch.zeros(1, 3, 8, 8)
    run = RunInfo(epochs=10, steps_per_epoch=3)
    one_res = create_method("multires", one_res=True)
    assert one_res.prune_epoch is None  # not known before setup
    one_res.setup(net, x, run)
    assert one_res.prune_epoch == 5
    plain = create_method("multires")
    plain.setup(net, x, run)
    assert plain.prune_epoch is None  # nothing to prune
    explicit = create_method("multires", one_res=True, prune_epoch=2)
    explicit.setup(net, x, run)
    assert explicit.prune_epoch == 2


def test_prune_before_training_needs_learned_alphas():
    method, net = _method_and_net(one_res=True)
    with pytest.raises(ValueError, match="prune_epoch"):
        method.forward(net, torch.randn(1, 3, 8, 8))


def test_method_checks_model_arguments():
    with pytest.raises(ValueError, match="resolutions"):
        create_method("multires", resolutions=2).setup(MultiResNet(channels=4, num_layers=2), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="learn_depth"):
        create_method("multires", learn_depth=True).setup(MultiResNet(channels=4, num_layers=2), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="MultiResBlock"):
        create_method("multires").setup(nn.Sequential(nn.Conv2d(3, 3, 1)), torch.zeros(1, 3, 8, 8))


def test_engine_run_searches_then_keeps_one_resolution(tmp_path):
    engine = pytest.importorskip("poolarch.train.engine")
    from poolarch.train import TrainConfig

    cfg = TrainConfig(
        model="multires_net", pool="max", dataset="random", image_size=8, num_classes=3, limit=32,
        model_args={"channels": 4, "num_layers": 2, "resolutions": 2, "learn_depth": True},
        method="multires", method_args={"one_res": True, "prune_epoch": 1, "arch_lr": 0.05},
        epochs=2, batch_size=8, max_steps_per_epoch=2, max_eval_steps=1, device="cpu",
        out=str(tmp_path / "run"), progress=False,
    )
    result = engine.train(cfg)
    first, last = result.history
    assert first["multires/pruned"] == 1 and last["multires/pruned"] == 1
    assert 0.0 < first["alpha/l1_r0"] < 1.0  # recorded before pruning
    for layer in (1, 2):
        row = [last[f"alpha/l{layer}_r{r}"] for r in range(2)]
        assert sorted(row) == [0.0, 1.0]
        assert row.index(1.0) == max(range(2), key=lambda r: first[f"alpha/l{layer}_r{r}"])
    assert last["gmacs"] < first["gmacs"]  # one branch per layer costs less than two


def test_engine_passes_epochs_so_one_res_prunes_at_half(tmp_path):
    """The CLI's ``--one-res`` alone: the engine tells the method the run length (4 epochs), so the
    search runs for epochs 1-2 and the one-resolution network is fine-tuned in epochs 3-4."""
    from poolarch.cli import main

    out = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text("image_size: 8\nnum_classes: 3\nlimit: 16\n"
                      "model_args: {channels: 4, num_layers: 2, resolutions: 2}\n")
    code = main(["train", "--config", str(config), "--model", "multires_net", "--pool", "max",
                 "--method", "multires", "--one-res", "--dataset", "random", "--epochs", "4",
                 "--batch-size", "8", "--max-steps-per-epoch", "1", "--max-eval-steps", "1",
                 "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 0
    import csv

    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(float(r["multires/pruned"])) for r in rows] == [0, 1, 1, 1]
    # the report draws the searched mixing weights (last row before pruning) as a heat-map
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "multires_run.png").stat().st_size > 1000
    assert "multires_run.png" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize("size", [(16, 16), (15, 9)])
def test_one_resolution_net_reports_the_sizes_of_its_plain_export(size):
    """After keep_argmax the net reports one size per change of resolution; the exported plain
    CNN's own pooling layers (found by feature_map_sizes) produce exactly those sizes."""
    from poolarch.complexity import feature_map_sizes

    net = _net_with_schedule([0, 1, 1, 2], learn_depth=False)
    x = torch.randn(1, 3, *size)
    net(x)
    assert net.feature_sizes() == []  # still mixing three resolutions per layer
    plain = export_one_resolution(net).eval()
    net.keep_argmax()
    net(x)
    expected = [s for name, s in feature_map_sizes(plain, x) if name != "input"]
    assert net.feature_sizes() == expected and len(expected) == 2
