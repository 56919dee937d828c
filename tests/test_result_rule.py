"""One rule for a run's result (its last epoch, ``last.pt``): the training summary, ``result.yaml``,
``poolarch report``, ``eval`` and ``export`` name the same checkpoint and epoch and agree on its
numbers; the budget controller's signed multiplier is not logged as ``lambda``."""
from __future__ import annotations

import csv
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from poolarch.cli import main
from poolarch.complexity import format_gmacs

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "vgg_small", "--pool", "dynopool", "--dataset", "random", "--image-size", "16",
        "--num-classes", "4", "--limit", "48", "--batch-size", "8", "--max-eval-steps", "2", "--epochs", "3",
        "--val-fraction", "0.25", "--quiet"]


def _cli(capsys, *argv) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    """A tiny run under a GMACs budget (the controller moves its multiplier, the scales move)."""
    out = tmp_path_factory.mktemp("rule") / "run"
    assert main(["train", *TINY, "--target-gmacs", "0.0005", "--lr", "0.5", "--scale-lr", "0.5",
                 "--out", str(out)]) == 0
    return out


def test_summary_result_yaml_eval_export_and_report_agree(budget_run, tmp_path, capsys):
    result = yaml.safe_load((budget_run / "result.yaml").read_text())
    with open(budget_run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert result["checkpoint"] == "last.pt" and result["epoch"] == 3 == result["final"]["epoch"]
    assert float(rows[-1]["gmacs"]) == pytest.approx(result["final"]["gmacs"])  # study.py reads both

    # the training summary of a (new, identical) run names the result and its numbers
    out = _cli(capsys, "train", *TINY, "--target-gmacs", "0.0005", "--lr", "0.5", "--scale-lr", "0.5",
               "--out", str(tmp_path / "again"))
    summary = [line for line in out.splitlines() if line.startswith("result:")]
    assert summary and summary[0].startswith("result: last.pt (epoch 3): ")
    assert f"GMACs {format_gmacs(result['final']['gmacs'])}" in summary[0]

    out = _cli(capsys, "eval", str(budget_run))
    assert out.splitlines()[0] == "result: last.pt (epoch 3)"
    printed = dict(line.split(": ", 1) for line in out.strip().splitlines()[1:])
    assert printed["checkpoint"] == "last" and printed["epoch"] == "3"
    assert float(printed["test_top1"]) == pytest.approx(result["final"]["test_top1"], abs=1e-3)
    assert float(printed["gmacs"]) == pytest.approx(result["final"]["gmacs"], rel=1e-4)
    assert printed["sizes"] == result["final"]["sizes"]

    out = _cli(capsys, "export", str(budget_run), "--out", str(tmp_path / "m.pt2"))
    assert out.splitlines()[0] == "result: last.pt (epoch 3)"

    out = _cli(capsys, "eval", str(budget_run), "--checkpoint", "best")
    best = result["best"]["epoch"]
    assert out.splitlines()[0].startswith(f"checkpoint: best.pt (epoch {best}; ") and "not the run's result" in out

    _cli(capsys, "report", str(budget_run), "--out", str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "the last epoch (`last.pt`)" in md
    row = next(line for line in md.splitlines() if line.startswith("| run |"))
    assert f"| {format_gmacs(result['final']['gmacs'])} |" in row and "| 3/3 |" in row
    assert f"| {result['final']['test_top1']:.2f} |" in row


def test_budget_multiplier_is_not_called_lambda(budget_run, tmp_path):
    final = yaml.safe_load((budget_run / "result.yaml").read_text())["final"]
    assert "budget_multiplier" in final and "lambda" not in final
    with open(budget_run / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    assert "budget_multiplier" in header and "lambda" not in header
    # a fixed lambda is logged as the user's lambda (>= 0)
    out = tmp_path / "fixed"
    assert main(["train", *TINY, "--epochs", "1", "--lambda", "0.3", "--out", str(out)]) == 0
    final = yaml.safe_load((out / "result.yaml").read_text())["final"]
    assert final["lambda"] == 0.3 and "budget_multiplier" not in final


def test_study_reads_the_result(budget_run):
    spec = importlib.util.spec_from_file_location("study_rule", ROOT / "benchmarks" / "study.py")
    study = importlib.util.module_from_spec(spec)
    sys.modules["study_rule"] = study
    spec.loader.exec_module(study)
    final = study.read_result(budget_run)
    assert final["epoch"] == 3 and final["gmacs"] > 0
    assert study.read_metrics(budget_run)[-1]["epoch"] == "3"


def test_report_heading_is_true_for_best(budget_run, tmp_path):
    from poolarch.report import make_report

    md = make_report([budget_run], tmp_path / "best", select="best").read_text()
    assert re.search(r"best validation \(else test\) epoch \(`best.pt`\): not the runs' results", md)


def test_demo_prints_a_line_before_each_run_and_the_next_step(monkeypatch, tmp_path, capsys):
    """A piped demo log shows each run starting before its epochs, and ends with the next command."""
    import poolarch.cli.train as cli_train

    calls = []

    def fake_train(cfg, **kwargs):
        calls.append(cfg.pool)
        label = "max-pool" if cfg.pool == "max" else "DynOPool"
        assert capsys.readouterr().out.splitlines()[-1].startswith(f"== {label}: training")
        row = {"epoch": cfg.epochs, "test_top1": 90.0, "gmacs": 0.002584, "sizes": "28x28 14x14", "scales": ""}
        return type("R", (), {"final": row})()

    monkeypatch.setattr(cli_train, "train", fake_train)
    cli_train.run_demo(out_root=tmp_path / "demo", quiet=True)
    out = capsys.readouterr().out.splitlines()
    assert calls == ["max", "dynopool"]
    assert out[-1] == (f"next: poolarch report {tmp_path / 'demo' / 'max'} {tmp_path / 'demo' / 'dynopool'} "
                       f"--out {tmp_path / 'demo' / 'report'}")
    assert "result of each run: last.pt (epoch 6)" in out
