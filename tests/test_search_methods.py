"""Search methods on the common training engine (tiny supernets, 8x8 random data)."""
import numpy as np
import pytest
import torch
import yaml

import poolarch.search  # noqa: F401  (registers models and methods)
from poolarch.search.evaluate import evaluate_configuration, read_ranking
from poolarch.methods.search import BalancedMixture, batch_statistics
from poolarch.models.relaxed import MultiResolutionResNet
from poolarch.search.runner import run_search, search_config
from poolarch.models.supernet import PoolingSupernet
from poolarch.methods import RunInfo, list_methods

TINY = dict(dataset="random", image_size=8, num_classes=3, limit=48, batch_size=16, progress=False)


def tiny_search(tmp_path, method, **kwargs):
    cfg = search_config(method, "resnet20", epochs=1, model_args={"widths": [2, 4, 4]},
                        out=str(tmp_path / method),
                        **{"num_models": 2 if method == "balanced-mixture" else None, **TINY, **kwargs})
    rows = run_search(cfg, recalibration_batches=1)
    return cfg, rows


def test_methods_registered():
    assert {"spos", "balanced-mixture", "darts", "mcts-ucb", "bse"} <= set(list_methods())


@pytest.mark.parametrize("method", ["balanced-mixture", "spos", "darts", "mcts-ucb", "bse"])
def test_search_end_to_end(tmp_path, method):
    cfg, rows = tiny_search(tmp_path, method)
    run = tmp_path / method
    assert len(rows) == 36 and [r["rank"] for r in rows] == list(range(1, 37))
    accuracies = [r["accuracy"] for r in rows]
    assert all(0 <= a <= 100 for a in accuracies) and accuracies == sorted(accuracies, reverse=True)
    ranking = read_ranking(run)
    assert len(ranking) == 36
    top = yaml.safe_load((run / "topk.yaml").read_text())
    assert len(top["top"]) == 5 and top["configurations"] == 36
    if method == "balanced-mixture":
        assert cfg.epochs == 2  # training length proportional to M
        assert (run / "p_m_given_c.png").stat().st_size > 0
        p = np.loadtxt(run / "p_m_given_c.csv", delimiter=",", skiprows=1)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        # the evaluated weight set of each configuration is argmax_m p(m|c)
        by_config = {r["config"]: r["weight_set"] for r in rows}
        configs = ["-".join(map(str, c)) for c in poolarch.models.space.enumerate_configs(10, 2)]
        assert [by_config[c] for c in configs] == list(p.argmax(axis=1))


def test_eval_top_evaluates_only_k(tmp_path):
    cfg = search_config("spos", "resnet20", epochs=1, model_args={"widths": [2, 4, 4]},
                        out=str(tmp_path / "s"), **TINY)
    rows = run_search(cfg, eval_top=4, recalibration_batches=0)
    evaluated = [r for r in rows if r["accuracy"] is not None]
    assert len(evaluated) == 4 and rows[:4] == evaluated
    proxies = sorted((r["proxy"] for r in rows), reverse=True)
    assert sorted(r["proxy"] for r in evaluated) == sorted(proxies[:4])


def test_val_step_leaves_running_stats_and_updates_moving_average():
    torch.manual_seed(0)
    model = PoolingSupernet("resnet20", num_classes=3, num_weight_sets=2, widths=(2, 4, 4))
    method = BalancedMixture(beta=0.5)
    method.setup(model, torch.zeros(1, 3, 8, 8), RunInfo(epochs=1, steps_per_epoch=10))
    model.train()
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    method.forward(model, x)
    c, m = method.last
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method.val_step(model, x, y, torch.nn.functional.cross_entropy)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    with torch.no_grad(), batch_statistics(model):
        acc = (model(x, config=method.configs[c], weight_set=m).argmax(1) == y).float().mean().item()
    assert method.accuracy[c, m] == pytest.approx(0.5 * acc)
    assert method.accuracy.sum() == pytest.approx(0.5 * acc)


def test_darts_updates_only_alpha_in_val_step_and_single_path_matches():
    torch.manual_seed(0)
    model = MultiResolutionResNet("resnet20", num_classes=3, widths=(2, 4, 4), share_weights=False, same_init=False)
    from poolarch.methods.search import DARTS

    method = DARTS(arch_lr=0.1)
    method.setup(model, torch.zeros(1, 3, 8, 8))
    assert all(all(p is not a for a in model.arch_parameters()) for p in method.param_groups(model)[0]["params"])
    weights = {k: v.clone() for k, v in model.state_dict().items() if "alpha" not in k}
    alpha_before = [a.detach().clone() for a in model.arch_parameters()]
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    method.val_step(model, x, y, torch.nn.functional.cross_entropy)
    assert any(not torch.equal(a, b) for a, b in zip(model.arch_parameters(), alpha_before))
    for k, v in model.state_dict().items():
        if "alpha" not in k:
            torch.testing.assert_close(v, weights[k])
    # the single path of a configuration equals the relaxed network with one-hot mixing weights
    model.eval()
    config = (5, 3, 2)
    levels = poolarch.models.space.config_to_resolutions(config)[1:]
    with torch.no_grad():
        for block, level in zip(model.blocks, levels):
            block.alpha.fill_(-1e4)
            block.alpha[level] = 1e4
        torch.testing.assert_close(model(x), model(x, config=config))


