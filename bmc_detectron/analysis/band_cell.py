"""The band-cell case: a band neutrophil (synthetic ``Rods``) whose U-shaped nucleus leaves the
centre of the cell's box off the nucleus, and where each assigner puts its positive anchors.

The synthetic generator (:mod:`bmc_detectron.data.synthetic`, one cell on a clean white canvas)
draws a Rods cell as a round, pale cytoplasm around a C/U-shaped band nucleus; the annotated box is
tight around the whole cell. Its centre therefore lies in the opening of the U, on pale cytoplasm
that is nearly the colour of the smear background, not on the dark nucleus that carries the cell's
appearance. Pixels are classified as nucleus (dark), cytoplasm (stained, not dark) or background
(the white canvas) on the model-input image.
"""

from __future__ import annotations

from typing import Dict, NamedTuple

import cv2
import numpy as np
from detectron2.config import CfgNode
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bmc_detectron.analysis.assignment import ImageAssignment
from bmc_detectron.analysis.inference import ModelInput, make_input
from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.data.synthetic import generate_image
from bmc_detectron.reporting.plots import grid_shape, new_figure

ROD_CLASS = MARROW_ABBRS.index("Rods")
#: grey level below which a pixel of the clean rendering is nucleus (the band nucleus is
#: RGB ~(78, 42, 110), the cytoplasm ~(228, 204, 218), the canvas 255)
NUCLEUS_GREY = 140
#: grey level below which a pixel belongs to the cell at all
CELL_GREY = 250
PIXEL_KINDS = ("background", "cytoplasm", "nucleus")


class BandCell(NamedTuple):
    """A rendered band cell at the model's input size.

    Attributes:
        model_input: the detectron2 input (gt = the cell's box) and its RGB image.
        kinds: (H, W) uint8 pixel kind, index into :data:`PIXEL_KINDS`.
        box: (4,) XYXY cell box in model-input pixels.
        centre_kind: the kind of the pixel at the box centre.
    """

    model_input: ModelInput
    kinds: np.ndarray
    box: np.ndarray
    centre_kind: str


def pixel_kinds(image_rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 kinds of a clean rendering: 0 background, 1 cytoplasm, 2 nucleus (the largest
    dark component, so that dark granules are not taken for nucleus)."""
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    kinds = (grey < CELL_GREY).astype(np.uint8)
    dark = (grey < NUCLEUS_GREY).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if n > 1:
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        kinds[comp == largest] = 2
    return kinds


def render_band_cell(
    cfg: CfgNode, seed: int = 0, size: int = 256, num_classes: int = 11
) -> BandCell:
    """One synthetic Rods cell on a clean ``size`` x ``size`` canvas, resized as at test time.

    The gt class is Rods when the model has that many classes, else 0 (the class only enters
    the prediction-aware assigners' classification cost).
    """
    probs = np.zeros(len(MARROW_ABBRS))
    probs[ROD_CLASS] = 1.0
    rng = np.random.default_rng(seed)
    image, boxes, _ = generate_image(rng, size, size, (1, 1), 1.0, class_probs=probs, clean=True)
    cls = ROD_CLASS if num_classes > ROD_CLASS else 0
    bgr = image[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else image
    model_input = make_input(cfg, np.ascontiguousarray(bgr), boxes[:1], np.array([cls]))
    kinds = pixel_kinds(model_input.image_rgb)
    box = model_input.inputs["instances"].gt_boxes.tensor[0].numpy().astype(np.float64)
    cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    return BandCell(model_input, kinds, box, PIXEL_KINDS[int(kinds[cy, cx])])


def positive_pixel_kinds(cell: BandCell, assignment: ImageAssignment) -> Dict[str, Dict[str, int]]:
    """Per assigner, how many of the cell's positive anchors are centred on each pixel kind."""
    centers = assignment.layout.centers().numpy()
    h, w = cell.kinds.shape
    out = {}
    for name, res in assignment.results.items():
        pos = (res.labels == 1).numpy() & (res.matched_idxs.numpy() == 0)
        xs = np.clip(centers[pos, 0].astype(int), 0, w - 1)
        ys = np.clip(centers[pos, 1].astype(int), 0, h - 1)
        found = cell.kinds[ys, xs]
        out[name] = {k: int((found == i).sum()) for i, k in enumerate(PIXEL_KINDS)}
    return out


def draw_band_cell(cell: BandCell, assignment: ImageAssignment, titles: Dict[str, str]) -> Figure:
    """Per assigner, the band cell (zoomed), its box, the box centre (star) and the positive
    anchor centres: filled where they fall on the nucleus, hollow elsewhere."""
    x0, y0, x1, y1 = cell.box
    pad = 0.6 * max(x1 - x0, y1 - y0)
    kinds = positive_pixel_kinds(cell, assignment)
    centers = assignment.layout.centers().numpy()
    h, w = cell.kinds.shape
    rows, cols = grid_shape(len(titles), 3)
    fig = new_figure(cols * 3.4, rows * 3.6 + 0.5)
    for i, (name, title) in enumerate(titles.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(cell.model_input.image_rgb)
        ax.contour(cell.kinds == 2, levels=[0.5], colors="black", linewidths=0.6)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#d62728", lw=1.4))
        ax.plot((x0 + x1) / 2, (y0 + y1) / 2, marker="*", ms=12, color="#d62728", mec="white")
        res = assignment.results[name]
        pos = (res.labels == 1).numpy() & (res.matched_idxs.numpy() == 0)
        xs, ys = centers[pos, 0], centers[pos, 1]
        on_nuc = cell.kinds[np.clip(ys.astype(int), 0, h - 1), np.clip(xs.astype(int), 0, w - 1)]
        on_nuc = on_nuc == 2
        ax.scatter(xs[on_nuc], ys[on_nuc], s=28, c="#1f77b4", edgecolors="white", zorder=3)
        ax.scatter(xs[~on_nuc], ys[~on_nuc], s=28, facecolors="none", edgecolors="#1f77b4", lw=1.2)
        k = kinds[name]
        ax.set_title(
            f"{title}\non nucleus {k['nucleus']}, cytoplasm {k['cytoplasm']}, "
            f"background {k['background']}",
            fontsize=7,
        )
        ax.set_xlim(max(0, x0 - pad), min(w, x1 + pad))
        ax.set_ylim(min(h, y1 + pad), max(0, y0 - pad))
        ax.axis("off")
    fig.suptitle(
        f"Band cell (Rods): box centre (star) lies on {cell.centre_kind}, not on the U-shaped "
        "nucleus (black contour)",
        fontsize=9,
    )
    return fig
