"""Acquisition scores, aggregation and batch diversity on hand-made detections."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bmc_detectron.active.acquire import anchor_class_scores, unflip_boxes
from bmc_detectron.active.diversity import class_balance, kcenter, select_batch, top_k
from bmc_detectron.active.scores import (
    aggregate,
    consistency_values,
    entropy,
    image_score,
    least_confidence,
    margin,
    random_scores,
)
from bmc_detectron.pipeline.detector import Detections


def test_box_scores_known_values() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.3, 0.2]])
    assert least_confidence(probs) == pytest.approx([0.0, 2 / 3, 0.5])
    assert margin(probs) == pytest.approx([0.0, 1.0, 0.8])
    h = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert entropy(probs) == pytest.approx([0.0, math.log(3), h])


def test_sigmoid_scores_are_normalised() -> None:
    # independent sigmoids [0.4, 0.4] are a 50/50 choice between the two classes
    assert entropy(np.array([[0.4, 0.4]])) == pytest.approx([math.log(2)])
    assert least_confidence(np.array([[0.0, 0.0]])) == pytest.approx([0.5])  # uniform


def test_aggregate_and_empty_image() -> None:
    values = np.array([0.1, 0.5, 0.3])
    assert aggregate(values, "max") == pytest.approx(0.5)
    assert aggregate(values, "mean") == pytest.approx(0.3)
    assert aggregate(values, "sum") == pytest.approx(0.9)
    assert aggregate(np.zeros(0), "max") == 0.0
    assert image_score("entropy", np.zeros((0, 3)), "sum") == 0.0
    with pytest.raises(ValueError):
        aggregate(values, "median")


def test_consistency_values() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    scores = np.array([0.9, 0.5])
    same = (boxes, scores)
    assert consistency_values(boxes, scores, [same, same]) == pytest.approx([0.0, 0.0])
    # view 1 moves box 0 (IoU 0.5 after shift 10/3), misses box 1 and adds one far box
    shifted = np.array([[10 / 3, 0, 10 + 10 / 3, 10], [50, 50, 60, 60]])
    values = consistency_values(boxes, scores, [same, (shifted, np.array([0.7, 0.4]))])
    assert values[0] == pytest.approx((0.0 + ((1 - 0.5) + 0.2) / 2) / 2)
    assert values[1] == pytest.approx(0.5)  # unmatched in one of two views
    assert values[2] == pytest.approx(0.5)  # the extra box, weighted by 1 / views


def test_unflip_and_anchor_class_scores() -> None:
    assert unflip_boxes(np.array([[0, 1, 10, 5]]), 100).tolist() == [[90, 1, 100, 5]]
    dense = torch.tensor([[0.1, 0.8, 0.3], [0.6, 0.2, 0.05], [0.3, 0.3, 0.3]])
    dets = Detections(np.zeros((2, 4)), np.array([0.6, 0.8]), np.array([0, 1]))
    out = anchor_class_scores(dense, dets)
    np.testing.assert_allclose(out, [[0.6, 0.2, 0.05], [0.1, 0.8, 0.3]], rtol=1e-6)


def test_random_is_reproducible() -> None:
    keys = ["a", "b", "c"]
    assert random_scores(keys, 3) == random_scores(keys, 3)
    assert random_scores(keys, 3) != random_scores(keys, 4)


def test_kcenter_spreads_out() -> None:
    # two tight clusters; the best four scores are all in cluster A
    feats = np.array([[1, 0.01], [1, 0.02], [1, 0.03], [1, 0.0], [0, 1], [0.01, 1]])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert top_k(scores, 2) == [0, 1]
    picks = kcenter(scores, feats, budget=2, candidates=3.0)
    assert picks[0] == 0 and picks[1] in (4, 5)
    assert select_batch(scores, 2, "kcenter", features=feats) == picks


def test_class_balance_covers_classes() -> None:
    scores = np.array([0.9, 0.85, 0.8])
    counts = np.array([[5, 0], [5, 0], [0, 5]])
    assert class_balance(scores, counts, 2, weight=1.0) == [0, 2]
    assert class_balance(scores, counts, 2, weight=0.0) == [0, 1]
    with pytest.raises(ValueError):
        select_batch(scores, 2, "class_balance")
