"""``poolarch`` command line: flag/YAML merging, train -> eval -> report, resume (bad input:
tests/test_cli_errors.py)."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch
import yaml

from poolarch.cli import build_parser, config_from_args, main
from poolarch.train import run_status

torch.set_num_threads(1)

TINY = ["--model", "vgg_small", "--pool", "dynopool", "--dataset", "random", "--image-size", "16",
        "--num-classes", "4", "--limit", "32", "--batch-size", "8", "--max-eval-steps", "2", "--quiet"]


def run_cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# bad input (one line, exit 2, no run directory): tests/test_cli_errors.py


def test_flags_override_yaml(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"model": "resnet20_blocks", "lr": 0.3, "epochs": 7, "lambda": "2.2e-4",
                                    "model_args": {"width": 0.5}, "method_args": {"prune_epoch": 3}}))
    args = build_parser().parse_args(
        ["train", "--config", str(path), "--lr", "0.01", "--resolutions", "3", "--config-blocks", "5,3,2",
         "--prune-threshold", "0.1", "--one-res", "--amp", "--seed", "9"]
    )
    cfg = config_from_args(args)
    assert cfg.model == "resnet20_blocks" and cfg.epochs == 7  # from the file
    assert cfg.lr == 0.01 and cfg.seed == 9 and cfg.amp is True  # flags win
    assert cfg.lambda_ == pytest.approx(2.2e-4)  # YAML 1.1 "2.2e-4" string parsed as a number
    assert cfg.model_args == {"width": 0.5, "resolutions": 3, "config_blocks": [5, 3, 2]}
    assert cfg.method_args == {"prune_epoch": 3, "prune_threshold": 0.1, "one_res": True}


def test_train_eval_report_and_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, out, err = run_cli(capsys, "train", *TINY, "--epochs", "2", "--out", str(run_dir), "--stop-after-epochs", "1")
    assert status == 0, err
    assert run_status(run_dir) == "incomplete"
    status, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--lr", "0.3")
    assert status == 2 and "--lr" in err  # resume uses the run's own config
    status, out, err = run_cli(capsys, "train", "--resume", str(run_dir), "--quiet")
    assert status == 0, err
    assert run_status(run_dir) == "finished"
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]

    status, out, err = run_cli(capsys, "eval", str(run_dir), "--checkpoint", "last")
    assert status == 0, err
    printed = dict(line.split(": ", 1) for line in out.strip().splitlines())
    # evaluating the saved last checkpoint reproduces the metrics the run logged for that epoch
    assert float(printed["test_top1"]) == pytest.approx(float(rows[-1]["test_top1"]), abs=1e-3)
    assert float(printed["gmacs"]) == pytest.approx(float(rows[-1]["gmacs"]), rel=1e-3)
    assert printed["sizes"] == rows[-1]["sizes"]

    status, out, err = run_cli(capsys, "report", str(run_dir), "--out", str(tmp_path / "rep"))
    assert status == 0, err
    assert (tmp_path / "rep" / "report.md").is_file()
    # a folder of runs (e.g. a sweep) expands to its runs
    status, out, err = run_cli(capsys, "report", str(tmp_path), "--out", str(tmp_path / "rep2"))
    assert status == 0, err
    assert "| run |" in (tmp_path / "rep2" / "report.md").read_text()
    status, _, err = run_cli(capsys, "report", str(tmp_path / "nothing"))
    assert status == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    status, _, err = run_cli(capsys, "report", str(tmp_path / "empty"))
    assert status == 2 and "metrics.csv is missing" in err


def test_existing_run_dir_needs_overwrite(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--epochs", "1", "--max-steps-per-epoch", "1", "--out", str(run_dir))[0] == 0
    status, _, err = run_cli(capsys, "train", *TINY, "--epochs", "1", "--out", str(run_dir))
    assert status == 2 and "already holds a run" in err
    assert run_status(run_dir) == "finished"  # untouched


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "poolarch", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "--target-gmacs" in proc.stdout and "--config-blocks" in proc.stdout
