"""Matplotlib without a display: the pyplot of the Agg backend, Agg figures without pyplot
state, atomic PNG writes, and two generic charts (grouped bars, labelled points)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence, Tuple

from bmc_detectron.utils.io import PathLike, atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported when first used
    (importing this module does not import matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(width: float, height: float) -> Figure:
    """An Agg-backed figure of ``width`` x ``height`` inches that pyplot does not keep (nothing
    to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def grid_shape(n: int, max_cols: int) -> Tuple[int, int]:
    """(rows, cols) of a grid holding ``n`` panels, at most ``max_cols`` wide."""
    cols = max(1, min(n, max_cols))
    return max(1, -(-n // cols)), cols


def save_figure(fig: Figure, path: PathLike, dpi: int = 110, crop: bool = True) -> Path:
    """Write ``fig`` as a PNG atomically; returns the path. ``crop``: the image is cut to what
    is drawn (``bbox_inches="tight"``, legends outside the axes included), else it has the
    figure's size. A figure of :func:`pyplot` is closed afterwards (pyplot would keep it); one
    of :func:`new_figure` needs no closing."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if crop else None)
    if fig.canvas.manager is not None:
        pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def grouped_bar_plot(
    path: Path,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    points: Mapping[str, Sequence[Sequence[float]]] | None = None,
    ylabel: str = "",
    title: str = "",
) -> None:
    """PNG of bars of each series per label (NaN bars drawn as 0); ``points[series][i]`` are
    drawn as dots over bar ``i`` (e.g. the per-seed values behind a mean)."""
    plt = pyplot()
    n = max(len(series), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) + 2), 4.5))
    for j, (key, values) in enumerate(series.items()):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, [0.0 if v != v else v for v in values], width, label=key)
        for x, pts in zip(xs, (points or {}).get(key, [])):
            ax.scatter([x] * len(pts), pts, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120, crop=False)


def scatter_plot(
    path: Path,
    xs: Sequence[float],
    ys: Sequence[float],
    labels: Sequence[str],
    yerr: Sequence[float] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    sizes: Sequence[float] | None = None,
    size_label: str = "",
) -> None:
    """PNG of labelled points with optional vertical error bars; ``sizes`` (e.g. parameters,
    in millions) scale the markers' areas, labelled ``size_label``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.errorbar(xs, ys, yerr=yerr, fmt="none", capsize=3, ecolor="0.4")
    if sizes is not None and len(sizes) == len(xs) and all(v == v for v in sizes):
        areas = [30.0 * float(v) for v in sizes]
        ax.scatter(xs, ys, s=areas, alpha=0.6, edgecolors="k", zorder=3)
        labels = [f"{lb} ({v:.1f}{size_label})" for lb, v in zip(labels, sizes)]
    else:
        ax.scatter(xs, ys, zorder=3)
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120, crop=False)
