"""Every bad input of the command line: exit status 2, exactly one stderr line
``poolarch <cmd>: error: ...`` naming the problem, no traceback, and no half-written run directory
(or one that ``--overwrite`` handles). Most cases run in-process; a few as real subprocesses."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from poolarch.cli import main
from poolarch.train import run_status

torch.set_num_threads(1)

TINY = ["--model", "vgg_small", "--model-arg", "width=0.25", "--pool", "dynopool", "--dataset", "random",
        "--image-size", "16", "--num-classes", "4", "--in-chans", "1", "--limit", "16", "--batch-size", "8",
        "--max-eval-steps", "1", "--max-steps-per-epoch", "1", "--epochs", "1", "--quiet"]


def _png(path: Path, color: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), (color, 0, 0)).save(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """``stopped``: a tiny run stopped after epoch 1 of 2 (has last.pt and best.pt); ``other``: a run
    of another model (its last.pt does not fit ``stopped``)."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", *TINY, "--epochs", "2", "--stop-after-epochs", "1", "--out", str(root / "stopped")]) == 0
    other = [a if a != "width=0.25" else "width=0.5" for a in TINY]
    assert main(["train", *other, "--epochs", "1", "--out", str(root / "other")]) == 0
    return root


def _setup(name: str, tmp: Path, runs: Path) -> None:
    """Files a case needs under ``tmp``."""
    (tmp / "afile").write_text("not a directory")
    if name.startswith("resume") or name.startswith("eval") or name.startswith("export"):
        shutil.copytree(runs / "stopped", tmp / "run")
    if name == "resume-zero-byte":
        (tmp / "run" / "last.pt").write_bytes(b"")
    elif name == "resume-truncated":
        data = (tmp / "run" / "last.pt").read_bytes()
        (tmp / "run" / "last.pt").write_bytes(data[: len(data) // 2])
    elif name == "resume-other-model":
        shutil.copy(runs / "other" / "last.pt", tmp / "run" / "last.pt")
    elif name == "eval-truncated-last":
        data = (tmp / "run" / "last.pt").read_bytes()
        (tmp / "run" / "last.pt").write_bytes(data[: len(data) // 3])
    elif name == "eval-zero-byte-best":
        (tmp / "run" / "best.pt").write_bytes(b"")
    elif name == "resume-not-a-run":
        (tmp / "run" / "config.yaml").unlink()
    elif name == "config-yaml-syntax":
        (tmp / "exp.yaml").write_text("lr: 0.1\nepochs: [3\n")
    elif name == "config-unknown-key":
        (tmp / "exp.yaml").write_text("lr: 0.1\nlearning_rate: 0.2\n")
    elif name == "config-not-mapping":
        (tmp / "exp.yaml").write_text("- lr\n- 0.1\n")
    elif name == "config-bad-value":
        (tmp / "exp.yaml").write_text("epochs: -3\n")
    elif name == "imagefolder-corrupt-image":
        for split in ("train", "test"):
            for c, color in (("a", 250), ("b", 10)):
                for i in range(2):
                    _png(tmp / "imgs" / split / c / f"{i}.png", color)
        (tmp / "imgs" / "train" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    elif name == "report-empty-dir":
        (tmp / "empty").mkdir()


# case id -> (argv, fragments of the error line); "{tmp}" is the case's temporary folder, the run
# directory of a train case is {tmp}/out
T = ["train", "--out", "{tmp}/out"]
CASES: dict[str, tuple[list[str], list[str]]] = {
    # names
    "unknown-model": (T + TINY + ["--model", "nope"], ["model must be one of", "vgg16_cifar", "'nope'"]),
    "unknown-dataset": (T + TINY + ["--dataset", "nope"], ["dataset must be one of", "cifar100", "'nope'"]),
    "unknown-variant": (T + TINY + ["--variant", "squash"], ["variant must be one of", "'squash'"]),
    "unknown-method": (T + TINY + ["--method", "nope"], ["method must be one of", "plain", "'nope'"]),
    "unknown-pool": (T + TINY + ["--pool", "nope"], ["pool must be one of", "dynopool", "'nope'"]),
    "unknown-schedule": (T + TINY + ["--schedule", "linear"], ["schedule", "cosine", "'linear'"]),
    "unknown-task": (T + TINY + ["--task", "detection"], ["task", "classification", "'detection'"]),
    "unknown-device": (T + TINY + ["--device", "tpu"], ["device", "'tpu'"]),
    # numbers
    "epochs-zero": (T + TINY + ["--epochs", "0"], ["epochs must be", ">= 1", "0"]),
    "epochs-negative": (T + TINY + ["--epochs", "-2"], ["epochs must be", ">= 1", "-2"]),
    "epochs-not-int": (T + TINY + ["--epochs", "many"], ["--epochs", "'many'"]),
    "batch-size-zero": (T + TINY + ["--batch-size", "0"], ["batch_size must be", ">= 1"]),
    "lr-negative": (T + TINY + ["--lr", "-0.1"], ["lr must be", ">= 0"]),
    "lambda-negative": (T + TINY + ["--lambda", "-0.1"], ["lambda must be >= 0"]),
    "val-fraction-one": (T + TINY + ["--val-fraction", "1"], ["val_fraction must be in [0, 1)", "1.0"]),
    "max-scale-zero": (T + TINY + ["--max-scale", "0"], ["max_scale must be", "> 0"]),
    "limit-zero": (T + TINY + ["--limit", "0"], ["limit must be", ">= 1"]),
    # scales and budgets
    "init-scales-text": (T + TINY + ["--init-scales", "big"], ["--init-scales", "'big'"]),
    "init-scales-negative": (T + TINY + ["--init-scales", "-0.5"], ["init_scales must be a number > 0"]),
    "init-scales-above-cap": (T + TINY + ["--init-scales", "10"], ["init_scales must be <= max_scale 2", "10"]),
    "init-scales-too-many": (T + TINY + ["--init-scales", "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5"],
                             ["init_scales", "9"]),
    "target-gmacs-zero": (T + TINY + ["--target-gmacs", "0"], ["target_gmacs must be", "> 0"]),
    "target-gmacs-negative": (T + TINY + ["--target-gmacs", "-1"], ["target_gmacs must be", "> 0"]),
    "target-gmacs-text": (T + TINY + ["--target-gmacs", "lots"], ["--target-gmacs", "'lots'"]),
    "target-gmacs-too-high": (T + TINY + ["--target-gmacs", "100"], ["target_gmacs 100 is out of reach", "GMACs per image"]),
    "target-gmacs-too-low": (T + TINY + ["--target-gmacs", "1e-9"], ["target_gmacs 1e-09 is out of reach", "max_scale 2"]),
    "target-gmacs-max-pool": (T + TINY + ["--pool", "max", "--target-gmacs", "0.001"], ["target_gmacs", "'dynopool'"]),
    # image size
    "image-size-zero": (T + TINY + ["--image-size", "0"], ["image_size must be a positive integer", "0"]),
    "image-size-three-axes": (T + TINY + ["--image-size", "3x4x5"], ["--image-size", "S or HxW", "3x4x5"]),
    "image-size-too-small": (T + TINY + ["--pool", "max", "--image-size", "4"],
                             ["image_size 4x4 is too small for the model", "use image_size >= 8"]),
    # config files and flags
    "config-yaml-syntax": (T + ["--config", "{tmp}/exp.yaml"], ["exp.yaml", "line"]),
    "config-unknown-key": (T + ["--config", "{tmp}/exp.yaml"], ["unknown config key 'learning_rate'", "scale_lr"]),
    "config-not-mapping": (T + ["--config", "{tmp}/exp.yaml"], ["exp.yaml", "mapping"]),
    "config-bad-value": (T + ["--config", "{tmp}/exp.yaml"], ["epochs must be", ">= 1"]),
    "config-missing-file": (T + ["--config", "{tmp}/nope.yaml"], ["nope.yaml"]),
    "model-arg-no-equals": (T + TINY + ["--model-arg", "width"], ["--model-arg", "KEY=VALUE"]),
    "unrecognized-flag": (T + TINY + ["--learning-rate", "3"], ["unrecognized arguments: --learning-rate"]),
    # data and output folders
    "data-folder-missing": (T + TINY + ["--dataset", "cifar10", "--data-root", "{tmp}/missing"],
                            ["cifar-10-batches-py", "missing"]),
    "out-not-writable": (["train", "--out", "{tmp}/afile/run"] + TINY, ["not writable", "afile"]),
    "imagefolder-corrupt-image": (T + TINY + ["--dataset", "imagefolder", "--data-root", "{tmp}/imgs", "--in-chans",
                                              "3", "--num-classes", "2", "--val-fraction", "0"],
                                  ["1.png", "cannot be read"]),
    # resume
    "resume-missing-dir": (["train", "--resume", "{tmp}/nothing"], ["is not a run directory", "nothing"]),
    "resume-not-a-run": (["train", "--resume", "{tmp}/run"], ["is not a run directory", "config.yaml"]),
    "resume-zero-byte": (["train", "--resume", "{tmp}/run"], ["last.pt", "is empty (0 bytes)"]),
    "resume-truncated": (["train", "--resume", "{tmp}/run"], ["last.pt", "truncated or corrupt"]),
    "resume-other-model": (["train", "--resume", "{tmp}/run"], ["last.pt", "written for another model"]),
    "resume-with-flags": (["train", "--resume", "{tmp}/run", "--lr", "0.3"], ["--resume", "--lr"]),
    # eval / export / report
    "eval-missing-dir": (["eval", "{tmp}/nothing"], ["nothing"]),
    "eval-truncated-last": (["eval", "{tmp}/run"], ["last.pt", "truncated or corrupt"]),
    "eval-zero-byte-best": (["eval", "{tmp}/run", "--checkpoint", "best"], ["best.pt", "is empty (0 bytes)"]),
    "eval-bad-checkpoint": (["eval", "{tmp}/run", "--checkpoint", "middle"], ["checkpoint must be one of", "'middle'"]),
    "export-missing-dir": (["export", "{tmp}/nothing", "--out", "{tmp}/m.pt2"], ["nothing"]),
    "export-bad-suffix": (["export", "{tmp}/run", "--out", "{tmp}/m.zip"], [".zip", ".pt2", ".onnx"]),
    "export-bad-format": (["export", "{tmp}/run", "--out", "{tmp}/m.pt2", "--format", "tflite"], ["'tflite'", "onnx"]),
    "report-missing-dir": (["report", "{tmp}/nothing"], ["nothing", "does not exist"]),
    "report-empty-dir": (["report", "{tmp}/empty"], ["metrics.csv is missing"]),
}
SUBPROCESS = ["config-yaml-syntax", "target-gmacs-too-high", "imagefolder-corrupt-image", "eval-truncated-last"]


def _files(tmp: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}


def _check(name: str, status: int, err: str, tmp: Path, before: dict[str, bytes]) -> None:
    argv, fragments = CASES[name]
    command = argv[0]
    assert status == 2, (status, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"poolarch {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    # nothing half-written: a failed train leaves no run directory, other commands change no file
    out = tmp / "out"
    if name == "imagefolder-corrupt-image":  # fails in the first epoch: an incomplete run that --overwrite replaces
        assert run_status(out) == "incomplete" and not (out / "last.pt").exists()
    else:
        assert not out.exists(), sorted(p.name for p in out.iterdir())
    after = _files(tmp)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before


def _argv(name: str, tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in CASES[name][0]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_in_process(name, tmp_path, runs, capsys):
    _setup(name, tmp_path, runs)
    before = _files(tmp_path)
    try:
        status = main(_argv(name, tmp_path))
    except SystemExit as e:  # argparse's own errors exit from the parser
        status = e.code
    err = capsys.readouterr().err
    _check(name, status, err, tmp_path, before)
    if name == "imagefolder-corrupt-image":  # the incomplete run does not block a retry with --overwrite
        status = main(_argv(name, tmp_path) + ["--overwrite"])
        assert status == 2 and "already holds a run" not in capsys.readouterr().err


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_as_a_real_process(name, tmp_path, runs):
    _setup(name, tmp_path, runs)
    before = _files(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "poolarch", *_argv(name, tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path.parent)
    _check(name, proc.returncode, proc.stderr, tmp_path, before)


def test_case_count():
    assert len(CASES) >= 40
