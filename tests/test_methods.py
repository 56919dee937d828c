"""The method interface of the engine (poolarch.methods): a custom method plugged into the loop is
called as documented (RunInfo once, lr_scale, extra losses, after_step after each optimiser step,
log_values columns); resizers' clamp_scale_/rescale_ against closed forms; ``plain`` resolving to
``dynopool`` for old configurations; the registries; search methods stating their own needs."""
from __future__ import annotations

import csv

import math

import pytest
import torch
from torch import nn

from poolarch._registry import Registry
from poolarch.data import DATASETS, VARIANTS, list_datasets, list_variants
from poolarch.layers import DiffStride2d, DynOPool2d, ShapeAdaptor2d
from poolarch.methods import (METHODS, DynOPoolMethod, Method, PlainMethod, RunInfo, SearchMethod, list_methods,
                              register_method, search_methods)
from poolarch.methods.budget import distinct_resizers, project_to_budget
from poolarch.models import create_model
from poolarch.train import TrainConfig, Trainer
from poolarch.train.build import build_method
from poolarch.train.task import TASKS, list_tasks

torch.set_num_threads(1)


def tiny(tmp_path, **overrides) -> TrainConfig:
    settings = dict(model="vgg_small", model_args={"width": 0.25}, pool="max", dataset="random", image_size=8,
                    num_classes=3, in_chans=1, limit=48, batch_size=8, epochs=2, max_steps_per_epoch=3,
                    max_eval_steps=1, lr=0.05, schedule="constant", val_fraction=0.0, device="cpu",
                    progress=False, out=str(tmp_path / "run"), seed=0)
    settings.update(overrides)
    return TrainConfig(**settings)


# -- a custom method in the engine -------------------------------------------------------------------
BOUND = 0.02


@register_method("_test_probe")
class ProbeMethod(Method):
    """Own param groups (weights at half the lr via lr_scale), an extra loss, an after_step that
    bounds every weight, and a logged value."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.runs: list[RunInfo | None] = []
        self.steps: list[int] = []
        self.grad_seen: list[bool] = []

    def setup(self, model, example_input, run=None):
        super().setup(model, example_input, run)
        self.runs.append(run)

    def param_groups(self, model):
        return [{"params": list(model.parameters()), "lr": self.lr, "weight_decay": 0.0, "name": "probe"}]

    def lr_scale(self, group_name):
        return 0.5 if group_name == "probe" else 1.0

    def extra_losses(self, model):
        return {"const": torch.tensor(2.0)}

    def after_step(self, model, step):
        self.steps.append(step)
        # called after the optimiser step: the gradients of this step are still there
        self.grad_seen.append(all(p.grad is not None for p in model.parameters()))
        with torch.no_grad():
            for p in model.parameters():
                p.clamp_(-BOUND, BOUND)

    def log_values(self):
        return {"probe_steps": len(self.steps)}


def test_custom_method_hooks_are_called_as_documented(tmp_path):
    trainer = Trainer(tiny(tmp_path, method="_test_probe"))
    method = trainer.method
    assert isinstance(method, ProbeMethod)
    # the run's length reaches the method once, in setup
    assert method.runs == [RunInfo(epochs=2, steps_per_epoch=3, world_size=1)]
    assert method.runs[0].total_steps == 6
    result = trainer.fit()
    assert method.runs == [RunInfo(epochs=2, steps_per_epoch=3, world_size=1)]
    # after_step once per optimiser step, in order, after the step (grads present)
    assert method.steps == list(range(6)) and all(method.grad_seen)
    # the method's own group, at the scheduled lr times its lr_scale
    (group,) = trainer.optimizer.param_groups
    assert group["name"] == "probe" and group["lr"] == pytest.approx(0.05 * 0.5)
    # the after_step projection holds at the end (SGD alone would leave the bound)
    assert max(float(p.detach().abs().max()) for p in trainer.model.parameters()) <= BOUND
    # the extra loss is part of the optimised loss and logged by name
    row = result.final
    assert row["train_loss"] == pytest.approx(row["train_task_loss"] + 2.0, rel=1e-6)
    assert row["train_loss_const"] == pytest.approx(2.0)
    # log_values: a column right after the architecture columns
    with open(trainer.run_dir / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert header[header.index("scales") + 1] == "probe_steps"
    assert [r["probe_steps"] for r in result.history] == [3, 6]
    assert "lambda" not in header  # the engine adds nothing method-specific


def test_resume_gives_run_info_again(tmp_path):
    cfg = tiny(tmp_path, method="_test_probe")
    Trainer(cfg).fit(stop_after_epochs=1)
    resumed = Trainer(resume=tmp_path / "run")
    assert resumed.method.runs == [RunInfo(epochs=2, steps_per_epoch=3, world_size=1)]
    resumed.fit()
    assert resumed.method.steps == [3, 4, 5]  # steps keep counting from the checkpoint


def test_run_info_rejects_bad_lengths():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        RunInfo(epochs=2, steps_per_epoch=0)
    with pytest.raises(ValueError, match="epochs"):
        RunInfo(epochs=True, steps_per_epoch=2)


# -- resizers: clamp_scale_ and rescale_ ------------------------------------------------------------
def test_dynopool_clamp_and_rescale_closed_form():
    pool = DynOPool2d(init_scale=(0.5, 0.25))
    with torch.no_grad():
        pool.alpha.copy_(torch.tensor([0.3, 4.0]))  # r = (3.33, 0.25)
    pool.clamp_scale_(2.0)
    torch.testing.assert_close(pool.alpha.detach(), torch.tensor([0.5, 4.0]))  # r = (2, 0.25)
    pool.rescale_(0.5)
    torch.testing.assert_close(pool.scale.detach(), torch.tensor([1.0, 0.125]))
    with pytest.raises(ValueError, match="max_scale"):
        pool.clamp_scale_(0.0)


def test_shape_adaptor_logit_is_never_clamped_as_an_inverse_scale():
    """Regression: a clamp ``alpha >= 1/max_scale`` on Shape Adaptor's logit moved a negative logit
    (ratio ~0.51) to 0.5 (ratio ~0.81). The adaptor's clamp bounds its *ratio* instead."""
    sa = ShapeAdaptor2d(init_ratio=0.51)
    before = sa.alpha.detach().clone()
    assert float(before) < 0
    sa.clamp_scale_(2.0)  # the ratio is at most r2 = 1 < 2: nothing to do
    assert torch.equal(sa.alpha.detach(), before)
    sa.clamp_scale_(0.75)  # a real bound: 0.51 <= 0.75 is kept
    assert torch.equal(sa.alpha.detach(), before)
    with torch.no_grad():
        sa.alpha.fill_(3.0)  # ratio 0.5 + 0.5 * sigmoid(3) = 0.976
    sa.clamp_scale_(0.75)
    assert float(sa.ratio) == pytest.approx(0.75, abs=1e-6)  # logit clamped from above only
    with pytest.raises(ValueError, match="max_scale"):
        sa.clamp_scale_(0.4)  # below r1: unreachable
    with pytest.raises(NotImplementedError, match="rescale"):
        sa.rescale_(0.5)


