"""poolarch.report / poolarch.plots on fake run directories in the engine's format."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from poolarch.plots import plot_heatmap
from poolarch.report import find_runs, format_table, make_report, parse_scales, parse_sizes, register_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(path: Path, *, pool: str, name: str | None, rows: list[dict], finished: bool = True,
         arch: dict | None = None, **cfg) -> Path:
    path.mkdir(parents=True)
    config = {"model": "vgg16_cifar", "pool": pool, "dataset": "cifar100", "epochs": len(rows),
              "method": "plain", "lambda": cfg.pop("lam", 0.0), "name": name, **cfg}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    if arch is not None:
        (path / "architecture.yaml").write_text(yaml.safe_dump(arch))
    if finished:
        (path / "result.yaml").write_text("status: finished\n")
    return path


@pytest.fixture
def two_runs(tmp_path):
    human = _run(tmp_path / "human", pool="max", name="human", rows=[
        {"epoch": 1, "train_loss": 2.0, "val_top1": 40.0, "test_top1": 41.5, "gmacs": 0.31,
         "sizes": "32x32 16x16 8x8 4x4 2x2", "scales": ""},
        {"epoch": 2, "train_loss": 1.5, "val_top1": 55.0, "test_top1": 54.25, "gmacs": 0.31,
         "sizes": "32x32 16x16 8x8 4x4 2x2", "scales": ""},
    ])
    arch = {"format": "poolarch-architecture/1", "groups": [], "resizers": [
        {"name": f"features.pool{i}", "type": "DynOPool2d", "scale": [0.5, 0.5], "in_size": None,
         "out_size": None, "group": i} for i in range(2)]}
    dyn = _run(tmp_path / "dyn", pool="dynopool", name=None, lam=2.2e-4, finished=False, arch=arch, rows=[
        {"epoch": 1, "train_loss": 2.1, "val_top1": 45.0, "test_top1": 44.0, "gmacs": 0.40,
         "sizes": "32x32 24x20 12x10", "scales": "0.750x0.625 0.500x0.500"},
        {"epoch": 2, "train_loss": 1.4, "val_top1": 60.0, "test_top1": 59.0, "gmacs": 0.36,
         "sizes": "32x32 21x14 10x7", "scales": "0.660x0.440 0.480x0.500"},
        {"epoch": 3, "train_loss": 1.3, "val_top1": 58.0, "test_top1": 61.0, "gmacs": 0.35,
         "sizes": "32x32 21x14 10x7", "scales": "0.650x0.430 0.470x0.500"},
    ])
    return human, dyn


def _table_rows(md: str) -> list[list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_table_contents(two_runs):
    runs = find_runs(list(two_runs))
    rows = _table_rows(format_table(runs))
    header, body = rows[0], rows[2:]
    assert header[:2] == ["Run", "Model"] and "GMACs" in header
    col = {h: i for i, h in enumerate(header)}
    human, dyn = body
    assert human[col["Run"]] == "human" and dyn[col["Run"]] == "dyn"  # name, else the directory name
    assert human[col["Test Acc. (%)"]] == "54.25" and dyn[col["Test Acc. (%)"]] == "61.00"
    assert human[col["GMACs"]] == "0.3100" and dyn[col["GMACs"]] == "0.3500"
    assert human[col["Feature map sizes"]] == "[32,32] [16,16] [8,8] [4,4] [2,2]"
    assert dyn[col["Feature map sizes"]] == "[32,32] [21,14] [10,7]"
    assert human[col["Method"]] == "max" and dyn[col["Method"]] == "dynopool (λ=0.00022)"
    assert human[col["Epochs"]] == "2/2" and "incomplete" in dyn[col["Epochs"]]
    # best epoch by validation accuracy: epoch 2 of the DynOPool run
    best = _table_rows(format_table(runs, select="best"))[3]
    assert best[col["Test Acc. (%)"]] == "59.00" and best[col["Val Acc. (%)"]] == "60.00"


def test_small_gmacs_keep_four_significant_digits(tmp_path):
    """0.00258 and 0.00264 GMACs (the demo's scale) must not both print as 0.0026."""
    for name, gmacs in (("a", 0.002581), ("b", 0.002642)):
        _run(tmp_path / "runs" / name, pool="max", name=name, rows=[{"epoch": 1, "test_top1": 90.0, "gmacs": gmacs}])
    body = _table_rows(format_table(find_runs([tmp_path / "runs"])))
    col = body[0].index("GMACs")
    assert [r[col] for r in body[2:]] == ["0.002581", "0.002642"]
    md = make_report([tmp_path / "runs"], tmp_path / "rep").read_text()
    assert "0.002581" in md and "0.0026 " not in md
    assert "the last epoch (`last.pt`)" in md  # the report names the epoch it shows


def test_format_gmacs_significant_digits():
    from poolarch.complexity import format_gmacs

    assert [format_gmacs(v) for v in (0.00258, 0.002642, 0.31, 1.31, 12.3456, 4100.0)] == [
        "0.002580", "0.002642", "0.3100", "1.310", "12.35", "4100"]
    assert format_gmacs(0.0) == "0" and format_gmacs(2.5e-6) == "0.000002500"


def test_make_report_writes_markdown_and_pngs(two_runs, tmp_path):
    out = tmp_path / "report"
    md_path = make_report(two_runs, out)
    md = md_path.read_text()
    assert md_path == out / "report.md" and "[21,14]" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["acc_vs_gmacs.png", "feature_maps.png", "scales_dyn.png"]  # human has no scales
    for name in pngs:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
        assert f"]({name})" in md


def test_sizes_from_architecture_and_sweep_folder(tmp_path):
    arch = {"resizers": [{"name": "p1", "in_size": [32, 32], "out_size": [21, 14]},
                         {"name": "p2", "in_size": [21, 14], "out_size": [10, 7]}]}
    _run(tmp_path / "sweep" / "a", pool="dynopool", name=None, arch=arch,
         rows=[{"epoch": 1, "test_top1": 10.0, "gmacs": 0.1}])
    _run(tmp_path / "sweep" / "b", pool="dynopool", name=None, rows=[{"epoch": 1, "test_top1": 11.0}])
    # a sizes column of resizer outputs only gets the input of the first resizer prepended
    _run(tmp_path / "sweep" / "c", pool="dynopool", name=None, arch=arch,
         rows=[{"epoch": 1, "test_top1": 12.0, "sizes": "21x14 10x7"}])
    runs = find_runs([tmp_path / "sweep"])
    assert [r.label for r in runs] == ["a", "b", "c"]
    assert runs[0].sizes() == [[32, 32], [21, 14], [10, 7]] and runs[1].sizes() == []
    assert runs[2].sizes() == [[32, 32], [21, 14], [10, 7]]
    md = make_report([tmp_path / "sweep"], tmp_path / "out").read_text()
    assert "[32,32] [21,14] [10,7]" in md and "| – |" in md  # missing GMACs / sizes shown as –


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_report([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.csv is missing"):
        make_report([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(ValueError, match="select"):
        make_report([tmp_path / "empty"], tmp_path / "out", select="median")
    with pytest.raises(ValueError, match="'32y32'"):
        parse_sizes("32y32")


def test_parsers():
    assert parse_sizes("32x32 21x14") == [[32, 32], [21, 14]]
    assert parse_sizes("[32,32] [21, 14]") == [[32, 32], [21, 14]]
    with pytest.raises(ValueError, match="bad feature-map size"):
        parse_sizes("[32,32] 21x14")
    assert parse_scales("0.660x0.440 0.5") == [[0.66, 0.44], [0.5]]


def test_heatmap_and_registered_figure(tmp_path, two_runs):
    path = plot_heatmap(np.arange(6).reshape(2, 3) / 5, ["c1", "c2"], ["m1", "m2", "m3"], tmp_path / "h.png",
                        title="p(m|c)")
    assert path.read_bytes()[:8] == PNG_MAGIC
    from PIL import Image

    with Image.open(path) as im:
        assert im.width > im.height > 50  # 3 columns wider than 2 rows
    with pytest.raises(ValueError, match="row_labels"):
        plot_heatmap(np.zeros((2, 3)), ["a"], ["x", "y", "z"], tmp_path / "bad.png")

    @register_figure("test_alpha_heatmap")
    def _alpha(runs, out_dir, select):
        return [plot_heatmap([[1.0, 2.0]], [runs[0].label], ["a", "b"], out_dir / "alpha.png")]

    try:
        md = make_report(two_runs, tmp_path / "out2").read_text()
        assert "](alpha.png)" in md and (tmp_path / "out2" / "alpha.png").is_file()
    finally:
        from poolarch import report

        report._FIGURES.pop("test_alpha_heatmap")
