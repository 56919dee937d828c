"""`poolarch export`: a trained run becomes a static model in each format, and the loaded file
computes what the run's own (learnable) network computes -- for any batch size."""
from __future__ import annotations

import pytest
import torch

from poolarch.cli import main
from poolarch.export import export_model
from poolarch.layers.base import learnable_resizers
from poolarch.train import load_run

TINY = ["--model", "vgg_small", "--pool", "dynopool", "--dataset", "random", "--image-size", "16",
        "--num-classes", "4", "--limit", "32", "--batch-size", "8", "--epochs", "1", "--max-eval-steps", "1",
        "--lr", "0.5", "--scale-lr", "0.5", "--quiet"]


def _load(path):
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    if path.suffix == ".ts":
        return torch.jit.load(str(path))
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    session = ReferenceEvaluator(proto)
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("suffix", [".pt2", ".onnx", ".ts"])
def test_exported_file_computes_the_trained_network(run_dir, tmp_path, suffix, capsys):
    if suffix == ".onnx":  # the `export` extra
        pytest.importorskip("onnx"), pytest.importorskip("onnxscript")
    path = tmp_path / f"model{suffix}"
    assert main(["export", str(run_dir), "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert str(path) in out
    assert out.splitlines()[0] == "result: last.pt (epoch 1)"  # the default is the run's result
    run = load_run(run_dir)
    scales = [m.scale.detach() for _, m in learnable_resizers(run.model)]
    assert any(not torch.allclose(s, torch.full_like(s, 0.5)) for s in scales)  # training moved them
    exported = _load(path)
    for batch in (1, 3):  # the batch dimension stays free
        x = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            expected = run.model(x)
            torch.testing.assert_close(exported(x), expected, atol=1e-5, rtol=1e-4)


def test_export_bad_input(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--out", str(tmp_path / "model.bin")]) == 2
    assert "out must end in one of" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m.onnx"), "--format", "tflite"]) == 2
    assert "format must be one of" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.onnx")]) == 2
    from poolarch.search import PoolingSupernet

    supernet = PoolingSupernet("resnet20", num_classes=3, widths=(2, 4, 4))
    with pytest.raises(ValueError, match="supernet"):
        export_model(supernet, torch.zeros(1, 3, 8, 8), tmp_path / "s.pt2")
