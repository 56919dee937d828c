"""PNG figures of learned pooling architectures (matplotlib, Agg canvas; no pyplot state).

Plain functions, each writing one PNG and returning its path:

* :func:`plot_feature_maps` -- feature maps per layer drawn to scale, one row per model (Jang et al. 2023
  Fig. 4);
* :func:`plot_accuracy_vs_gmacs` -- accuracy against GMACs, one series per method (Fig. 5);
* :func:`plot_scales` -- learned scales during training, one line per resizer and axis;
* :func:`plot_heatmap` -- any labelled matrix (multi-resolution mixing weights alpha, supernet
  p(m|c), rank correlations, ...);
* :func:`plot_heatmap_panels` -- several matrices side by side on one colour scale (the supernet
  assignment ``p(m | c)`` over training, Balanced Mixture of SuperNets Fig. 5);
* :func:`plot_scatter_series` -- scatter plot, one colour per series (search vs ground-truth
  accuracy, Fig. 3 of the same paper);
* :func:`plot_mixing_weights` -- multi-resolution mixing weights (layers x resolutions) and, when
  learned, the depth weights (Fig. 3 of the multi-resolution paper).

Every function takes plain data (lists, arrays) and draws on its own ``Figure``; none imports
from the rest of poolarch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_feature_maps", "plot_accuracy_vs_gmacs", "plot_scales", "plot_heatmap", "plot_heatmap_panels",
           "plot_scatter_series", "plot_mixing_weights", "new_figure", "save_figure"]


def new_figure(width: float, height: float):
    """A matplotlib ``Figure`` attached to an Agg canvas (thread-safe, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path, dpi: float | None = None) -> Path:
    """Save ``fig`` as PNG at ``path`` (parents created; ``dpi`` defaults to the figure's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight", dpi=dpi)
    return path


def plot_feature_maps(models: Sequence[tuple[str, Sequence[Sequence[int]]]], path: str | Path,
                      title: str = "Feature-map sizes") -> Path:
    """One row per ``(label, [[H, W], ...])``: each feature map a rectangle ``W`` wide and ``H``
    high (pixels, same scale in every row), centred on a common baseline, annotated ``HxW``."""
    if not models:
        raise ValueError("models must name at least one (label, sizes) pair")
    tallest = max((h for _, sizes in models for h, _ in sizes), default=1)
    gap = 0.25 * max((w for _, sizes in models for _, w in sizes), default=1)
    widths = [sum(w for _, w in sizes) + gap * max(len(sizes) - 1, 0) for _, sizes in models]
    span = max(max(widths, default=1), 1)
    fig = new_figure(min(16.0, 3.0 + 0.08 * span + 1.2 * max(len(s) for _, s in models)),
                     1.2 + 1.6 * len(models))
    axes = fig.subplots(len(models), 1, squeeze=False)[:, 0]
    from matplotlib.patches import Rectangle

    for ax, (label, sizes) in zip(axes, models):
        x = 0.0
        for k, (h, w) in enumerate(sizes):
            ax.add_patch(Rectangle((x, -h / 2), w, h, facecolor=f"C{k % 10}", alpha=0.55, edgecolor="black"))
            ax.text(x + w / 2, -tallest / 2 - 0.04 * tallest, f"{h}x{w}", ha="center", va="top", fontsize=8)
            x += w + gap
        ax.set_xlim(-gap / 2, span + gap / 2)
        ax.set_ylim(-tallest / 2 - 0.25 * tallest, tallest / 2 + 0.05 * tallest)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(label, loc="left", fontsize=9)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_accuracy_vs_gmacs(points: Sequence[tuple[str, str, float, float]], path: str | Path,
                           title: str = "Accuracy vs GMACs", ylabel: str = "Top-1 accuracy (%)") -> Path:
    """``points``: ``(series, label, gmacs, accuracy)``; each series is drawn as a line through its
    points sorted by GMACs, each point annotated with its label."""
    if not points:
        raise ValueError("points must hold at least one (series, label, gmacs, accuracy)")
    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    series: dict[str, list[tuple[float, float, str]]] = {}
    for name, label, g, a in points:
        series.setdefault(name, []).append((float(g), float(a), label))
    for k, (name, pts) in enumerate(sorted(series.items())):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{k % 10}", label=name)
        for g, a, label in pts:
            ax.annotate(label, (g, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_scales(epochs: Sequence[float], scales: dict[str, Sequence[Sequence[float]]], path: str | Path,
                title: str = "Scales during training") -> Path:
    """``scales[name][i]`` = the scale(s) of resizer ``name`` at ``epochs[i]`` (1 value, or
    ``(r_h, r_w)``). One colour per resizer; height solid, width dashed."""
    if not scales:
        raise ValueError("scales must hold at least one resizer")
    fig = new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    for k, (name, values) in enumerate(scales.items()):
        arr = np.full((len(values), max((len(v) for v in values), default=1)), np.nan)
        for i, v in enumerate(values):
            arr[i, : len(v)] = v
        for axis in range(arr.shape[1]):
            suffix = "" if arr.shape[1] == 1 else (" (H)" if axis == 0 else " (W)")
            ax.plot(epochs, arr[:, axis], color=f"C{k % 10}", linestyle="-" if axis == 0 else "--",
                    label=name + suffix)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("scale r (output / input size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_heatmap(matrix, row_labels: Sequence[str], col_labels: Sequence[str], path: str | Path,
                 title: str = "", cmap: str = "viridis", annotate: bool | None = None,
                 colorbar_label: str | None = None) -> Path:
    """Heat-map of a 2-D ``matrix`` (array-like, rows x cols) with labelled axes; cell values are
    written in the cells when ``annotate`` (default: at most 400 cells)."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {m.shape}")
    if len(row_labels) != m.shape[0] or len(col_labels) != m.shape[1]:
        raise ValueError(f"row_labels/col_labels must have {m.shape[0]}/{m.shape[1]} entries, got "
                         f"{len(row_labels)}/{len(col_labels)}")
    fig = new_figure(1.5 + 0.5 * m.shape[1], 1.2 + 0.4 * m.shape[0])
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap=cmap, aspect="auto")
    ax.set_xticks(range(m.shape[1]), [str(c) for c in col_labels], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(m.shape[0]), [str(r) for r in row_labels], fontsize=8)
    if annotate if annotate is not None else m.size <= 400:
        finite = m[np.isfinite(m)]
        mid = (finite.max() + finite.min()) / 2 if finite.size else 0.0
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2g}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] < mid else "black")
    cbar = fig.colorbar(im, ax=ax)
    if colorbar_label:
        cbar.set_label(colorbar_label)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_heatmap_panels(panels: Sequence, titles: Sequence[str], row_labels: Sequence[str], path: str | Path,
                        xlabel: str = "", ylabel: str = "", colorbar_label: str = "",
                        vmin: float = 0.0, vmax: float = 1.0, dpi: float = 120) -> Path:
    """Matrices (each rows x cols, same rows) side by side on one colour scale ``[vmin, vmax]``,
    one shared colour bar; ``row_labels`` on the first panel, column indices on every panel."""
    mats = [np.asarray(p, dtype=float) for p in panels]
    if not mats or any(m.ndim != 2 or m.shape[0] != mats[0].shape[0] for m in mats):
        raise ValueError(f"panels must be 2-D matrices with equal row counts, got shapes {[m.shape for m in mats]}")
    if len(titles) != len(mats) or len(row_labels) != mats[0].shape[0]:
        raise ValueError(f"titles/row_labels must have {len(mats)}/{mats[0].shape[0]} entries, got "
                         f"{len(titles)}/{len(row_labels)}")
    height = max(3.0, 0.18 * len(row_labels))
    fig = new_figure(1.0 + 1.6 * len(mats) * max(1, mats[0].shape[1] / 4), height)
    axes = fig.subplots(1, len(mats), squeeze=False)[0]
    image = None
    for i, (ax, m, title) in enumerate(zip(axes, mats, titles)):
        image = ax.imshow(m, aspect="auto", vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.set_yticklabels([str(r) for r in row_labels] if i == 0 else [], fontsize=5)
    axes[0].set_ylabel(ylabel)
    fig.colorbar(image, ax=list(axes), label=colorbar_label)
    return save_figure(fig, path, dpi)


def plot_scatter_series(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], path: str | Path,
                        xlabel: str = "", ylabel: str = "", title: str = "", dpi: float = 120) -> Path:
    """``series``: ``(label, xs, ys)``; one colour per series, legend with the labels."""
    if not series:
        raise ValueError("series must hold at least one (label, xs, ys)")
    fig = new_figure(5.0, 4.0)
    ax = fig.add_subplot()
    for label, xs, ys in series:
        if len(xs) != len(ys):
            raise ValueError(f"series {label!r}: xs and ys must have equal lengths, got {len(xs)} and {len(ys)}")
        ax.scatter(list(xs), list(ys), s=14, label=label, alpha=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi)


