"""Greedy one-to-one matching of boxes, in numpy, from an IoU matrix.

Two orders, two ideas:

- :func:`greedy_match`: all pairs by decreasing IoU (ties to the lower row, then the lower
  column); a pair is taken when neither of its boxes is taken yet. Symmetric in rows and columns:
  the confusion matrix (ground truth x detections) and the consistency of two detections.
- :func:`match_by_score`: the rows (predictions) in decreasing score, each taking the free column
  (ground truth) of highest IoU, as COCO's evaluation matches: an evaluation of detections.
"""

from __future__ import annotations

import numpy as np


def greedy_match(iou: np.ndarray, min_iou: float) -> np.ndarray:
    """(P, 2) int64 (row, column) pairs of an (N, M) IoU matrix taken greedily by decreasing IoU,
    each row and column at most once, IoU >= ``min_iou``; ties go to the lower (row, column)."""
    rows, cols = np.nonzero(iou >= min_iou)
    order = np.lexsort((cols, rows, -iou[rows, cols]))
    used_r, used_c, out = set(), set(), []
    for r, c in zip(rows[order], cols[order]):
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            out.append((r, c))
    return np.asarray(out, np.int64).reshape(-1, 2)


def match_by_score(iou: np.ndarray, scores: np.ndarray, min_iou: float) -> np.ndarray:
    """(P, 2) int64 (row, column) pairs of an (N, M) IoU matrix: the rows by decreasing
    ``scores`` (N,) (stable), each to the free column of highest IoU (the lower one on ties) when
    that IoU is >= ``min_iou``; a row finding none stays unmatched."""
    taken = np.zeros(iou.shape[1], dtype=bool)
    pairs = []
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        if not iou.shape[1]:
            break
        row = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= min_iou:
            taken[j] = True
            pairs.append((int(i), j))
    return np.asarray(pairs, np.int64).reshape(-1, 2)