def test_diffstride_clamp_bounds_the_scale():
    ds = DiffStride2d(init_stride=(1.5, 3.0))
    before = ds.stride_raw.detach().clone()
    ds.clamp_scale_(2.0)  # r = 1/S < 1 <= 2
    assert torch.equal(ds.stride_raw.detach(), before)
    ds.clamp_scale_(0.5)  # S >= 2
    torch.testing.assert_close(ds.stride.detach(), torch.tensor([2.0, 3.0]), atol=1e-5, rtol=0)
    with pytest.raises(NotImplementedError, match="rescale"):
        ds.rescale_(0.5)


def test_shared_scales_are_rescaled_once():
    first = DynOPool2d(init_scale=0.5)
    second = DynOPool2d(share_scale_with=first)
    model = nn.Sequential(first, second)
    assert distinct_resizers(model) == [first]
    factor, _ = project_to_budget(model, lambda: float(first.scale[0]), target=0.25, tolerance=0.01)
    assert float(first.scale[0]) == pytest.approx(0.25, rel=0.01)  # one common factor, applied once
    assert factor == pytest.approx(2.0, rel=0.01)


def test_projection_refines_single_axes_when_the_common_factor_steps_over_the_target():
    # two independent 8x8 -> 4x4 layers: "GMACs" = the sum of their output areas. One common factor
    # moves all four sizes at once (32 -> 50 over target 40, 20-25% steps); single-axis moves land
    # on 40 exactly
    layers = [DynOPool2d(init_scale=0.5), DynOPool2d(init_scale=0.5)]
    model = nn.Sequential(*layers)

    def measure() -> float:
        return float(sum(math.prod(m.output_size((8, 8))) for m in layers))

    common = [measure()]
    for r in (0.45, 0.5, 0.55, 0.6, 0.65):  # what any common factor can reach around the target
        for m in layers:
            m.set_scale([r, r])
        common.append(measure())
    assert min(abs(g / 40 - 1) for g in common) > 0.05
    for m in layers:
        m.set_scale([0.5, 0.5])
    _, gmacs = project_to_budget(model, measure, target=40.0, tolerance=0.05)
    assert gmacs == measure() == 40.0  # e.g. 4x4 + 6x4 or 5x4 + 5x4


def test_projection_refinement_respects_max_scale():
    layer = DynOPool2d(init_scale=0.5)
    model = nn.Sequential(layer)
    measure = lambda: float(math.prod(layer.output_size((8, 8))))  # noqa: E731
    _, gmacs = project_to_budget(model, measure, target=100.0, tolerance=0.05, max_scale=0.6)
    assert float(layer.scale.max()) <= 0.6 + 1e-6 and gmacs == measure() == 25.0  # 5x5: the cap


