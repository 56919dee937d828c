"""``poolarch`` command line: bad input (one line, exit 2, no run directory), flag/YAML merging,
train -> eval -> report, resume."""
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


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--model", "nope"], ["model must be one of", "vgg16_cifar", "'nope'"]),
        (["--dataset", "nope"], ["dataset must be one of", "cifar100", "'nope'"]),
        (["--variant", "squash"], ["variant must be one of", "stretch-v", "'squash'"]),
        (["--method", "nope"], ["method must be one of", "plain", "'nope'"]),
        (["--pool", "nope", "--dataset", "random"], ["pool must be one of", "dynopool", "'nope'"]),
        (["--lambda", "-0.1"], ["lambda must be >= 0"]),
        (["--dataset", "cifar10", "--data-root", "{tmp}/missing"], ["cifar-10-batches-py", "missing"]),
        (["--dataset", "random", "--out", "{tmp}/afile/run"], ["not writable", "afile"]),
        (["--schedule", "linear"], ["schedule must be one of", "cosine", "'linear'"]),
    ],
    ids=["model", "dataset", "variant", "method", "pool", "lambda", "data-folder", "out", "schedule"],
)
def test_bad_input_one_line_exit_2_no_run_dir(tmp_path, capsys, argv, fragments):
    (tmp_path / "afile").write_text("not a directory")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out_dir = tmp_path / "run"
    args = ["train", "--out", str(out_dir), "--model", "vgg_small", "--quiet"] + argv
    status, out, err = run_cli(capsys, *args)
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("poolarch train: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not out_dir.exists()


def test_unknown_config_key(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("lr: 0.1\nlearning_rate: 0.2\n")
    status, _, err = run_cli(capsys, "train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert status == 2
    assert "unknown config key 'learning_rate'" in err and "scale_lr" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_argparse_errors_also_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "many"])
    assert info.value.code == 2


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
