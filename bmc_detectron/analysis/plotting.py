"""Matplotlib helpers of the analyses: Agg figures (no pyplot state), atomic PNG writes, colours."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bmc_detectron.utils.io import PathLike, atomic_write_bytes

#: colours of the gts of one image (cycled): matplotlib's "tab10"
GT_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
#: colours of the pyramid levels P3..P7 (and beyond, cycled)
LEVEL_COLORS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725", "#f89540")


def gt_color(index: int) -> str:
    """Display colour of gt ``index`` of an image."""
    return GT_COLORS[index % len(GT_COLORS)]


def new_figure(width: float, height: float) -> Figure:
    """An Agg-backed figure of ``width`` x ``height`` inches."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def grid_shape(n: int, max_cols: int) -> Tuple[int, int]:
    """(rows, cols) of a grid holding ``n`` panels, at most ``max_cols`` wide."""
    cols = max(1, min(n, max_cols))
    return max(1, -(-n // cols)), cols


def save_figure(fig: Figure, path: PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG atomically; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())
