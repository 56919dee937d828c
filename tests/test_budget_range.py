"""``target_gmacs`` reachability: the range the learnable scales can give, the up-front error,
the projection respecting ``max_scale`` and ``budget_met`` in ``result.yaml``."""
from __future__ import annotations

import pytest
import torch
import yaml

from poolarch.complexity import count_macs
from poolarch.methods.budget import check_reachable, distinct_resizers, project_to_budget, reachable_gmacs
from poolarch.models import create_model
from poolarch.train import TrainConfig, Trainer, train

torch.set_num_threads(1)
X = torch.zeros(1, 1, 16, 16)


def _model():
    return create_model("vgg_small", num_classes=4, pool="dynopool", in_chans=1, width=0.25).eval()


def _gmacs_at(model, scale: float) -> float:
    for m in distinct_resizers(model):
        m.set_scale([scale] * m.ndim)
    return count_macs(model, X).total / 1e9


def test_range_matches_count_macs_at_the_extreme_scales():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    low, high = reachable_gmacs(model, lambda: count_macs(model, X).total / 1e9, max_scale=2.0)
    # the parameters are restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert low == pytest.approx(_gmacs_at(_model(), 1e-3), rel=1e-12)  # every map at its 2-pixel minimum
    assert high == pytest.approx(_gmacs_at(_model(), 2.0), rel=1e-12)
    assert low < count_macs(model, X).total / 1e9 < high
    no_cap = reachable_gmacs(model, lambda: count_macs(model, X).total / 1e9, max_scale=None)
    assert no_cap == (low, float("inf"))


@pytest.mark.parametrize("target", [1e-9, 100.0])
def test_unreachable_target_names_the_range(target):
    with pytest.raises(ValueError, match=r"target_gmacs .* is out of reach: .* give 0\.001 to 4 GMACs.*max_scale 2"):
        check_reachable(target, 0.001, 4.0, 0.05, 2.0)
    check_reachable(0.00096, 0.001, 4.0, 0.05, 2.0)  # within tolerance of the minimum: reachable
    check_reachable(4.1, 0.001, 4.0, 0.05, 2.0)


def test_projection_never_exceeds_the_cap():
    model = _model()
    high = _gmacs_at(_model(), 2.0)
    # a target far above what the cap allows: the bisection pushes the factor up, the cap holds
    project_to_budget(model, lambda: count_macs(model, X).total / 1e9, 10 * high, 0.05, max_scale=2.0)
    scales = torch.cat([m.scale.detach() for m in distinct_resizers(model)])
    assert scales.max().item() <= 2.0 + 1e-6
    model = _model()
    project_to_budget(model, lambda: count_macs(model, X).total / 1e9, 10 * high, 0.05)
    assert torch.cat([m.scale.detach() for m in distinct_resizers(model)]).max().item() > 2.0  # no cap: it grows


def test_trainer_refuses_unreachable_target_before_writing(tmp_path):
    cfg = TrainConfig(model="vgg_small", model_args={"width": 0.25}, dataset="random", image_size=16, num_classes=4,
                      in_chans=1, limit=16, batch_size=8, epochs=1, target_gmacs=100.0, out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="out of reach"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()


def test_result_records_whether_the_budget_was_met(tmp_path):
    initial = count_macs(_model(), X).total / 1e9
    # one step: the budget projects at once, but 1.0x the start with tolerance 0 is met only by luck;
    # a target between two integer-size architectures is missed -> budget_met false, with a warning
    cfg = TrainConfig(model="vgg_small", model_args={"width": 0.25}, dataset="random", image_size=16, num_classes=4,
                      in_chans=1, limit=8, batch_size=8, epochs=1, max_eval_steps=1, val_fraction=0.0,
                      target_gmacs=initial * 1.013, target_tolerance=0.0, out=str(tmp_path / "run"))
    result = train(cfg)
    saved = yaml.safe_load((result.run_dir / "result.yaml").read_text())
    assert saved["target_gmacs"] == pytest.approx(initial * 1.013)
    assert saved["final_gmacs"] == pytest.approx(float(result.final["gmacs"]))
    assert saved["budget_met"] is (saved["final_gmacs"] == saved["target_gmacs"])
    assert saved["budget_met"] is False


def test_climb_stops_once_the_target_is_reachable():
    model = _model()
    sizes: list[int] = []

    def measure() -> float:
        gmacs = count_macs(model, X).total / 1e9
        sizes.append(max(m.output_size((16, 16))[0] for m in distinct_resizers(model)))
        return gmacs

    start = count_macs(model, X).total / 1e9
    low, high = reachable_gmacs(model, measure, max_scale=2.0, stop_above=1.1 * start)
    assert high >= 1.1 * start and high < _gmacs_at(_model(), 2.0)  # stopped before the cap
    assert len(sizes) < 10
