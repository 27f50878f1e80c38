"""Figures of the label-assignment visualiser: one panel per assigner, positives per gt and level,
ATSS' per-level IoU statistics (the thesis' Fig. 1.5) and dataset statistics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from bmc_detectron.analysis.assignment import (
    ATSSStats,
    ImageAssignment,
    anchor_levels,
    per_level_counts,
)
from bmc_detectron.modeling.assigners import AnchorLayout
from bmc_detectron.reporting.plots import grid_shape, new_figure

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


def level_names(layout: AnchorLayout) -> List[str]:
    """ "P3", "P4", ... from the levels' strides (P<log2 stride>)."""
    return [
        f"P{int(round(math.log2(s)))}" if s > 0 else f"L{i}" for i, s in enumerate(layout.strides)
    ]


def _draw_gts(ax: Axes, gt_boxes: np.ndarray, labels: Sequence[str]) -> None:
    for g, (x0, y0, x1, y1) in enumerate(gt_boxes.tolist()):
        color = gt_color(g)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=color, lw=1.6))
        ax.text(
            x0,
            y0 - 1,
            labels[g],
            color="white",
            fontsize=6,
            va="bottom",
            bbox={"fc": color, "ec": "none", "pad": 0.6},
        )


def _draw_locations(ax: Axes, centers: np.ndarray, level: np.ndarray, color: str) -> None:
    """Positive anchors of one gt: a dot per (location, level), bigger on higher levels, with
    the number of its anchors when several anchors of one location are positive."""
    if len(centers) == 0:
        return
    keys, counts = np.unique(np.column_stack([centers, level]), axis=0, return_counts=True)
    ax.scatter(
        keys[:, 0],
        keys[:, 1],
        s=10 + 12 * keys[:, 2],
        c=color,
        edgecolors="white",
        linewidths=0.5,
        zorder=3,
    )
    for (x, y, _), n in zip(keys, counts):
        if n > 1:
            ax.text(x + 2, y - 2, str(n), fontsize=5, color="black", zorder=4)


def draw_assignment_panel(
    ax: Axes,
    image_rgb: np.ndarray,
    assignment: ImageAssignment,
    name: str,
    title: str,
    gt_labels: Sequence[str],
    boxes: bool = False,
) -> None:
    """One assigner on one image: gts, each gt's positive anchors in its colour (centres, marker
    size growing with the pyramid level; optionally the anchor boxes) and ignored anchors as grey
    crosses.

    Args:
        image_rgb: (H, W, 3) uint8 image at the model's input size.
        assignment: the image's assignment (anchors and gts in the same pixels).
    """
    res = assignment.results[name]
    centers = assignment.layout.centers().numpy()
    level = anchor_levels(assignment.layout)
    labels, matched = res.labels.numpy(), res.matched_idxs.numpy()
    ax.imshow(image_rgb)
    ign = labels == -1
    if ign.any():
        ax.scatter(centers[ign, 0], centers[ign, 1], s=9, marker="x", c="0.55", lw=0.6)
    anchor_boxes = assignment.layout.boxes.numpy()
    for g in range(len(assignment.gt_boxes)):
        sel = (labels == 1) & (matched == g)
        if boxes:
            for x0, y0, x1, y1 in anchor_boxes[sel].tolist():
                ax.add_patch(
                    Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=gt_color(g), lw=0.5)
                )
        _draw_locations(ax, centers[sel], level[sel], gt_color(g))
    _draw_gts(ax, assignment.gt_boxes.numpy(), gt_labels)
    h, w = image_rgb.shape[:2]
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def draw_assignment_figure(
    image_rgb: np.ndarray,
    assignment: ImageAssignment,
    titles: Dict[str, str],
    gt_labels: Sequence[str],
    boxes: bool = False,
) -> Figure:
    """Every assigner of ``titles`` (name -> panel title) on one image, side by side."""
    names = list(titles)
    rows, cols = grid_shape(len(names), 3)
    h, w = image_rgb.shape[:2]
    side = 4.2
    fig = new_figure(cols * side, rows * (0.88 * side * h / w + 0.45) + 0.3)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        draw_assignment_panel(ax, image_rgb, assignment, name, titles[name], gt_labels, boxes)
    legend = [
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            color="0.3",
            label="positive anchors at a location (gt colour; bigger = higher level; number ="
            " anchors when several)",
        ),
        Line2D([], [], ls="", marker="x", color="0.55", label="ignored anchor"),
    ]
    fig.legend(handles=legend, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.06, top=0.95, hspace=0.2, wspace=0.05)
    return fig