def plot_mixing_weights(alpha, path: str | Path, depth_weights: Sequence[float] | None = None,
                        learned_depth: int | None = None, dpi: float = 120) -> Path:
    """``alpha``: layers x resolutions mixing weights in ``[0, 1]`` (column ``r`` is resolution
    ``1/2^r``), drawn as an annotated heat-map; with ``depth_weights`` (one per layer) a bar chart
    of them beside it, titled with ``learned_depth``."""
    a = np.asarray(alpha, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"alpha must be 2-D (layers x resolutions), got shape {a.shape}")
    ncols = 2 if depth_weights is not None else 1
    fig = new_figure(3.2 + 3.0 * (ncols - 1), 0.35 * a.shape[0] + 1.6)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ax = axes[0]
    im = ax.imshow(a, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            v = a[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    ax.set_xticks(range(a.shape[1]), [f"1/{2**r}" for r in range(a.shape[1])])
    ax.set_yticks(range(a.shape[0]), [str(i + 1) for i in range(a.shape[0])])
    ax.set_xlabel("resolution")
    ax.set_ylabel("layer")
    ax.set_title("mixing weights")
    fig.colorbar(im, ax=ax, fraction=0.05)
    if depth_weights is not None:
        ax2 = axes[1]
        ax2.barh(range(len(depth_weights)), list(depth_weights), color="tab:orange")
        ax2.invert_yaxis()
        ax2.set_yticks(range(len(depth_weights)), [str(i + 1) for i in range(len(depth_weights))])
        ax2.set_xlabel("depth weight")
        ax2.set_title(f"learned depth = {learned_depth}")
    return save_figure(fig, path, dpi)