def test_evaluate_configuration_recalibrates_batch_norm():
    torch.manual_seed(0)
    model = PoolingSupernet("resnet20", num_classes=3, widths=(2, 4, 4))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))
    loader = [(x, y)]
    acc = evaluate_configuration(model, (2, 3, 5), 0, loader, recalibration_loader=loader, recalibration_batches=1)
    # reference: every BN's running statistics = mean / unbiased variance of its input on that batch
    inputs = {}
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [m.register_forward_hook(lambda mod, args, out: inputs.__setitem__(mod, args[0].detach())) for m in norms]
    with torch.no_grad(), batch_statistics(model):
        model(x, config=(2, 3, 5))
    for h in hooks:
        h.remove()
    for m in norms:
        torch.testing.assert_close(m.running_mean, inputs[m].mean(dim=(0, 2, 3)))
        torch.testing.assert_close(m.running_var, inputs[m].var(dim=(0, 2, 3), unbiased=True))
    model.eval()
    with torch.no_grad():
        expected = 100.0 * (model(x, config=(2, 3, 5)).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(expected)


def test_search_resume_matches_uninterrupted(tmp_path):
    """The engine tells the method its length (tau schedule); a resumed search ends where an
    uninterrupted one does."""
    from poolarch.train import Trainer

    cfg = search_config("balanced-mixture", "resnet20", num_models=2, epochs=1, model_args={"widths": [2, 4, 4]},
                        method_args={"beta": 0.5}, out=str(tmp_path / "full"), **TINY)
    full = Trainer(cfg)
    assert full.method.total_steps == full.total_steps
    full.fit()
    part_cfg = search_config("balanced-mixture", "resnet20", num_models=2, epochs=1, model_args={"widths": [2, 4, 4]},
                             method_args={"beta": 0.5}, out=str(tmp_path / "part"), **TINY)
    part = Trainer(part_cfg)
    part.fit(stop_after_epochs=1)
    resumed = Trainer(resume=tmp_path / "part")
    resumed.fit()
    np.testing.assert_allclose(resumed.method.accuracy, full.method.accuracy)
    np.testing.assert_array_equal(resumed.method.visits, full.method.visits)


def test_cli_search_darts_not_shared_and_retrain_config(tmp_path, capsys):
    from poolarch.cli import main

    common = ["--dataset", "random", "--image-size", "8", "--num-classes", "3", "--limit", "32",
              "--batch-size", "16", "--epochs", "1", "--widths", "2,2,4", "--quiet"]
    assert main(["search", "--method", "darts", "--model-arg", "share_weights=false", "--model-arg",
                 "same_init=false", "--recalibration-batches", "0", "--top-k", "3",
                 "--out", str(tmp_path / "darts"), *common]) == 0
    cfg = yaml.safe_load((tmp_path / "darts" / "config.yaml").read_text())
    assert cfg["model"] == "resnet20_multires_supernet" and cfg["model_args"]["share_weights"] is False
    assert cfg["val_fraction"] == 0.5
    summary = yaml.safe_load((tmp_path / "darts" / "search.yaml").read_text())
    assert len(summary["darts_argmax_resolutions"]) == 10
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    # retrain the chosen configuration from scratch through `poolarch train`
    assert main(["train", "--model", "resnet20_blocks", "--pool", "max", "--config-blocks", "5,3,2",
                 "--dataset", "random", "--image-size", "8", "--num-classes", "3",
                 "--limit", "32", "--batch-size", "16", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "retrain")]) == 0
    cfg = yaml.safe_load((tmp_path / "retrain" / "config.yaml").read_text())
    assert cfg["model_args"]["config_blocks"] == [5, 3, 2]
    assert main(["search", "--method", "nope", "--out", str(tmp_path / "x"), *common]) == 2
    assert main(["search", "--method", "bse", "-M", "3", "--out", str(tmp_path / "x"), *common]) == 2


def test_val_step_running_statistics_option():
    torch.manual_seed(0)
    model = PoolingSupernet("resnet20", num_classes=3, num_weight_sets=1, widths=(2, 4, 4))
    method = BalancedMixture(beta=0.0, val_batch_norm="running")
    method.setup(model, torch.zeros(1, 3, 8, 8), RunInfo(epochs=1, steps_per_epoch=10))
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    model.train()
    method.forward(model, x)
    c, m = method.last
    method.val_step(model, x, y, torch.nn.functional.cross_entropy)
    assert model.training
    model.eval()
    with torch.no_grad():
        acc = (model(x, config=method.configs[c], weight_set=m).argmax(1) == y).float().mean().item()
    assert method.accuracy[c, m] == pytest.approx(acc)
    with pytest.raises(ValueError, match="val_batch_norm"):
        BalancedMixture(val_batch_norm="eval")


def test_config_blocks_retrains_from_backbone_or_supernet_names():
    """``--model resnet20_cifar --config-blocks 5,3,2`` builds the same plain network as
    ``resnet20_blocks``; a model without a block space is refused with the allowed names."""
    from types import SimpleNamespace

    from poolarch.complexity import count_macs
    from poolarch.models import create_model
    from poolarch.train import TrainConfig
    from poolarch.train.build import build_model

    data = SimpleNamespace(in_chans=3, num_classes=3)
    reference = create_model("resnet20_blocks", num_classes=3, pool="max", config_blocks=[5, 3, 2], widths=[2, 4, 4])
    for name in ("resnet20_cifar", "resnet20_supernet", "resnet20_blocks"):
        cfg = TrainConfig(model=name, pool="max", model_args={"config_blocks": [5, 3, 2], "widths": [2, 4, 4]})
        net = build_model(cfg, data)
        assert type(net) is type(reference)
        assert {k: v.shape for k, v in net.state_dict().items()} == {
            k: v.shape for k, v in reference.state_dict().items()}
        assert count_macs(net, (1, 3, 16, 16)).total == count_macs(reference, (1, 3, 16, 16)).total
    with pytest.raises(ValueError, match="config_blocks.*resnet20_blocks"):
        build_model(TrainConfig(model="vgg16_cifar", pool="max", model_args={"config_blocks": [5, 3, 2]}), data)