def draw_level_counts(assignment: ImageAssignment, gt_labels: Sequence[str]) -> Figure:
    """Per assigner, one stacked bar per gt: its positives, split by pyramid level; a red cross
    marks a gt left without any positive."""
    names = list(assignment.results)
    levels = level_names(assignment.layout)
    num_gt = len(assignment.gt_boxes)
    rows, cols = grid_shape(len(names), 3)
    fig = new_figure(cols * max(3.2, 0.35 * num_gt + 1.2), rows * 2.4 + 0.5)
    x = np.arange(num_gt)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        counts = per_level_counts(assignment.results[name], assignment.layout, num_gt)
        bottom = np.zeros(num_gt)
        for lv, lname in enumerate(levels):
            color = LEVEL_COLORS[lv % len(LEVEL_COLORS)]
            ax.bar(x, counts[:, lv], bottom=bottom, color=color, width=0.75, label=lname)
            bottom += counts[:, lv]
        empty = bottom == 0
        ax.scatter(x[empty], np.zeros(int(empty.sum())), marker="x", c="red", s=25, zorder=3)
        ax.set_xticks(x)
        ax.set_xticklabels([gt_labels[g] for g in range(num_gt)], fontsize=6, rotation=90)
        ax.set_title(f"{name}: positives per gt and level", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    handles = [
        Rectangle((0, 0), 1, 1, color=LEVEL_COLORS[i % len(LEVEL_COLORS)])
        for i in range(len(levels))
    ]
    fig.legend(handles, levels, loc="lower center", ncol=len(levels), fontsize=8, frameon=False)
    fig.subplots_adjust(hspace=0.7, bottom=0.18)
    return fig


def draw_atss_chart(
    stats: ATSSStats,
    chosen: np.ndarray,
    levels: Sequence[str],
    gt_labels: Sequence[str],
    max_gts: int = 16,
) -> Figure:
    """The thesis' Fig. 1.5 for each gt: a bar per pyramid level = mean IoU of the gt's ATSS
    candidates on that level; the IoU threshold (mean + std of all its candidates) as a red
    line; levels where ATSS chose positives filled in the gt's colour, with their count.

    Args:
        stats: :func:`~.assignment.atss_statistics` of the image's G gts.
        chosen: (G, L) positives per gt and level in the ATSS assigner's result.
    """
    num = min(len(stats.mean), max_gts)
    rows, cols = grid_shape(max(num, 1), 4)
    fig = new_figure(cols * 2.6, rows * 2.2 + 0.3)
    x = np.arange(len(levels))
    for g in range(num):
        ax = fig.add_subplot(rows, cols, g + 1)
        means = np.nan_to_num(stats.level_mean_iou[g])
        colors = [gt_color(g) if chosen[g, lv] else "0.8" for lv in range(len(levels))]
        ax.bar(x, means, color=colors, edgecolor="0.3", lw=0.5)
        ax.axhline(stats.threshold[g], color="red", lw=1.2)
        ax.axhline(stats.mean[g], color="0.4", lw=0.8, ls=":")
        for lv in np.flatnonzero(chosen[g]):
            ax.text(lv, means[lv] + 0.02, f"{chosen[g, lv]} pos", ha="center", fontsize=6)
        ax.set_xticks(x)
        ax.set_xticklabels(levels, fontsize=7)
        ax.set_ylim(0, 1)
        ax.tick_params(axis="y", labelsize=6)
        ax.set_title(f"{gt_labels[g]}: threshold {stats.threshold[g]:.2f}", fontsize=8)
    legend = [
        Line2D([], [], color="red", lw=1.2, label="threshold = mean + std"),
        Line2D([], [], color="0.4", lw=0.8, ls=":", label="mean IoU of all candidates"),
        Rectangle((0, 0), 1, 1, fc="0.8", ec="0.3", label="level mean IoU, no positive"),
        Rectangle((0, 0), 1, 1, fc=gt_color(0), ec="0.3", label="level with ATSS positives"),
    ]
    fig.legend(handles=legend, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.subplots_adjust(hspace=0.6, wspace=0.35, bottom=0.22 if rows == 1 else 0.1)
    return fig


def _binned_means(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> tuple:
    """(bin centres, mean of y per bin) over the non-empty bins of ``edges``."""
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    centres, means = [], []
    for b in range(len(edges) - 1):
        sel = idx == b
        if sel.any():
            centres.append(float(x[sel].mean()))
            means.append(float(y[sel].mean()))
    return np.asarray(centres), np.asarray(means)


def draw_dataset_statistics(
    records: Dict[str, Dict[str, np.ndarray]], summary: Dict[str, dict], title: str = ""
) -> Figure:
    """Positives per gt against gt size and against crowding, and, per assigner, the share of
    gts without positive and of positives whose anchor centre lies outside the gt box."""
    fig = new_figure(15, 4.2)
    ax_size, ax_crowd, ax_share = (fig.add_subplot(1, 3, i + 1) for i in range(3))
    names = list(records)
    sizes = np.concatenate([r["size"] for r in records.values()]) if names else np.zeros(1)
    edges = np.quantile(sizes, np.linspace(0, 1, 7)) if sizes.size else np.zeros(2)
    edges[-1] += 1e-6
    for i, name in enumerate(names):
        r, color = records[name], gt_color(i)
        ax_size.scatter(r["size"], r["positives"], s=5, color=color, alpha=0.25)
        cx, cy = _binned_means(r["size"], r["positives"], edges)
        ax_size.plot(cx, cy, color=color, marker="o", ms=3, label=name)
        crowd = np.minimum(r["crowding"], 3)
        xs = [c for c in range(4) if (crowd == c).any()]
        ax_crowd.plot(
            xs, [r["positives"][crowd == c].mean() for c in xs], marker="o", color=color, label=name
        )
    ax_size.set(xlabel="gt size sqrt(area) [px at model input]", ylabel="positives per gt")
    ax_crowd.set(xlabel="other gts overlapping the gt", ylabel="mean positives per gt")
    ax_crowd.set_xticks(range(4))
    ax_crowd.set_xticklabels(["0", "1", "2", "3+"])
    x = np.arange(len(names))
    no_pos = [summary[n]["share_gts_without_positive"] or 0.0 for n in names]
    outside = [summary[n]["share_positives_centre_outside_box"] or 0.0 for n in names]
    ax_share.bar(x - 0.2, no_pos, width=0.4, color="#d62728", label="gts without positive")
    ax_share.bar(
        x + 0.2, outside, width=0.4, color="#1f77b4", label="positives centred outside box"
    )
    for xi, a, b in zip(x, no_pos, outside):
        ax_share.text(xi - 0.2, a + 0.01, f"{100 * a:.0f}%", ha="center", fontsize=6)
        ax_share.text(xi + 0.2, b + 0.01, f"{100 * b:.0f}%", ha="center", fontsize=6)
    ax_share.set_xticks(x)
    ax_share.set_xticklabels(names, fontsize=8, rotation=30)
    ax_share.set(ylabel="share", ylim=(0, 1))
    for ax in (ax_size, ax_crowd, ax_share):
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def panel_title(name: str, needs_predictions: bool, weights: str, counts: Optional[tuple]) -> str:
    """Panel title: the assigner, what predictions it saw, and (positives, ignored) counts."""
    source = ""
    if needs_predictions:
        source = f" (predictions of {Path(weights).name})" if weights else " (untrained model)"
    text = f"{name}{source}"
    if counts is not None:
        text += f"\n{counts[0]} positives, {counts[1]} ignored"
    return text
