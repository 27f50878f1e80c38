"""Detection confusion matrix with a background row and column.

At an operating point (detections scoring at least ``score_threshold``), detections and gts of an
image are paired class-agnostically, greedily by decreasing IoU, each at most once, when their IoU
reaches ``iou_threshold``. A pair counts in (gt class, detected class); a gt left without a
detection in (gt class, background) — a missed cell; a detection left without a gt in
(background, detected class) — a false positive.
"""

from __future__ import annotations

import csv
import io
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from bmc_detectron.analysis.tide import ImageDetections
from bmc_detectron.reporting.plots import new_figure
from bmc_detectron.structures.boxes import as_boxes, box_iou
from bmc_detectron.structures.matching import greedy_match
from bmc_detectron.utils.io import PathLike, atomic_write_text


def confusion_matrix(
    images: Sequence[ImageDetections],
    num_classes: int,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """(K + 1, K + 1) int64 counts: rows gt class then background, columns detected class then
    background; the (background, background) cell stays 0."""
    k = num_classes
    m = np.zeros((k + 1, k + 1), np.int64)
    for im in images:
        keep = np.asarray(im.pred_scores) >= score_threshold
        pred_boxes = as_boxes(im.pred_boxes)[keep]
        pred_cls = np.asarray(im.pred_classes, np.int64)[keep]
        gt_cls = np.asarray(im.gt_classes, np.int64)
        pairs = greedy_match(box_iou(as_boxes(im.gt_boxes), pred_boxes), iou_threshold)
        np.add.at(m, (gt_cls[pairs[:, 0]], pred_cls[pairs[:, 1]]), 1)
        missed = np.setdiff1d(np.arange(len(gt_cls)), pairs[:, 0])
        np.add.at(m, (gt_cls[missed], k), 1)
        spurious = np.setdiff1d(np.arange(len(pred_cls)), pairs[:, 1])
        np.add.at(m, (k, pred_cls[spurious]), 1)
    return m


def write_confusion_csv(matrix: np.ndarray, names: Sequence[str], path: PathLike) -> None:
    """The matrix as CSV: a header row of detected classes, one row per gt class."""
    labels = [*names, "background"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["gt \\ detected", *labels])
    for label, row in zip(labels, matrix.tolist()):
        writer.writerow([label, *row])
    atomic_write_text(path, buf.getvalue())


def draw_confusion(matrix: np.ndarray, names: Sequence[str], title: str = "") -> Figure:
    """Counts in every cell, coloured by the share of the row (of the gt class's cells, or of
    all false positives on the background row)."""
    labels = [*names, "background"]
    n = len(labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = new_figure(1.2 + 0.55 * n, 1.0 + 0.5 * n)
    ax = fig.add_subplot(1, 1, 1)
    img = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for r in range(n):
        for c in range(n):
            if r == n - 1 and c == n - 1:
                continue
            color = "white" if share[r, c] > 0.6 else "black"
            ax.text(c, r, str(matrix[r, c]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(n))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set(xlabel="detected class", ylabel="gt class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(img, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    return fig
