"""Kendall tau / top-k overlap against independent references, and `poolarch rank-corr`."""
import itertools
import math

import numpy as np
import pytest

from poolarch.cli import main
from poolarch.search.rankcorr import kendall_tau, rank_correlation, top_k_overlap


def brute_force_tau_b(x, y):
    """Pair-by-pair definition of Kendall's tau-b."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        ties_x += sx == 0
        ties_y += sy == 0
        concordant += sx * sy > 0
        discordant += sx * sy < 0
    n0 = len(x) * (len(x) - 1) / 2
    return (concordant - discordant) / math.sqrt((n0 - ties_x) * (n0 - ties_y))


@pytest.mark.parametrize("n,levels", [(36, None), (50, 5), (12, 3)])
def test_kendall_tau_matches_references(n, levels):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n) if levels is None else rng.integers(0, levels, n).astype(float)
    y = x + rng.normal(scale=1.0, size=n) if levels is None else rng.integers(0, levels, n).astype(float)
    ours = kendall_tau(x, y)
    assert ours == pytest.approx(brute_force_tau_b(x, y), abs=1e-12)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert ours == pytest.approx(scipy_stats.kendalltau(x, y).statistic, abs=1e-12)


def test_kendall_tau_closed_forms_and_errors():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="x and y"):
        kendall_tau([1, 2], [1, 2, 3])


def test_top_k_overlap():
    truth = {"a": 5, "b": 4, "c": 3, "d": 2}
    search = {"a": 1, "b": 4, "c": 3, "d": 5}
    assert top_k_overlap(search, truth, 2) == 0.5  # {d, b} vs {a, b}
    assert top_k_overlap(search, truth, 4) == 1.0
    r = rank_correlation(search, truth, ks=(1, 2))
    assert r["top1_overlap"] == 0.0 and r["search_best"] == "d" and r["truth_best"] == "a"


def test_rank_corr_cli(tmp_path, capsys):
    configs = ["1-1-8", "2-3-5", "4-3-3", "5-3-2", "7-1-2"]
    truth = [87.4, 90.4, 90.5, 91.5, 92.0]
    search = [30.0, 41.0, 40.0, 45.0, 50.0]
    (tmp_path / "search").mkdir()
    (tmp_path / "sweep").mkdir()
    (tmp_path / "search" / "ranking.csv").write_text(
        "rank,config,weight_set,accuracy,proxy,visits\n"
        + "".join(f"{i},{c},0,{a},0,1\n" for i, (c, a) in enumerate(zip(configs, search))))
    (tmp_path / "sweep" / "sweep.csv").write_text(
        "config,val_top1,test_top1,run_dir\n" + "".join(f"{c},0,{a},x\n" for c, a in zip(configs, truth)))
    assert main(["rank-corr", str(tmp_path / "search"), str(tmp_path / "sweep"), "--top-k", "1,2"]) == 0
    out = capsys.readouterr().out
    assert f"kendall tau {brute_force_tau_b(np.array(search), np.array(truth)):.3f}" in out
    assert (tmp_path / "search" / "rank_corr.png").stat().st_size > 0
    assert main(["rank-corr", str(tmp_path / "search"), str(tmp_path / "missing")]) == 2
    # a sweep of another seed in place of a search: the noise ceiling, read from its sweep.csv
    reseeded = [88.0, 90.0, 91.0, 90.9, 91.8]
    (tmp_path / "sweep_s1").mkdir()
    (tmp_path / "sweep_s1" / "sweep.csv").write_text(
        "config,val_top1,test_top1,run_dir\n" + "".join(f"{c},0,{a},x\n" for c, a in zip(configs, reseeded)))
    capsys.readouterr()
    assert main(["rank-corr", str(tmp_path / "sweep_s1"), str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert f"sweep_s1: kendall tau {brute_force_tau_b(np.array(reseeded), np.array(truth)):.3f}" in out
