"""``poolarch report``: a Markdown table (Jang et al. 2023 Table 1 style) and PNG figures from run directories.

Schema read from each run directory (:class:`poolarch.train.RunDir`, written by :mod:`poolarch.train.engine`)::

    metrics.csv        required; one row per epoch. Columns read (all but ``epoch`` optional):
                         epoch                     1-based epoch number
                         {test,val,train}_<m>      metric in %, m = top1 | acc | miou (first found)
                         gmacs                     GMACs per image
                         sizes                     feature-map sizes, space-separated "HxW" tokens
                         scales                    learnable scales, one token per resizer: "r" or "rHxrW"
                         alpha/..., beta/...       multi-resolution mixing weights (figure)
    config.yaml        optional; model, pool, method, dataset, variant, lambda, target_gmacs,
                       epochs, name (label of the run; default: the directory name)
    architecture.yaml  optional; resizers[].name (labels the scale curves), resizers[].in_size /
                       out_size (feature-map sizes when metrics.csv has no ``sizes``)
    result.yaml        optional; its presence marks a finished run

Each run is reported at its result, the last epoch (``last.pt``; the rule of
:mod:`poolarch.train.rundir`), unless ``select="best"`` asks for the best validation (else test)
epoch. GMACs are printed with 4 significant digits (:func:`poolarch.complexity.format_gmacs`).

A path without ``metrics.csv`` whose sub-directories are runs (e.g. a sweep folder) expands to
those runs. :func:`make_report` writes ``report.md``, ``feature_maps.png``, ``acc_vs_gmacs.png``,
``scales_<run>.png`` and, for multi-resolution runs, ``multires_<run>.png`` (mixing-weight
heat-map and learned depth) into ``out_dir``; further figures plug in with :func:`register_figure`.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from . import plots
from .complexity import format_gmacs
from .train.rundir import RunDir

__all__ = ["RunSummary", "read_run", "find_runs", "format_table", "make_report", "register_figure",
           "list_figures", "parse_sizes", "parse_scales", "METRICS"]

METRICS = ("top1", "acc", "miou")
#: what the report says about the epoch it shows of each run
SELECTED = {"last": "Each run at its result: the last epoch (`last.pt`), which `poolarch eval` and `export` "
                    "use by default.",
            "best": "Each run at its best validation (else test) epoch (`best.pt`): not the runs' results "
                    "(a test-selected epoch is an optimistic figure)."}
_SIZE_TOKEN = re.compile(r"^(\d+)(?:x(\d+))*$")


# -- reading ----------------------------------------------------------------------------------
def parse_sizes(text: str | None) -> list[list[int]]:
    """``"32x32 21x14"`` or ``"[32,32] [21,14]"`` -> ``[[32, 32], [21, 14]]``."""
    text = (text or "").strip()
    if text.startswith("["):
        groups = re.findall(r"\[([^\]]*)\]", text)
        tokens = ["x".join(v.strip() for v in g.split(",")) for g in groups]
        if "".join(f"[{g}]" for g in groups).replace(" ", "") != text.replace(" ", ""):
            tokens.append(text)  # reported as malformed below
    else:
        tokens = text.split()
    out = []
    for token in tokens:
        if not _SIZE_TOKEN.match(token):
            raise ValueError(f"bad feature-map size {token!r} in {text!r}; expected tokens like '32x32' or '[32,32]'")
        out.append([int(v) for v in token.split("x")])
    return out


def parse_scales(text: str | None) -> list[list[float]]:
    """``"0.660x0.440 0.5"`` -> ``[[0.66, 0.44], [0.5]]``."""
    return [[float(v) for v in token.split("x")] for token in (text or "").split()]


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{str(path)!r} is not valid YAML: {err}") from None
    return data if isinstance(data, dict) else {}


@dataclass
class RunSummary:
    """What the report needs of one run."""

    path: Path
    label: str
    config: dict[str, Any]
    rows: list[dict[str, str]]
    architecture: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    metric: str | None = None

    def column(self, name: str) -> list[float | None]:
        return [_num(r.get(name)) for r in self.rows]

    def row(self, select: str = "last") -> dict[str, str]:
        """The last row, or (``select="best"``) the row with the best validation (else test) metric."""
        if select not in ("last", "best"):
            raise ValueError(f"select must be 'last' or 'best', got {select!r}")
        if select == "last" or self.metric is None:
            return self.rows[-1]
        for split in ("val", "test"):
            values = self.column(f"{split}_{self.metric}")
            if any(v is not None for v in values):
                best = max(range(len(values)), key=lambda i: -math.inf if values[i] is None else values[i])
                return self.rows[best]
        return self.rows[-1]

    def sizes(self, select: str = "last") -> list[list[int]]:
        """Feature-map sizes of the selected row (``sizes`` column), else from architecture.yaml:
        the input of the first resizer followed by every resizer's output."""
        resizers = [r for r in self.architecture.get("resizers", []) or [] if isinstance(r, dict)]
        first_in = list(resizers[0]["in_size"]) if resizers and resizers[0].get("in_size") else None
        first_out = list(resizers[0]["out_size"]) if resizers and resizers[0].get("out_size") else None
        text = self.row(select).get("sizes")
        if text:
            sizes = parse_sizes(text)
            # a column listing only resizer outputs gets the input of the first one prepended
            if first_in and sizes and sizes[0] == first_out and first_in != first_out:
                sizes.insert(0, first_in)
            return sizes
        if first_in is None:
            return []
        return [first_in] + [list(r["out_size"]) for r in resizers if r.get("out_size")]

    def method(self) -> str:
        """``pool`` (or ``method:pool`` for non-default methods) plus lambda / target."""
        cfg = self.config
        name = str(cfg.get("pool", "?"))
        if cfg.get("method") not in (None, "plain"):
            name = f"{cfg['method']}:{name}"
        if cfg.get("target_gmacs") is not None:
            name += f" (target {cfg['target_gmacs']:g} GMACs)"
        elif _num(cfg.get("lambda")):
            name += f" (λ={float(cfg['lambda']):.3g})"
        return name