@pytest.mark.parametrize("pool", ["shape_adaptor", "diffstride", "dynopool"])
def test_dynopool_method_after_step_goes_through_the_resizers(pool):
    model = create_model("vgg_small", num_classes=3, pool=pool, in_chans=1, width=0.25)
    method = DynOPoolMethod(max_scale=2.0)
    method.setup(model.eval(), torch.zeros(1, 1, 16, 16), RunInfo(epochs=1, steps_per_epoch=1))
    arch = {n: p for n, p in model.named_parameters() if n.endswith(("alpha", "stride_raw"))}
    with torch.no_grad():
        for p in arch.values():
            p.fill_(-0.5 if pool == "shape_adaptor" else 0.1)  # DynOPool: r = 10 > 2
    before = {n: p.detach().clone() for n, p in arch.items()}
    method.after_step(model, 0)
    for name, p in arch.items():
        if pool == "dynopool":
            torch.testing.assert_close(p.detach(), torch.full_like(p, 0.5))  # r clamped to 2
        else:
            assert torch.equal(p.detach(), before[name]), name


# -- "plain" with learnable resizers ------------------------------------------------------------------
def test_plain_resolves_to_dynopool_for_learnable_resizers():
    dyn = create_model("vgg_small", num_classes=3, pool="dynopool", in_chans=1, width=0.25)
    fixed = create_model("vgg_small", num_classes=3, pool="max", in_chans=1, width=0.25)
    cfg = TrainConfig(method="plain", pool="dynopool", lambda_=0.3, max_scale=1.5)
    method = build_method(cfg, dyn)
    assert type(method) is DynOPoolMethod and method.lambda_ == 0.3 and method.max_scale == 1.5
    assert type(build_method(cfg, fixed)) is PlainMethod
    with pytest.raises(ValueError, match="target_gmacs adjusts DynOPool scales"):
        build_method(TrainConfig(method="plain", pool="max", target_gmacs=1.0), fixed)


def test_plain_config_with_dynopool_trains_like_the_dynopool_method(tmp_path):
    """Old configurations (method plain, pool dynopool) and method dynopool: the same run."""
    common = dict(pool="dynopool", lambda_=0.5, scale_lr=0.05, epochs=1)
    a = Trainer(tiny(tmp_path, method="plain", out=str(tmp_path / "a"), **common))
    b = Trainer(tiny(tmp_path, method="dynopool", out=str(tmp_path / "b"), **common))
    ra, rb = a.fit(), b.fit()
    assert a.method.name == b.method.name == "dynopool"
    for (na, pa), (nb, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert na == nb and torch.equal(pa, pb), na
    assert ra.final["train_loss_gmacs"] == rb.final["train_loss_gmacs"] > 0
    assert a.run.read_config().method == "plain"  # the run directory keeps what was asked for


# -- registries ---------------------------------------------------------------------------------------
def test_every_named_thing_lives_in_one_registry_class():
    for registry, lister, kind in ((METHODS, list_methods, "method"), (TASKS, list_tasks, "task"),
                                   (DATASETS, list_datasets, "dataset"), (VARIANTS, list_variants, "variant")):
        assert isinstance(registry, Registry) and registry.kind == kind
        assert lister() == registry.names() and len(registry) > 1
        with pytest.raises(ValueError, match=rf"{kind} must be one of \[.*\], got 'nope'"):
            registry.get("nope")
        first = registry.names()[0]
        with pytest.raises(ValueError, match="already registered"):
            registry.register(first, registry.get(first))
    assert {"plain", "dynopool", "shape_adaptor", "multires"} <= set(list_methods())
    assert set(search_methods()) >= {"spos", "balanced-mixture", "darts", "mcts-ucb", "bse"}
    assert all(issubclass(METHODS.get(m), SearchMethod) for m in search_methods())
    assert not issubclass(METHODS.get("dynopool"), SearchMethod)


# -- search methods state what they need --------------------------------------------------------------
@register_method("_test_search")
class _TestSearch(SearchMethod):
    supernet = "multires_supernet"
    multiple_weight_sets = True
    default_num_models = 3
    epochs_per_weight_set = True


def test_search_config_reads_the_method_class():
    from poolarch.search import search_config

    cfg = search_config("_test_search", "resnet20", epochs=2)
    assert cfg.model == "resnet20_multires_supernet"
    assert cfg.epochs == 6 and cfg.model_args == {"num_weight_sets": 3}
    assert search_config("_test_search", "resnet20", epochs=2, scale_epochs=False).epochs == 2
    for name in ("spos", "bse", "mcts-ucb", "darts", "balanced-mixture"):
        cls = METHODS.get(name)
        cfg = search_config(name, "resnet20", epochs=1)
        assert cfg.model == f"resnet20_{cls.supernet}"
        assert cfg.epochs == (cls.default_num_models if cls.epochs_per_weight_set else 1)
    with pytest.raises(ValueError, match="num_models applies to .*balanced-mixture.*spos"):
        search_config("darts", "resnet20", num_models=2)
    with pytest.raises(ValueError, match="method must be one of"):
        search_config("dynopool", "resnet20")
