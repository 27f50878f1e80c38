"""Comparing two detection results as sets (ONNX Runtime's NMS output order is not PyTorch's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import numpy as np


@dataclass
class SetComparison:
    """How two detection sets differ.

    Attributes:
        count_a, count_b: the number of detections of each.
        matched: pairs matched one to one (same class, nearest box).
        max_box_diff: largest coordinate difference of a matched pair, in pixels.
        max_score_diff: largest score difference of a matched pair.
        unmatched_a, unmatched_b: scores of the detections left without a partner.
    """

    count_a: int
    count_b: int
    matched: int
    max_box_diff: float
    max_score_diff: float
    unmatched_a: np.ndarray
    unmatched_b: np.ndarray

    def equal(self, box_tol: float = 0.01, score_tol: float = 1e-4) -> bool:
        """True when every detection is matched within the tolerances."""
        return (
            self.count_a == self.count_b == self.matched
            and self.max_box_diff <= box_tol
            and self.max_score_diff <= score_tol
        )

    def to_json(self) -> Dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "count_a": self.count_a,
            "count_b": self.count_b,
            "matched": self.matched,
            "max_box_diff": self.max_box_diff,
            "max_score_diff": self.max_score_diff,
        }


def _as_arrays(dets: Any):
    boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)
    return boxes, np.asarray(dets.scores, np.float64).reshape(-1), np.asarray(dets.classes)


def compare_detections(a: Any, b: Any, box_tol: float = 0.5) -> SetComparison:
    """Match ``a``'s detections to ``b``'s one to one, as sets.

    ``a`` and ``b`` have ``boxes`` (N, 4), ``scores`` (N,), ``classes`` (N,). Pairs are formed
    greedily, highest score of ``a`` first, with the unused detection of ``b`` of the same class
    whose box is nearest (largest coordinate difference) if that difference is below ``box_tol``
    pixels.
    """
    boxes_a, scores_a, classes_a = _as_arrays(a)
    boxes_b, scores_b, classes_b = _as_arrays(b)
    free = np.ones(len(scores_b), dtype=bool)
    box_diff = score_diff = 0.0
    left_a = []
    for i in np.argsort(-scores_a, kind="stable"):
        dist = np.abs(boxes_b - boxes_a[i]).max(axis=1) if len(boxes_b) else np.zeros(0)
        dist = np.where(free & (classes_b == classes_a[i]), dist, np.inf)
        j = int(np.argmin(dist)) if len(dist) else -1
        if j < 0 or dist[j] > box_tol:
            left_a.append(scores_a[i])
            continue
        free[j] = False
        box_diff = max(box_diff, float(dist[j]))
        score_diff = max(score_diff, float(abs(scores_a[i] - scores_b[j])))
    return SetComparison(
        count_a=len(scores_a),
        count_b=len(scores_b),
        matched=int((~free).sum()),
        max_box_diff=box_diff,
        max_score_diff=score_diff,
        unmatched_a=np.asarray(left_a),
        unmatched_b=scores_b[free],
    )
