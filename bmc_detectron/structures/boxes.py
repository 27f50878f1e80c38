"""Box geometry in numpy: areas, intersections, IoU, crowding and point-in-box tests.

Boxes are XYXY in pixels, as detectron2 stores them (``x1 > x0`` for a non-empty box).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike


def as_boxes(boxes: object, dtype: DTypeLike = np.float64) -> np.ndarray:
    """``boxes`` (anything array-like of XYXY rows, possibly empty) as an (N, 4) array of
    ``dtype`` (float64 by default)."""
    return np.asarray(boxes, dtype=dtype).reshape(-1, 4)


def record_boxes(record: dict, category: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(G, 4) XYXY boxes and (G,) category ids of a detectron2 dataset dict's non-crowd
    annotations, of ``category`` only unless None (a missing ``bbox_mode`` is COCO's XYWH)."""
    from detectron2.structures import BoxMode

    boxes, classes = [], []
    for ann in record.get("annotations", []):
        cls = int(ann.get("category_id", -1))
        if ann.get("iscrowd", 0) or (category is not None and cls != category):
            continue
        mode = ann.get("bbox_mode", BoxMode.XYWH_ABS)
        boxes.append(BoxMode.convert(list(ann["bbox"]), mode, BoxMode.XYXY_ABS))
        classes.append(cls)
    return as_boxes(boxes), np.asarray(classes, np.int64)


def clipped_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of XYXY boxes along the last axis (any leading shape, dtype kept); inverted boxes
    have area 0."""
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(
        boxes[..., 3] - boxes[..., 1], 0, None
    )


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(N,) areas of (N, 4) XYXY boxes (any array-like, as float64); inverted boxes have area 0."""
    return clipped_area(as_boxes(boxes))


def overlap_box(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """The boxes where ``boxes1`` and ``boxes2`` overlap, pair by pair along the last axis (numpy
    broadcasting, dtype kept); inverted (area 0) where they do not overlap."""
    return np.concatenate(
        [
            np.maximum(boxes1[..., :2], boxes2[..., :2]),
            np.minimum(boxes1[..., 2:], boxes2[..., 2:]),
        ],
        -1,
    )


def intersection(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(N, M) intersection areas of (N, 4) and (M, 4) XYXY boxes."""
    a, b = as_boxes(boxes1), as_boxes(boxes2)
    return clipped_area(overlap_box(a[:, None], b[None, :]))


def safe_ratio(num: np.ndarray, den: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``num / den`` where ``den > 0``, else 0 (``den`` floored at ``eps``; dtype kept)."""
    return np.where(den > 0, num / np.maximum(den, eps), 0.0)


def iou_from_areas(
    inter: np.ndarray, area1: np.ndarray, area2: np.ndarray, eps: float = 1e-12
) -> np.ndarray:
    """IoU from the intersection and the two areas (broadcast); 0 where the union is empty."""
    return safe_ratio(inter, area1 + area2 - inter, eps)


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray, dtype: DTypeLike = np.float64) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) XYXY boxes (any array-like, possibly empty), computed in
    ``dtype``; 0 where the union is empty (zero-area boxes). In float32 these are exactly the
    numbers of detectron2's ``pairwise_iou`` (its ``Boxes`` hold float32)."""
    a, b = as_boxes(boxes1, dtype), as_boxes(boxes2, dtype)
    inter = clipped_area(overlap_box(a[:, None], b[None, :]))
    return iou_from_areas(inter, clipped_area(a)[:, None], clipped_area(b)[None, :])


def overlap_counts(boxes: np.ndarray) -> np.ndarray:
    """(G,) int: for each of (G, 4) boxes of one image, how many *other* boxes overlap it
    (intersection of positive area) — the crowding of a cell."""
    inter = intersection(boxes, boxes)
    np.fill_diagonal(inter, 0.0)
    return (inter > 0).sum(axis=1).astype(np.int64)


def is_crowded(boxes: np.ndarray) -> np.ndarray:
    """(G,) bool: the box overlaps at least one other box of the same image."""
    return overlap_counts(boxes) > 0


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,) bool: point i (x, y) lies inside box i (borders included).

    Args:
        points: (N, 2) points.
        boxes: (N, 4) XYXY boxes, one per point.
    """
    p, b = np.asarray(points, np.float64).reshape(-1, 2), as_boxes(boxes)
    return (p[:, 0] >= b[:, 0]) & (p[:, 0] <= b[:, 2]) & (p[:, 1] >= b[:, 1]) & (p[:, 1] <= b[:, 3])
