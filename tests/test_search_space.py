"""Search spaces (Javan et al. 2023 Table 5) and ResNet supernets whose pooling is chosen per call."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from poolarch.models.space import (config_to_resolutions, enumerate_configs, format_config, parse_config,
                                   pool_positions, space_for)
from poolarch.models.supernet import PoolingResNet, PoolingSupernet, resnet_from_blocks


def brute_force(num_layers, num_pools):
    """Every monotone resolution sequence of num_layers layers starting at 0 and ending at num_pools,
    dropping by at most one level per layer -> block counts per level."""
    out = set()
    for steps in itertools.product((0, 1), repeat=num_layers - 1):
        if sum(steps) != num_pools:
            continue
        levels = [0] + list(itertools.accumulate(steps))
        out.add(tuple(levels.count(k) for k in range(num_pools + 1)))
    return out


@pytest.mark.parametrize("backbone,size,default", [
    ("resnet20", 36, (4, 3, 3)), ("resnet18", 56, (3, 2, 2, 2)), ("resnet50", 560, (4, 4, 6, 3)),
    ("resnet50_imagenet", 455, (3, 4, 6, 3)), ("resnet18_imagenet", 35, (2, 2, 2, 2)),
])
def test_table5_sizes(backbone, size, default):
    space, config = space_for(backbone)
    configs = enumerate_configs(space.num_layers, space.num_pools)
    assert len(configs) == size == math.comb(space.num_layers - 1, space.num_pools) == len(space)
    assert config == default and config in configs
    assert set(configs) == brute_force(space.num_layers, space.num_pools)
    assert len(set(configs)) == len(configs)
    assert configs == sorted(configs)  # documented order: lexicographic


def test_resnet20_order_matches_paper_table6():
    configs = enumerate_configs(10, 2)
    assert configs[0] == (1, 1, 8) and configs[1] == (1, 2, 7) and configs[23] == (4, 3, 3)
    assert configs[28] == (5, 3, 2) and configs[33] == (7, 1, 2) and configs[35] == (8, 1, 1)


def test_helpers_and_bad_input():
    assert parse_config("5,3,2") == parse_config("5-3-2") == parse_config("[5, 3, 2]") == (5, 3, 2)
    assert format_config((5, 3, 2)) == "5-3-2"
    assert config_to_resolutions((2, 1, 2)) == [0, 0, 1, 2, 2]
    assert pool_positions((4, 3, 3)) == [4, 7]
    with pytest.raises(ValueError, match="num_pools"):
        enumerate_configs(3, 3)
    with pytest.raises(TypeError, match="num_layers"):
        enumerate_configs(3.0, 1)
    with pytest.raises(ValueError, match="config_blocks"):
        parse_config("5,x")
    with pytest.raises(ValueError, match="backbone"):
        space_for("vgg")
    with pytest.raises(ValueError, match="config"):
        PoolingResNet("resnet20", widths=(2, 2, 2))(torch.zeros(1, 3, 8, 8), config=(5, 3, 3))


def reference_forward(net: PoolingResNet, x, config):
    """Independent reference: walk the layers, max-pool where the level of the layer rises."""
    levels = config_to_resolutions(config)
    x = net.stem(x)
    for i, layer in enumerate(net.layers):
        if i > 0 and levels[i] != levels[i - 1]:
            x = F.max_pool2d(x, 2, ceil_mode=True)
        x = layer(x)
    return net.head(x.mean(dim=(2, 3))), x.shape[-1]


@pytest.mark.parametrize("backbone", ["resnet20", "resnet18_imagenet"])
def test_supernet_runs_every_config_with_same_parameters(backbone):
    torch.manual_seed(0)
    widths = (4, 8, 16) if backbone == "resnet20" else (4, 4, 8, 8)
    net = PoolingResNet(backbone, num_classes=3, widths=widths).eval()
    size = 8 if backbone == "resnet20" else 32
    x = torch.randn(2, 3, size, size)
    space = net.space
    n_params = sum(p.numel() for p in net.parameters())
    for config in space.configs:
        out = net(x, config)
        ref, final = reference_forward(net, x, config)
        torch.testing.assert_close(out, ref)
        assert final == size // (2 ** space.num_pools) // (4 if backbone.endswith("imagenet") else 1)
        fixed = resnet_from_blocks(backbone, config, num_classes=3, widths=widths)
        assert sum(p.numel() for p in fixed.parameters()) == n_params


def test_resnet20_widths_by_layer_index():
    net = PoolingResNet("resnet20")
    assert net.layer_channels == [16] * 4 + [32] * 3 + [64] * 3
    assert abs(sum(p.numel() for p in net.parameters()) - 0.27e6) < 0.02e6  # ResNet20 ~0.27M


def test_mixture_weight_sets_are_independent():
    torch.manual_seed(0)
    sn = PoolingSupernet("resnet20", num_classes=3, num_weight_sets=3, widths=(2, 4, 4))
    x = torch.randn(2, 3, 8, 8)
    out = sn(x, config=(5, 3, 2), weight_set=1)
    torch.testing.assert_close(out, sn.nets[1](x, (5, 3, 2)))
    out.sum().backward()
    assert all(p.grad is None for p in sn.nets[0].parameters())
    assert all(p.grad is not None for p in sn.nets[1].parameters())
    with pytest.raises(ValueError, match="weight_set"):
        sn(x, weight_set=3)


def test_registered_models():
    import poolarch.search  # noqa: F401  (registers)
    from poolarch.models import create_model

    net = create_model("resnet20_blocks", num_classes=4, config_blocks=(5, 3, 2), widths=(2, 4, 4))
    assert net.config == (5, 3, 2)
    sn = create_model("resnet20_supernet", num_classes=4, num_weight_sets=2, widths=(2, 4, 4))
    assert sn.num_weight_sets == 2
    with pytest.raises(ValueError, match="pool"):
        create_model("resnet20_blocks", pool="dynopool")
    # "human" is the search space's max-pooling; "strided" cannot follow a moving pooling position
    assert isinstance(net.pools[0], torch.nn.MaxPool2d) and net.pool == "max"
    assert create_model("resnet20_supernet", pool="avg", widths=(2, 4, 4)).nets[0].pool == "avg"
    for name in ("resnet20_blocks", "resnet20_supernet", "resnet20_multires_supernet"):
        with pytest.raises(ValueError, match=r"pool must be one of \['human', 'max', 'avg'\], got 'strided'"):
            create_model(name, pool="strided", widths=(2, 4, 4))


@pytest.mark.parametrize("backbone,reference", [("resnet18_imagenet", "resnet18"), ("resnet50_imagenet", "resnet50")])
def test_imagenet_backbones_have_torchvision_parameter_counts(backbone, reference):
    """Strided convolutions replaced by pooling: same layers, hence exactly torchvision's parameters."""
    import torchvision

    ours = PoolingResNet(backbone, num_classes=101)
    theirs = getattr(torchvision.models, reference)(weights=None, num_classes=101)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
