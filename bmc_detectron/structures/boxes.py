"""Box geometry of the analyses, in numpy: IoU, crowding and point-in-box tests.

Boxes are XYXY in pixels, as detectron2 stores them (``x1 > x0`` for a non-empty box).
"""

from __future__ import annotations

import numpy as np


def as_boxes(boxes: object) -> np.ndarray:
    """``boxes`` (anything array-like of XYXY rows, possibly empty) as a float64 (N, 4) array."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(N,) areas of (N, 4) XYXY boxes; inverted boxes have area 0."""
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def intersection(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(N, M) intersection areas of (N, 4) and (M, 4) XYXY boxes."""
    a, b = as_boxes(boxes1), as_boxes(boxes2)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) XYXY boxes; 0 where the union is empty."""
    inter = intersection(boxes1, boxes2)
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


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
