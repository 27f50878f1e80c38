"""Acquisition scores: how unsure a detector is about an image, from its detections.

All functions are pure numpy. Higher always means "label this image sooner".

Per-box class uncertainty works on an (N, K) matrix of class scores, one row per kept box.
RetinaNet scores classes with independent sigmoids, so a row need not sum to 1; every function
first turns a row into a distribution over the K classes (:func:`as_distribution`: divide by the
row sum). The question asked is "which class is this cell?"; whether it is a cell at all is the
job of the detection score and of the consistency score below. Softmax rows (the cell
classifier's probabilities) pass through unchanged.

* least confidence: ``1 - max_k p_k``
* margin: ``1 - (p_(1) - p_(2))``, one minus the gap between the two best classes
* entropy: ``-sum_k p_k log p_k`` (natural log), 0 for a one-hot row, ``log K`` for uniform

Per-image aggregation of the per-box values: ``max``, ``mean`` or ``sum``; an image without
boxes scores 0.

Consistency (in the spirit of CALD, Yu et al. 2022): the detections on the image are compared
with those on transformed copies (flipped, stain-jittered) mapped back into the image. Each box
of the original is matched greedily (highest IoU first, IoU >= ``min_iou``) to a box of the view;
a matched box scores ``((1 - IoU) + |score difference|) / 2``, an unmatched box (on either side)
scores 1. A box's value is averaged over the views.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from bmc_detectron.structures.boxes import box_iou
from bmc_detectron.structures.matching import greedy_match

STRATEGIES = ("random", "least_confidence", "margin", "entropy", "consistency")
AGGREGATES = ("max", "mean", "sum")
_EPS = 1e-12


def as_distribution(scores: np.ndarray) -> np.ndarray:
    """(N, K) non-negative class scores -> rows that sum to 1 (all-zero rows become uniform)."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = np.clip(
        scores.reshape(len(scores), -1) if scores.size else scores.reshape(0, 1), 0, None
    )
    total = scores.sum(axis=1, keepdims=True)
    k = max(scores.shape[1], 1)
    uniform = np.full_like(scores, 1.0 / k)
    return np.where(total > _EPS, scores / np.maximum(total, _EPS), uniform)


def least_confidence(scores: np.ndarray) -> np.ndarray:
    """(N,) ``1 - max p`` per box."""
    p = as_distribution(scores)
    return 1.0 - p.max(axis=1) if len(p) else np.zeros(0)


def margin(scores: np.ndarray) -> np.ndarray:
    """(N,) ``1 - (p_best - p_second)`` per box (1 - p_best for a single class)."""
    p = as_distribution(scores)
    if not len(p):
        return np.zeros(0)
    top = -np.sort(-p, axis=1)
    second = top[:, 1] if p.shape[1] > 1 else np.zeros(len(p))
    return 1.0 - (top[:, 0] - second)


def entropy(scores: np.ndarray) -> np.ndarray:
    """(N,) Shannon entropy (nats) of each box's class distribution."""
    p = as_distribution(scores)
    if not len(p):
        return np.zeros(0)
    return -(p * np.log(np.maximum(p, _EPS))).sum(axis=1)


BOX_SCORES = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}


def aggregate(values: np.ndarray, how: str = "max") -> float:
    """One image score from its per-box values: ``max``, ``mean`` or ``sum`` (0 for no boxes)."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, not {how!r}")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if not len(values):
        return 0.0
    return float({"max": np.max, "mean": np.mean, "sum": np.sum}[how](values))


def view_disagreement(
    boxes: np.ndarray,
    scores: np.ndarray,
    view_boxes: np.ndarray,
    view_scores: np.ndarray,
    min_iou: float = 0.3,
) -> Tuple[np.ndarray, int]:
    """Per original box disagreement with one view, and the number of unmatched view boxes.

    A matched box: ``((1 - IoU) + |score - view score|) / 2``; an unmatched one: 1.
    """
    n, m = len(scores), len(view_scores)
    iou = box_iou(boxes, view_boxes)
    per_box = np.ones(n)
    pairs = greedy_match(iou, min_iou)
    for i, j in pairs:
        per_box[i] = ((1.0 - iou[i, j]) + abs(float(scores[i]) - float(view_scores[j]))) / 2.0
    return per_box, m - len(pairs)


def consistency_values(
    boxes: np.ndarray,
    scores: np.ndarray,
    views: Sequence[Tuple[np.ndarray, np.ndarray]],
    min_iou: float = 0.3,
) -> np.ndarray:
    """Per-box inconsistency over ``views`` ((boxes, scores) already in the image's pixels).

    Returns the original boxes' values averaged over views, followed by one value of 1 per view
    box that matched nothing (a cell seen only in a copy is a disagreement too), divided by the
    number of views so that each view weighs the same.
    """
    if not views:
        return np.zeros(len(scores))
    per_box = np.zeros(len(scores))
    extra = 0
    for view_boxes, view_scores in views:
        values, unmatched = view_disagreement(boxes, scores, view_boxes, view_scores, min_iou)
        per_box += values
        extra += unmatched
    per_box /= len(views)
    return np.concatenate([per_box, np.full(extra, 1.0 / len(views))])


def image_score(
    strategy: str,
    class_scores: np.ndarray,
    how: str = "max",
    consistency: np.ndarray | None = None,
) -> float:
    """The acquisition score of one image for a non-random ``strategy``."""
    if strategy == "consistency":
        if consistency is None:
            raise ValueError("the consistency strategy needs the per-box consistency values")
        return aggregate(consistency, how)
    if strategy not in BOX_SCORES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    return aggregate(BOX_SCORES[strategy](class_scores), how)


def random_scores(keys: Sequence[str], seed: int = 0) -> Dict[str, float]:
    """The random control: a uniform score per image, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    values = rng.random(len(keys))
    return {k: float(v) for k, v in zip(keys, values)}
