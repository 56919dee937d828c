"""PNG figures of learned pooling architectures (matplotlib, Agg canvas; no pyplot state).

Plain functions, each writing one PNG and returning its path:

* :func:`plot_feature_maps` -- feature maps per layer drawn to scale, one row per model (paper 000
  Fig. 4);
* :func:`plot_accuracy_vs_gmacs` -- accuracy against GMACs, one series per method (Fig. 5);
* :func:`plot_scales` -- learned scales during training, one line per resizer and axis;
* :func:`plot_heatmap` -- any labelled matrix (multi-resolution mixing weights alpha, supernet
  p(m|c), rank correlations, ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_feature_maps", "plot_accuracy_vs_gmacs", "plot_scales", "plot_heatmap", "new_figure", "save_figure"]


def new_figure(width: float, height: float):
    """A matplotlib ``Figure`` attached to an Agg canvas (thread-safe, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Save ``fig`` as PNG at ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
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
