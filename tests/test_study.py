"""benchmarks/study.py in --quick mode on random data: every row runs, results.md and the figures
are written, every table cell is recomputed from the run directories, and a rerun skips finished
runs while redoing a deleted one."""
from __future__ import annotations

import csv
import importlib.util
import re
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("study", ROOT / "benchmarks" / "study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["study"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _last_row(run_dir: Path) -> dict[str, str]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))[-1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    study = _study()
    tmp = tmp_path_factory.mktemp("study")
    out, docs = tmp / "runs", tmp / "docs"
    study.main(["--quick", "--dataset", "random", "--out", str(out), "--docs", str(docs), "--workers", "1"])
    return study, out, docs


def test_quick_study_writes_every_row(quick):
    study, out, docs = quick
    text = (docs / "results.md").read_text()
    assert study.READING_MARK in text
    for row in study.P000_ROWS + study.P002_ROWS + tuple(study.P003_SEARCHES):
        assert re.search(rf"^\| {re.escape(row)} \| 3 \|" if row in study.P003_SEARCHES else
                         rf"^\| {re.escape(row)} \| 0,1,2 \|", text, re.M), row
    for name in ("study_accuracy_vs_gmacs.png", "study_learned_shapes.png", "study_rank_correlation.png"):
        assert (docs / "figures" / name).stat().st_size > 1000
    assert "Noise ceiling" in text and "wall time:" in text and "torch " in text


def test_cells_come_from_metrics_csv(quick):
    study, out, docs = quick
    text = (docs / "results.md").read_text()
    for paper, row in (("p000", "human"), ("p000", "dynopool-s"), ("p002", "one-res-retrained")):
        rows = [_last_row(out / paper / row / f"s{s}") for s in study.SEEDS]
        acc = [float(r["test_top1"]) for r in rows]
        macs = [float(r["gmacs"]) * 1e3 for r in rows]
        cell = f"| {row} | 0,1,2 | {statistics.fmean(acc):.2f} ± {statistics.stdev(acc):.2f} |"
        assert cell in text
        assert f"{statistics.fmean(macs):.3f} ± {statistics.stdev(macs):.3f}" in text.split(cell)[1].split("\n")[0]
    # DynOPool-S was given the human net's GMACs of the same seed as its target
    import yaml

    for s in study.SEEDS:
        human = float(_last_row(out / "p000" / "human" / f"s{s}")["gmacs"])
        cfg = yaml.safe_load((out / "p000" / "dynopool-s" / f"s{s}" / "config.yaml").read_text())
        assert cfg["target_gmacs"] == pytest.approx(human)
        # the one-resolution retrain uses the schedule learned by the same seed
        learned = study.learned_schedule(out / "p002" / "multires-learned" / f"s{s}")
        cfg = yaml.safe_load((out / "p002" / "one-res-retrained" / f"s{s}" / "config.yaml").read_text())
        assert cfg["model_args"]["schedule"] == learned


def test_rerun_skips_finished_and_redoes_missing(quick):
    import shutil

    study, out, docs = quick
    keep = out / "p000" / "human" / "s0" / "result.yaml"
    before = keep.stat().st_mtime_ns
    shutil.rmtree(out / "p000" / "diffstride" / "s1")
    study.main(["--quick", "--dataset", "random", "--out", str(out), "--docs", str(docs), "--workers", "1",
                "--only", "p000"])
    assert keep.stat().st_mtime_ns == before
    assert (out / "p000" / "diffstride" / "s1" / "result.yaml").is_file()
    import yaml

    assert len(yaml.safe_load((out / "study.yaml").read_text())["invocations"]) == 2


def test_plan_uses_the_idx_data_root(tmp_path):
    study = _study()
    args = study.argparse.Namespace(quick=False, dataset="fashion-mnist", data_root=str(tmp_path), out=str(tmp_path))
    jobs = study.plan(args)
    assert {(j.paper, j.row) for j in jobs} >= {("p000", r) for r in study.P000_ROWS}
    assert len([j for j in jobs if j.paper == "p002"]) == 5 * len(study.SEEDS)
    for job in jobs:
        if job.phase == 0:
            cfg = job.make()
            assert cfg["dataset"] == "fashion-mnist" and cfg["data_root"] == str(tmp_path)


def test_report_keeps_the_hand_written_reading(quick, tmp_path):
    study, out, docs = quick
    results = tmp_path / "results.md"
    results.write_text((docs / "results.md").read_text())
    assert study.previous_reading(results) is None  # the placeholder is not a reading
    text = results.read_text().replace("_(to be written after the default-mode run)_", "DynOPool loses here.\n\n- a list")
    results.write_text(text)
    study.report(out, tmp_path)
    regenerated = results.read_text()
    assert "DynOPool loses here.\n\n- a list" in regenerated
    assert "_(to be written" not in regenerated
    assert regenerated.count("## Reading") == 1 and "| human | 0,1,2 |" in regenerated


def test_readme_block_copies_the_results_rows(quick, tmp_path):
    study, out, docs = quick
    results = (docs / "results.md").read_text()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{study.README_BEGIN}\nstale\n{study.README_END}\n\nafter\n")
    assert study.update_readme(readme, docs / "results.md")
    text = readme.read_text()
    assert "stale" not in text and text.startswith("# x\n\nbefore") and text.endswith("after\n")
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| row")
                  and not line.startswith("| search")]
    assert len(table_rows) == 5 + 3 + 3
    assert all(row in results.splitlines() for row in table_rows)
    no_block = tmp_path / "OTHER.md"
    no_block.write_text("nothing here\n")
    assert not study.update_readme(no_block, docs / "results.md") and no_block.read_text() == "nothing here\n"