def read_run(path: str | Path) -> RunSummary:
    """Read one run directory (see the module docstring for the schema)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
    run = RunDir(path)
    metrics = run.metrics
    if not metrics.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a run directory: metrics.csv is missing "
                                "(written after the first epoch by 'poolarch train')")
    with open(metrics, newline="") as f:
        reader = csv.DictReader(f)
        rows = [dict(r) for r in reader]
        columns = reader.fieldnames or []
    if "epoch" not in columns:
        raise ValueError(f"{str(metrics)!r} has no 'epoch' column; columns: {columns}")
    if not rows:
        raise ValueError(f"{str(metrics)!r} has no rows (the run has not finished an epoch)")
    config = _yaml(run.config)
    metric = next((m for m in METRICS for s in ("test", "val", "train") if f"{s}_{m}" in columns), None)
    return RunSummary(path=path, label=str(config.get("name") or path.name), config=config, rows=rows,
                      architecture=_yaml(run.architecture), finished=run.status == "finished", metric=metric)


def find_runs(paths: Sequence[str | Path]) -> list[RunSummary]:
    """Read every run; a directory without metrics.csv expands to its run sub-directories.
    Labels are made unique (``label``, ``label#2``, ...)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ValueError("run_dirs must name at least one run directory")
    runs: list[RunSummary] = []
    for p in map(Path, paths):
        children = sorted(c for c in p.iterdir() if RunDir(c).is_run()) if (
            p.is_dir() and not RunDir(p).metrics.exists()) else []
        runs += [read_run(c) for c in children] if children else [read_run(p)]
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label}#{seen[run.label]}"
    return runs


