"""Box geometry and matching (``bmc_detectron.structures``): hand-built cases with exact answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, pairwise_iou

from bmc_detectron.structures.boxes import (
    box_area,
    box_iou,
    clipped_area,
    intersection,
    iou_from_areas,
    overlap_box,
    record_boxes,
    safe_ratio,
)
from bmc_detectron.structures.matching import greedy_match, match_by_score


def test_box_iou_hand_built():
    a = [[0, 0, 10, 10], [5, 5, 5, 9], [10, 10, 0, 0]]  # a box, a zero-area one, an inverted one
    b = [[5, 5, 15, 15], [10, 0, 20, 10], [2, 2, 4, 4], [0, 0, 10, 10], [5, 5, 5, 9]]
    iou = box_iou(a, b)  # lists of ints are fine
    assert iou.dtype == np.float64 and iou.shape == (3, 5)
    # overlap 5 x 5 of two 100-px boxes; touching edges; contained 2 x 2; identical
    assert iou[0].tolist() == [25 / 175, 0.0, 4 / 100, 1.0, 0.0]
    assert iou[1].tolist() == [0.0] * 5  # zero area, even against itself (empty union)
    assert iou[2].tolist() == [0.0] * 5  # inverted: area 0
    assert box_area(a).tolist() == [100.0, 0.0, 0.0]
    assert intersection(a, b)[0].tolist() == [25.0, 0.0, 4.0, 100.0, 0.0]


def test_box_iou_empty():
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]] * 3).shape == (0, 3)
    assert box_iou([[0, 0, 1, 1]], []).shape == (1, 0)
    assert box_iou([], []).shape == (0, 0)


def test_box_iou_equals_detectron2_pairwise_iou():
    """The count evaluation used detectron2's ``pairwise_iou`` (float32 boxes): the same numbers
    in float32, zero-area and inverted boxes included; float64 within float32's rounding."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (60, 2))
    wh = rng.uniform(0, 30, (60, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    boxes[:5, 2] = boxes[:5, 0]  # zero width
    boxes[5:8, [0, 2]] = boxes[5:8, [2, 0]]  # inverted
    a, b = boxes[:25], boxes[25:]
    ref = pairwise_iou(Boxes(torch.as_tensor(a)), Boxes(torch.as_tensor(b))).numpy()
    got = box_iou(a, b, np.float32)
    assert got.dtype == np.float32 and np.array_equal(got, ref)
    np.testing.assert_allclose(box_iou(a, b), ref, rtol=0, atol=1e-6)
    assert box_iou(a, b).dtype == np.float64


def test_elementwise_geometry_keeps_float32():
    """The tiles' merge works pair by pair on float32 boxes and stays float32."""
    a = np.float32([[[0, 0, 10, 10]], [[0, 0, 4, 4]]])  # (2, 1, 4)
    b = np.float32([[[5, 0, 15, 10], [20, 20, 30, 30]]])  # (1, 2, 4)
    box = overlap_box(a, b)
    assert box.shape == (2, 2, 4) and box.dtype == np.float32
    assert box[0, 0].tolist() == [5, 0, 10, 10]
    inter = clipped_area(box)
    assert inter.dtype == np.float32 and inter.tolist() == [[50, 0], [0, 0]]
    iou = iou_from_areas(inter, clipped_area(a), clipped_area(b), 1e-9)
    assert iou.dtype == np.float32 and iou.tolist() == [[np.float32(50 / 150), 0], [0, 0]]
    cover = safe_ratio(inter, clipped_area(a), 1e-9)
    assert cover.dtype == np.float32 and cover.tolist() == [[0.5, 0], [0, 0]]
    assert safe_ratio(np.float32([1.0]), np.float32([0.0])).tolist() == [0.0]


def test_record_boxes_hand_built():
    """XYWH (also when bbox_mode is missing) and XYXY annotations come back as XYXY; crowd
    annotations are skipped; ``category`` keeps one class."""
    from detectron2.structures import BoxMode

    record = {
        "annotations": [
            {"bbox": [10, 20, 30, 40], "category_id": 1},
            {"bbox": [0, 0, 5, 6], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
            {"bbox": [1, 1, 2, 2], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 1},
            {"bbox": [2, 3, 4, 5], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},
        ]
    }
    boxes, classes = record_boxes(record)
    np.testing.assert_array_equal(boxes, [[10, 20, 40, 60], [0, 0, 5, 6], [2, 3, 6, 8]])
    np.testing.assert_array_equal(classes, [1, 0, 1])
    boxes, classes = record_boxes(record, 1)
    np.testing.assert_array_equal(boxes, [[10, 20, 40, 60], [2, 3, 6, 8]])
    assert record_boxes({}, 0)[0].shape == (0, 4) and record_boxes({})[1].shape == (0,)


def test_greedy_match_hand_built():
    iou = np.array([[0.9, 0.8], [0.85, 0.2]])
    assert greedy_match(iou, 0.5).tolist() == [[0, 0]]
    assert greedy_match(iou, 0.2).tolist() == [[0, 0], [1, 1]]  # threshold included
    ties = np.full((2, 3), 0.5)
    assert greedy_match(ties, 0.5).tolist() == [[0, 0], [1, 1]]  # lower row, then column
    out = greedy_match(np.zeros((0, 3)), 0.3)
    assert out.shape == (0, 2) and out.dtype == np.int64
    assert greedy_match(np.zeros((2, 0)), 0.3).shape == (0, 2)


@pytest.mark.parametrize(
    "scores, expected",
    [([0.9, 0.8], [[0, 0], [1, 1]]), ([0.8, 0.9], [[1, 0]]), ([0.9, 0.9], [[0, 0], [1, 1]])],
)
def test_match_by_score_against_greedy_match(scores, expected):
    """By IoU, row 1 takes column 0 first and row 0 is left alone; by score, the best-scoring
    row chooses first (equal scores: in row order)."""
    iou = np.array([[0.6, 0.0], [0.7, 0.55]])
    assert greedy_match(iou, 0.5).tolist() == [[1, 0]]
    assert match_by_score(iou, np.array(scores), 0.5).tolist() == expected
    assert match_by_score(np.zeros((2, 0)), np.array(scores), 0.5).shape == (0, 2)
