"""count_eval: a finished count report scored against expert boxes and labels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.evaluation.coco import class_ap
from bmc_detectron.tools import count_eval

CLASSES = ["Lym", "Red"]


def _cell(box, label, prob=0.9, score=0.8):
    probs = [prob, 1 - prob] if label == "Lym" else [1 - prob, prob]
    return {
        "box": box,
        "det_score": score,
        "det_class": "cell",
        "label": label,
        "prob": prob,
        "probs": probs,
    }


@pytest.fixture
def case(tmp_path: Path):
    """Two images with two true cells each, a report that finds three of them (one mislabelled,
    one uncertain) plus one false cell, and the dataset registered."""
    images = tmp_path / "images"
    images.mkdir()
    coco = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    truth = {
        "a.png": [([10, 10, 30, 30], "Lym"), ([40, 40, 60, 60], "Red")],
        "b.png": [([5, 5, 25, 25], "Red"), ([30, 5, 50, 25], "Red")],
    }
    for i, (name, cells) in enumerate(truth.items(), start=1):
        cv2.imwrite(str(images / name), np.zeros((64, 64, 3), np.uint8))
        coco["images"].append({"id": i, "file_name": name, "width": 64, "height": 64})
        for box, label in cells:
            x0, y0, x1, y1 = box
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": i,
                    "iscrowd": 0,
                    "category_id": CLASSES.index(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                }
            )
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    register_coco_dataset("count_eval_case", tmp_path / "gt.json", images)
    report = tmp_path / "report"
    (report / "cells").mkdir(parents=True)
    found = {
        "a": [_cell([10, 10, 30, 31], "Lym"), _cell([40, 40, 60, 60], "Lym", prob=0.4)],
        "b": [_cell([5, 5, 25, 25], "Red"), _cell([0, 40, 20, 60], "Red", score=0.6)],
    }
    fields = []
    for name, cells in found.items():
        record = {"name": name, "image": str(images / f"{name}.png"), "cells": cells}
        (report / "cells" / f"{name}.json").write_text(json.dumps(record))
        fields.append({"name": name})
    summary = {"fields": fields, "uncertain_below": 0.5, "settings": {"classifier": {"x": 1}}}
    (report / "summary.json").write_text(json.dumps(summary))
    yield report
    unregister_dataset("count_eval_case")


def test_count_eval_scores_the_report(case, capsys):
    assert count_eval.main(["--report", str(case), "--dataset", "count_eval_case"]) == 0
    result = json.loads((case / "count_eval.json").read_text())
    m = result["matching"]
    assert (m["ground_truth"], m["predicted"], m["matched"]) == (4, 4, 3)
    assert m["recall"] == pytest.approx(0.75) and m["precision"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(2 / 3)  # the Red cell of image a was called Lym
    assert m["accuracy_certain"] == pytest.approx(1.0)  # ... and was uncertain (0.4 < 0.5)
    certain = result["counts"]["certain"]
    assert certain["true_percent"] == {"Lym": 25.0, "Red": 75.0}
    # counted (certain): Lym, Red, Red -> 33.3 / 66.7
    assert certain["percent"]["Red"] == pytest.approx(200 / 3)
    assert result["missing"] == []
    assert "recall / precision" in (case / "count_eval.md").read_text()


def test_count_eval_per_case(case):
    argv = ["--report", str(case), "--dataset", "count_eval_case", "--fields-per-case", "2"]
    assert count_eval.main(argv) == 0
    cases = json.loads((case / "count_eval.json").read_text())["cases"]
    # one case of both images: certain cells Lym, Red, Red vs truth Lym, Red, Red, Red
    assert cases["cases"] == 1 and cases["cells_per_case"] == 4.0
    assert cases["mae_per_case"] == [pytest.approx(75.0 - 200 / 3)]  # both classes 8.3 pp off
    assert "per case of 2 fields" in (case / "count_eval.md").read_text()
    assert count_eval.main(argv[:4] + ["--fields-per-case", "-1"]) == 0  # off, as the default


def test_count_eval_bad_input_is_a_one_line_error(case, tmp_path, capsys):
    assert count_eval.main(["--report", str(tmp_path), "--dataset", "count_eval_case"]) == 2
    assert "not a finished count report" in capsys.readouterr().err
    assert count_eval.main(["--report", str(case), "--dataset", "no_such_set"]) == 2
    assert "not registered" in capsys.readouterr().err


def test_class_ap_from_cocoeval_precision():
    """COCOeval's precision (IoU thresholds, recall points, classes, areas, max dets): AP is the
    mean over the thresholds and recall points at area "all" and the last max dets, AP50 the
    first threshold's; -1 (no ground truth) is left out, NaN when nothing is left."""
    precision = np.full((10, 101, 3, 4, 3), 0.125)  # other areas and max dets: ignored
    precision[:, :, 0, 0, -1] = 0.5
    precision[0, :, 0, 0, -1] = 1.0
    precision[:, :, 1, 0, -1] = -1.0
    precision[:, :, 2, 0, -1] = -1.0
    precision[1:, :50, 2, 0, -1] = 0.25  # no value at IoU 0.5
    assert class_ap(precision, 0) == {"AP": pytest.approx(55.0, abs=1e-12), "AP50": 100.0}
    assert all(np.isnan(v) for v in class_ap(precision, 1).values())
    ap = class_ap(precision, 2)
    assert ap["AP"] == 25.0 and np.isnan(ap["AP50"])
