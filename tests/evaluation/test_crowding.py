"""Crowding measures of a count: recall by crowding kind, touching pairs, errors per case."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

import numpy as np
import pytest

from bmc_detectron.evaluation.count import count_errors, evaluate_cells, image_truth
from bmc_detectron.evaluation.crowding import (
    case_errors,
    crowding_recall,
    image_crowding,
    touching_pairs,
)
from bmc_detectron.structures.differential import Lineage


@dataclass
class C:
    box: List[float]
    det_score: float = 0.9
    label: str = "Lym"
    prob: float = 0.9

    def is_uncertain(self, threshold: float) -> bool:
        return self.prob < threshold


def _gt(images):
    """COCO truth from {image_id: [(xyxy, label, crowding), ...]}."""
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "Lym"}]}
    coco["categories"].append({"id": 2, "name": "Red"})
    for image_id, anns in images.items():
        coco["images"].append({"id": image_id, "file_name": f"{image_id}.png"})
        for (x0, y0, x1, y1), label, crowd in anns:
            ann = {
                "id": len(coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": 1 if label == "Lym" else 2,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
            }
            if crowd is not None:
                ann["crowding"] = crowd
            coco["annotations"].append(ann)
    return coco


@pytest.fixture
def crowd():
    """Image 1: an isolated cell (found), a touching pair (one box found; a second, merged box
    covering both matches neither) and an overlapping pair (both found). Image 2: an isolated
    cell, missed."""
    gt = _gt(
        {
            1: [
                ([0, 0, 20, 20], "Lym", "isolated"),
                ([40, 0, 60, 20], "Lym", "touching"),
                ([59, 0, 79, 20], "Red", "touching"),
                ([0, 40, 20, 60], "Red", "overlapping"),
                ([15, 40, 35, 60], "Red", "overlapping"),
            ],
            2: [([0, 0, 20, 20], "Lym", "isolated")],
        }
    )
    cells = {
        1: [
            C([0, 0, 20, 20]),
            C([40, 0, 60, 20]),
            C([40, 0, 85, 22], det_score=0.5),
            C([0, 40, 20, 60], label="Red"),
            C([15, 40, 35, 60], label="Red"),
        ],
        2: [],
    }
    return gt, cells


def test_recall_by_crowding_kind(crowd):
    gt, cells = crowd
    recall = crowding_recall(cells, image_truth(gt), image_crowding(gt))
    assert recall["isolated"] == {"cells": 2, "found": 1, "recall": 0.5}
    assert recall["touching"] == {"cells": 2, "found": 1, "recall": 0.5}
    assert recall["overlapping"] == {"cells": 2, "found": 2, "recall": 1.0}


def test_touching_pairs_counted_as_two(crowd):
    gt, cells = crowd
    pairs = touching_pairs(cells, image_truth(gt), image_crowding(gt))
    # the touching pair's boxes intersect (x 59-60) and one of them is lost to the merged box
    assert pairs == {"pairs": 2, "both_found": 1, "share": 0.5}


def test_pairs_need_intersecting_boxes():
    gt = _gt({1: [([0, 0, 10, 10], "Lym", "touching"), ([10, 0, 20, 10], "Lym", "touching")]})
    pairs = touching_pairs({1: []}, image_truth(gt), image_crowding(gt))
    assert pairs["pairs"] == 0 and math.isnan(pairs["share"])


def test_errors_per_case_pool_consecutive_fields():
    # four fields of one true cell each; cases of two fields: the first case is right (Lym, Red),
    # the second calls both cells Lym where one is Red: 50 pp off on both classes
    gt = _gt({i: [([0, 0, 20, 20], lab, None)] for i, lab in enumerate("LRLR", 1)})
    for ann in gt["annotations"]:
        ann["category_id"] = 1 if ann["image_id"] % 2 else 2
    truth = image_truth(gt)
    cells = {1: [C([0, 0, 20, 20])], 2: [C([0, 0, 20, 20], label="Red")]}
    cells.update({3: [C([0, 0, 20, 20])], 4: [C([0, 0, 20, 20])]})

    def errors(c, t):
        return count_errors(c, t, ["Lym", "Red"], Lineage(), 0.5)

    result = case_errors(cells, truth, 2, errors)
    assert result["cases"] == 2 and result["cells_per_case"] == 2.0
    assert result["mae_per_case"] == pytest.approx([0.0, 50.0])
    assert result["mae_mean"] == pytest.approx(25.0) and result["mae_max"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="fields_per_case"):
        case_errors(cells, truth, 0, errors)


def test_evaluate_cells_adds_crowding_only_where_marked(crowd):
    gt, cells = crowd
    result = evaluate_cells(cells, gt, "detector", count_threshold=0.0, fields_per_case=1)
    assert result["crowding"]["recall"]["overlapping"]["recall"] == 1.0
    assert result["cases"]["cases"] == 2
    for ann in gt["annotations"]:
        del ann["crowding"]
    plain = evaluate_cells(cells, gt, "detector", count_threshold=0.0)
    assert "crowding" not in plain and "cases" not in plain
    assert np.isclose(plain["matching"]["recall"], result["matching"]["recall"])
