"""Galleries of the worst errors of each type, drawn with detectron2's ``Visualizer``: for each
case the image region with its gts (left) and the detections (right), the error's own gt and
detection outlined in red dashes (the thesis' Fig. 1.1 for any model).

"Worst": detection errors by decreasing score (a confident mistake costs most AP); missed gts by
decreasing box area (the most conspicuous cells the model did not find).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import cv2
import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import Visualizer

from bmc_detectron.analysis.tide import (
    ERROR_NAMES,
    Attribution,
    GtOutcome,
    ImageDetections,
    PredOutcome,
)
from bmc_detectron.structures.boxes import as_boxes, box_area

#: side (px) of a drawn case panel
PANEL = 320
HIGHLIGHT = "red"


def worst_cases(
    attribution: Attribution, images: Sequence[ImageDetections], kind: str, n: int
) -> List[Union[PredOutcome, GtOutcome]]:
    """The ``n`` worst outcomes of error type ``kind`` (see the module docstring)."""
    errors = attribution.errors(kind)
    if kind == "missed":
        area = [float(box_area(as_boxes(images[g.image].gt_boxes)[g.gt])[0]) for g in errors]
        order = np.argsort(-np.asarray(area), kind="stable")
    else:
        order = np.argsort(-np.asarray([p.score for p in errors]), kind="stable")
    return [errors[i] for i in order[:n]]


def _region(focus: np.ndarray, height: int, width: int) -> tuple:
    """(x0, y0, x1, y1) integer crop around the focus boxes: their union, grown by its size on
    every side, at least 96 px, inside the image."""
    x0, y0 = focus[:, 0].min(), focus[:, 1].min()
    x1, y1 = focus[:, 2].max(), focus[:, 3].max()
    side = max(x1 - x0, y1 - y0, 32.0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(1.5 * side, 48.0)
    rx0, ry0 = int(max(0, cx - half)), int(max(0, cy - half))
    return rx0, ry0, int(min(width, cx + half)), int(min(height, cy + half))


def _panel(
    crop: np.ndarray, meta: Metadata, boxes, classes, texts, focus, title: str
) -> np.ndarray:
    """One Visualizer drawing of a crop: boxes in their class colours, ``focus`` in red dashes."""
    scale = PANEL / max(crop.shape[:2])
    vis = Visualizer(crop, meta, scale=scale)
    colors = meta.get("thing_colors")
    assigned = [
        np.asarray(colors[c], float) / 255 if colors and c < len(colors) else (0.1, 0.6, 0.1)
        for c in classes
    ]
    if len(boxes):
        vis.overlay_instances(boxes=boxes, labels=texts, assigned_colors=assigned)
    if focus is not None:
        vis.draw_box(focus, alpha=1.0, edge_color=HIGHLIGHT, line_style="--")
    vis.draw_text(title, (2, 2), color="white", horizontal_alignment="left")
    return vis.get_output().get_image()


def _name(names: Sequence[str], c: int) -> str:
    return names[c] if c < len(names) else str(c)


def _pad_to(a: np.ndarray, height: int) -> np.ndarray:
    return np.pad(a, ((0, height - a.shape[0]), (0, 0), (0, 0)), constant_values=255)


def draw_case(
    image_rgb: np.ndarray,
    im: ImageDetections,
    case: Union[PredOutcome, GtOutcome],
    meta: Metadata,
    score_threshold: float,
) -> np.ndarray:
    """gt panel and detection panel of one error case, side by side ((h, w, 3) uint8).

    Args:
        image_rgb: (H, W, 3) the image in the pixels of ``im``'s boxes.
        case: a :class:`PredOutcome` (detection error) or :class:`GtOutcome` (missed gt).
    """
    names = meta.get("thing_classes") or []
    gts, preds = as_boxes(im.gt_boxes), as_boxes(im.pred_boxes)
    gt_idx = case.gt
    pred_idx = case.pred if isinstance(case, PredOutcome) else -1
    focus = [gts[gt_idx]] if gt_idx >= 0 else []
    focus += [preds[pred_idx]] if pred_idx >= 0 else []
    x0, y0, x1, y1 = _region(np.stack(focus), *image_rgb.shape[:2])
    crop = np.ascontiguousarray(image_rgb[y0:y1, x0:x1])
    shift = np.array([x0, y0, x0, y0], np.float64)
    scores = np.asarray(im.pred_scores, np.float64)
    keep = scores >= score_threshold
    if pred_idx >= 0:
        keep[pred_idx] = True
    gt_cls, pred_cls = np.asarray(im.gt_classes), np.asarray(im.pred_classes)
    gt_focus = gts[gt_idx] - shift if gt_idx >= 0 else None
    left = _panel(
        crop, meta, gts - shift, gt_cls, [_name(names, c) for c in gt_cls], gt_focus, "gt"
    )
    texts = [f"{_name(names, c)} {s:.2f}" for c, s in zip(pred_cls[keep], scores[keep])]
    pred_focus = preds[pred_idx] - shift if pred_idx >= 0 else None
    title = f"detections >= {score_threshold:g}"
    right = _panel(crop, meta, preds[keep] - shift, pred_cls[keep], texts, pred_focus, title)
    height = max(left.shape[0], right.shape[0])
    sep = np.full((height, 6, 3), 255, np.uint8)
    return np.hstack([_pad_to(left, height), sep, _pad_to(right, height)])


def case_caption(
    case: Union[PredOutcome, GtOutcome], im: ImageDetections, names: Sequence[str], file_name: str
) -> str:
    """One line describing an error case."""
    where = file_name.rsplit("/", 1)[-1]
    if isinstance(case, GtOutcome):
        return f"missed {_name(names, case.cls)} gt #{case.gt} in {where}"
    text = f"{ERROR_NAMES[case.kind]}: {_name(names, case.cls)} {case.score:.2f}"
    if case.gt >= 0:
        text += f" vs gt {_name(names, int(im.gt_classes[case.gt]))} (IoU {case.iou:.2f})"
    return text + f" in {where}"


def stack_gallery(panels: List[np.ndarray], captions: List[str]) -> Optional[np.ndarray]:
    """Case drawings one under the other, each under a caption band; None when empty."""
    if not panels:
        return None
    width = max(p.shape[1] for p in panels)
    rows = []
    for panel, caption in zip(panels, captions):
        band = np.full((22, width, 3), 255, np.uint8)
        cv2.putText(
            band, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
        body = np.pad(panel, ((0, 8), (0, width - panel.shape[1]), (0, 0)), constant_values=255)
        rows += [band, body]
    return np.vstack(rows)
