"""Error analysis (TIDE-style attribution, crowding split, confusion matrix) on hand-built cases,
and ``analyze_errors`` end to end on two tiny synthetic images with a random model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bmc_detectron.analysis.confusion import confusion_matrix
from bmc_detectron.analysis.tide import (
    ERROR_TYPES,
    analyse,
    attribute_errors,
    class_ap,
    crowding_groups,
    make_image,
)
from bmc_detectron.config import build_cfg
from bmc_detectron.data.datasets import unregister_dataset
from bmc_detectron.structures.matching import greedy_match
from tests.analysis.helpers import CPU_CONFIG, register_tiny_synth, tiny_opts

# Six gts, two classes. Rows: x0, y0, x1, y1, class.
GTS = [
    [10, 10, 40, 40, 0],  # g0: found by p0
    [60, 10, 90, 40, 0],  # g1: p1 has its box but class 1 -> classification error
    [110, 10, 140, 40, 0],  # g2: p2 (class 0) overlaps it with IoU 1/3 -> localisation error
    [10, 60, 40, 90, 1],  # g3: found by p3; p4 (class 0, IoU 1/3) -> cls+loc error
    [60, 60, 90, 90, 1],  # g4: found by p5; p6 on it too -> duplicate
    [110, 60, 140, 90, 1],  # g5: nothing near it -> missed
]
# Rows: x0, y0, x1, y1, class, score. In each class every false positive outranks a true
# positive, so that removing or fixing any one of them changes AP50.
PREDS = [
    [10, 10, 40, 40, 0, 0.50],  # p0 TP g0
    [60, 10, 90, 40, 1, 0.90],  # p1 cls error on g1
    [125, 10, 155, 40, 0, 0.85],  # p2 loc error on g2
    [10, 60, 40, 90, 1, 0.60],  # p3 TP g3
    [25, 60, 55, 90, 0, 0.80],  # p4 cls+loc error on g3
    [60, 60, 90, 90, 1, 0.75],  # p5 TP g4
    [61, 61, 91, 91, 1, 0.70],  # p6 duplicate of p5 on g4
    [160, 160, 190, 190, 0, 0.65],  # p7 background
]
EXPECTED = {"cls": (1, 1), "loc": (2, 2), "both": (4, 3), "dupe": (6, 4), "bkg": (7, -1)}


def _manual_fix(kind: str):
    """The hand-made input in which the one error of ``kind`` is corrected."""
    gts, preds = [list(g) for g in GTS], [list(p) for p in PREDS]
    if kind == "cls":
        preds[1][4] = 0
    elif kind == "loc":
        preds[2][:4] = GTS[2][:4]
    elif kind == "missed":
        del gts[5]
    else:
        del preds[EXPECTED[kind][0]]
    return [make_image(0, gts, preds)]


def test_each_error_type_is_found_exactly_once():
    attr = attribute_errors([make_image(0, GTS, PREDS)])
    assert attr.counts() == {k: 1 for k in ERROR_TYPES}
    for kind, (pred, gt) in EXPECTED.items():
        (err,) = attr.errors(kind)
        assert (err.pred, err.gt) == (pred, gt), kind
    (missed,) = attr.errors("missed")
    assert missed.gt == 5
    assert sorted(p.pred for p in attr.preds if p.kind == "tp") == [0, 3, 5]
    # g1 and g2 are unmatched but fixable (usable), so they are not "missed"
    assert [g.gt for g in attr.gts if not g.matched] == [1, 2, 5]


@pytest.mark.parametrize("kind", ERROR_TYPES)
def test_oracle_equals_fixing_that_one_error_by_hand(kind):
    attr = attribute_errors([make_image(0, GTS, PREDS)])
    base, dap = attr.ap(), attr.delta_ap()
    assert dap[kind] > 0.5
    fixed = attribute_errors(_manual_fix(kind))
    assert fixed.ap() == pytest.approx(base + dap[kind], abs=1e-9)
    # the other five errors are still there, unchanged in number
    assert fixed.counts() == {k: int(k != kind) for k in ERROR_TYPES}


def test_class_ap_hand_value():
    # 2 gts: TP 0.9, FP 0.8, TP 0.7 -> precision envelope 1 up to recall 0.5, then 2/3
    ap = class_ap([(0.9, True), (0.8, False), (0.7, True)], num_gt=2)
    assert ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101 * 100)
    assert class_ap([(0.9, False)], num_gt=0) == 0.0


def test_crowding_split():
    gts = [
        [10, 10, 50, 50, 0],  # A, overlaps B: crowded
        [40, 10, 80, 50, 0],  # B: crowded
        [150, 150, 190, 190, 0],  # C: isolated
    ]
    preds = [
        [10, 10, 50, 50, 0, 0.9],  # TP on A
        [150, 150, 190, 190, 0, 0.8],  # TP on C
        [60, 10, 100, 50, 0, 0.7],  # loc error on B (IoU 1/3): crowded
        [200, 10, 230, 40, 0, 0.6],  # background, overlaps no gt: isolated
        [0, 45, 14, 70, 0, 0.55],  # background touching A (IoU < 0.1): crowded
    ]
    images = [make_image("img", gts, preds)]
    report = analyse(images)
    gt_groups, pred_groups = crowding_groups(images, report["attribution"])
    assert gt_groups[0].tolist() == [True, True, False]
    assert pred_groups[0].tolist() == [True, False, True, False, True]
    crowded, isolated = report["crowded"], report["isolated"]
    assert (crowded["num_gt"], crowded["num_pred"]) == (2, 3)
    assert (isolated["num_gt"], isolated["num_pred"]) == (1, 2)
    assert crowded["counts"]["loc"] == 1 and crowded["counts"]["bkg"] == 1
    assert isolated["counts"]["loc"] == 0 and isolated["counts"]["bkg"] == 1
    # crowded: TP .9, loc .7, bkg .55 over 2 gts -> precision 1 up to recall 0.5
    assert crowded["AP50"] == pytest.approx(51 / 101 * 100)
    assert isolated["AP50"] == pytest.approx(100.0)
    # overall: TP, TP, FP, FP, FP over 3 gts -> precision 1 up to recall 2/3 (67 points)
    assert report["overall"]["AP50"] == pytest.approx(67 / 101 * 100)
    assert isolated["dAP"]["bkg"] == 0.0 < crowded["dAP"]["loc"]


def test_confusion_matrix_counts():
    gts = [[0, 0, 20, 20, 0], [40, 0, 60, 20, 1], [80, 0, 100, 20, 2]]
    preds = [
        [0, 0, 20, 20, 0, 0.9],  # right class
        [41, 0, 61, 20, 2, 0.8],  # gt 1 detected as class 2
        [0, 50, 20, 70, 1, 0.7],  # on background
        [80, 0, 100, 20, 2, 0.3],  # below the score threshold: gt 2 is missed
    ]
    m = confusion_matrix([make_image(0, gts, preds)], num_classes=3, score_threshold=0.5)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = expected[1, 2] = expected[2, 3] = expected[3, 1] = 1
    np.testing.assert_array_equal(m, expected)
    iou = np.array([[0.9, 0.8], [0.85, 0.2]])
    assert greedy_match(iou, 0.5).tolist() == [[0, 0]]


# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Two 96 x 96 synthetic smears registered as a COCO dataset; yields (name, json path)."""
    yield register_tiny_synth(tmp_path_factory.mktemp("tiny_synth"), "test_analysis_tiny_synth")
    unregister_dataset("test_analysis_tiny_synth")