# -- table ------------------------------------------------------------------------------------
def _fmt(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _fmt_gmacs(v: float | None) -> str:
    return "–" if v is None else format_gmacs(v)


def format_table(runs: Sequence[RunSummary], select: str = "last") -> str:
    """Markdown table: run, model, dataset, method, epochs, test/val metric (%), GMACs and the
    feature-map sizes ``[H,W] ...`` (Jang et al. 2023 Table 1 layout)."""
    metric = next((r.metric for r in runs if r.metric), "top1")
    name = {"top1": "Acc.", "acc": "Acc.", "miou": "mIoU"}.get(metric, metric)
    head = ["Run", "Model", "Dataset", "Method", "Epochs", f"Test {name} (%)", f"Val {name} (%)", "GMACs",
            "Feature map sizes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for run in runs:
        row = run.row(select)
        cfg = run.config
        dataset = str(cfg.get("dataset", "?")) + (f" ({cfg['variant']})" if cfg.get("variant") else "")
        epochs = f"{row.get('epoch', '?')}/{cfg['epochs']}" if cfg.get("epochs") else str(row.get("epoch", "?"))
        if not run.finished:
            epochs += " (running/incomplete)"
        sizes = " ".join("[" + ",".join(map(str, s)) + "]" for s in run.sizes(select)) or "–"
        cells = [run.label, str(cfg.get("model", "?")), dataset, run.method(), epochs,
                 _fmt(_num(row.get(f"test_{run.metric}")), 2), _fmt(_num(row.get(f"val_{run.metric}")), 2),
                 _fmt_gmacs(_num(row.get("gmacs"))), sizes]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# -- figures ----------------------------------------------------------------------------------
FigureFn = Callable[[Sequence[RunSummary], Path, str], list[Path]]
_FIGURES: dict[str, FigureFn] = {}


def register_figure(name: str) -> Callable[[FigureFn], FigureFn]:
    """Decorator adding ``fn(runs, out_dir, select) -> [png paths]`` to every report (other
    packages add e.g. multi-resolution alpha or supernet p(m|c) heat-maps via
    :func:`poolarch.plots.plot_heatmap`). A figure that has nothing to show returns ``[]``."""

    def deco(fn: FigureFn) -> FigureFn:
        if name in _FIGURES:
            raise ValueError(f"figure {name!r} is already registered")
        _FIGURES[name] = fn
        return fn

    return deco


def list_figures() -> list[str]:
    return list(_FIGURES)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _caption(run: RunSummary, select: str) -> str:
    row = run.row(select)
    acc, gmacs = _num(row.get(f"test_{run.metric}")), _num(row.get("gmacs"))
    parts = [run.label, run.method()]
    if gmacs is not None:
        parts.append(f"{format_gmacs(gmacs)} GMACs")
    if acc is not None:
        parts.append(f"{acc:.2f}%")
    return " | ".join(parts)


@register_figure("feature_maps")
def _feature_maps(runs: Sequence[RunSummary], out_dir: Path, select: str) -> list[Path]:
    models = [(_caption(r, select), r.sizes(select)) for r in runs if r.sizes(select)]
    if not models:
        return []
    return [plots.plot_feature_maps(models, out_dir / "feature_maps.png",
                                    title="Feature-map sizes per layer (to scale)")]


@register_figure("acc_vs_gmacs")
def _acc_vs_gmacs(runs: Sequence[RunSummary], out_dir: Path, select: str) -> list[Path]:
    points = []
    for r in runs:
        row = r.row(select)
        acc, gmacs = _num(row.get(f"test_{r.metric}")), _num(row.get("gmacs"))
        if acc is None:
            acc = _num(row.get(f"val_{r.metric}"))
        if acc is not None and gmacs is not None:
            series = f"{r.config.get('model', '?')} {r.config.get('pool', '?')}"
            points.append((series, r.label, gmacs, acc))
    if not points:
        return []
    return [plots.plot_accuracy_vs_gmacs(points, out_dir / "acc_vs_gmacs.png")]


@register_figure("scales")
def _scales(runs: Sequence[RunSummary], out_dir: Path, select: str) -> list[Path]:
    out = []
    for r in runs:
        per_epoch = [parse_scales(row.get("scales")) for row in r.rows]
        n = max((len(s) for s in per_epoch), default=0)
        if n == 0:
            continue
        names = [str(x.get("name")) for x in r.architecture.get("resizers", []) or [] if isinstance(x, dict)]
        if len(names) != n:
            names = [f"resizer {i + 1}" for i in range(n)]
        scales = {names[i]: [s[i] if i < len(s) else [math.nan] for s in per_epoch] for i in range(n)}
        epochs = [v if v is not None else i + 1 for i, v in enumerate(r.column("epoch"))]
        out.append(plots.plot_scales(epochs, scales, out_dir / f"scales_{_slug(r.label)}.png",
                                     title=f"Scales during training: {r.label}"))
    return out


@register_figure("multires")
def _multires(runs: Sequence[RunSummary], out_dir: Path, select: str) -> list[Path]:
    """Mixing weights (layers x resolutions, the multi-resolution-block paper (WACV submission 832) Fig. 3) and learned depth of every
    multi-resolution run, from the ``alpha/l{l}_r{r}`` and ``beta/l{l}`` columns. A run that was
    pruned is drawn at its last epoch before pruning (what the search learned)."""
    from .models.multires import plot_multires

    out = []
    for r in runs:
        if not any(k.startswith("alpha/") for k in r.rows[-1]):
            continue
        searched = [row for row in r.rows if _num(row.get("multires/pruned")) in (None, 0.0)]
        row = searched[-1] if searched else r.row(select)
        out.append(Path(plot_multires(row, str(out_dir / f"multires_{_slug(r.label)}.png"))))
    return out


# -- report -----------------------------------------------------------------------------------
def make_report(run_dirs: Sequence[str | Path] | str | Path, out_dir: str | Path, *,
                select: str = "last") -> Path:
    """Write ``report.md`` (the table, then every figure) and the PNGs into ``out_dir``; returns
    the path of ``report.md``. ``select``: report each run's ``"last"`` or ``"best"`` (by
    validation metric) epoch."""
    if select not in ("last", "best"):
        raise ValueError(f"select must be 'last' or 'best', got {select!r}")
    runs = find_runs(run_dirs if not isinstance(run_dirs, (str, Path)) else [run_dirs])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    for fn in _FIGURES.values():
        figures += fn(runs, out, select)
    text = [f"# poolarch report ({len(runs)} run{'s' if len(runs) != 1 else ''}, {select} epoch)", "",
            SELECTED[select], "",
            format_table(runs, select), ""]
    text += [f"![{p.stem}]({p.relative_to(out) if p.is_relative_to(out) else p})\n" for p in figures]
    path = out / "report.md"
    path.write_text("\n".join(text))
    return path