def test_analyze_errors_end_to_end(tiny_dataset, tmp_path):
    from bmc_detectron.analysis_tools.analyze_errors import main
    from bmc_detectron.engine.loading import load_model

    name, json_file = tiny_dataset
    torch.manual_seed(0)
    model = load_model(build_cfg(CPU_CONFIG, tiny_opts()))
    weights = tmp_path / "random.pth"
    torch.save({"model": model.state_dict()}, weights)
    out = tmp_path / "errors"
    argv = ["--config-file", CPU_CONFIG, "--weights", str(weights), "--dataset", name]
    argv += ["--output", str(out), "--score-threshold", "0.02", "--gallery", "2", *tiny_opts()]
    assert main(argv) == 0

    coco = json.loads(Path(json_file).read_text())
    report = json.loads((out / "errors.json").read_text())
    overall = report["overall"]
    assert overall["num_gt"] == len(coco["annotations"])
    assert overall["num_pred"] == 2 * 30  # SCORE_THRESH_TEST 0 keeps DETECTIONS_PER_IMAGE each
    detection_errors = sum(overall["counts"][k] for k in ERROR_TYPES if k != "missed")
    assert detection_errors + overall["num_tp"] == overall["num_pred"]
    assert detection_errors == sum(e["type"] != "missed" for e in report["errors"])
    split = report["crowded"]["num_gt"] + report["isolated"]["num_gt"]
    assert split == overall["num_gt"]
    assert report["crowded"]["num_pred"] + report["isolated"]["num_pred"] == overall["num_pred"]

    with open(out / "confusion.csv") as fh:
        rows = list(csv.reader(fh))
    per_class = np.bincount([a["category_id"] - 1 for a in coco["annotations"]], minlength=11)
    gt_rows = np.array([[int(v) for v in r[1:]] for r in rows[1:-1]])
    np.testing.assert_array_equal(gt_rows.sum(axis=1), per_class)
    for png in ("errors.png", "confusion.png"):
        with Image.open(out / png) as im:
            assert min(im.size) > 200, png
    for kind in ERROR_TYPES:
        gallery = out / f"gallery_{kind}.png"
        assert gallery.exists() == (overall["counts"][kind] > 0), kind
        if gallery.exists():
            with Image.open(gallery) as im:
                assert min(im.size) > 100, kind
