"""Box sizes under robustness conditions: hand-built gts and detections, and the tool on a kept
sweep folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.robustness import robustness_boxes
from studies.robustness.boxes import box_stats

WBC, RBC = 2, 1


def _gt(image_id, cat, x, y, w, h):
    return {"image_id": image_id, "category_id": cat, "bbox": [x, y, w, h], "iscrowd": 0}


def _det(image_id, cat, x, y, w, h, score=0.9):
    return {**_gt(image_id, cat, x, y, w, h), "score": score}


GTS = [_gt(1, WBC, 100, 100, 50, 50), _gt(1, WBC, 300, 300, 20, 20), _gt(1, RBC, 0, 0, 10, 10)]


def test_box_stats_matches_each_detection_to_its_nearest_gt_of_the_class():
    dets = [
        _det(1, WBC, 75, 75, 100, 100),  # same centre as the first gt, twice its size
        _det(1, WBC, 305, 300, 20, 20),  # second gt, shifted by 5 px = 0.25 of its size
        _det(1, WBC, 0, 0, 500, 500, score=0.1),  # below the score threshold
        _det(1, RBC, 0, 0, 30, 30),  # another class
        _det(2, WBC, 0, 0, 40, 40),  # an image without a WBC gt
    ]
    s = box_stats(GTS, dets, WBC, score_thresh=0.3)
    assert s is not None and s.n == 2
    assert s.size_ratio_median == pytest.approx(1.5)  # median of 2.0 and 1.0
    assert s.offset_median == pytest.approx(0.125)  # median of 0 and 0.25
    assert s.size_ratio_p10 == pytest.approx(1.1) and s.size_ratio_p90 == pytest.approx(1.9)


def test_box_stats_is_none_without_a_matchable_detection():
    assert box_stats(GTS, [_det(2, WBC, 0, 0, 40, 40)], WBC) is None
    assert box_stats(GTS, [_det(1, WBC, 0, 0, 40, 40, score=0.2)], WBC) is None


def _kept_condition(root: Path, label: str, tag: str, dets: list) -> None:
    folder = root / "copies" / label / tag
    (folder / "eval").mkdir(parents=True)
    cats = [{"id": 1, "name": "RBC"}, {"id": 2, "name": "WBC"}]
    (folder / "annotations.json").write_text(
        json.dumps({"images": [], "annotations": GTS, "categories": cats})
    )
    metrics = {"bbox": {"AP": 40.0, "AP-RBC": 30.0, "AP-WBC": 50.0}}
    (folder / "eval" / "coco_metrics.json").write_text(json.dumps(metrics))
    (folder / "eval" / "coco_instances_results.json").write_text(json.dumps(dets))


def test_tool_tabulates_kept_conditions_and_names_a_missing_one(tmp_path, capsys):
    sweep = tmp_path / "full" / "plain"
    _kept_condition(sweep, "full", "e_0", [_det(1, WBC, 100, 100, 50, 50)])
    _kept_condition(sweep, "full", "e_0p15", [_det(1, WBC, 75, 75, 100, 100)])
    page = tmp_path / "boxes.md"
    rc = robustness_boxes.main(
        ["--sweeps", f"full s0={sweep}", "--class", "WBC", "--output", str(page)]
    )
    assert rc == 0
    rows = [line for line in page.read_text().splitlines() if line.startswith("| full s0")]
    assert rows == [
        "| full s0 | e_0 | 40.0 | 30.0 | 50.0 | 1 | 1.00 [1.00, 1.00] | 0.00 |",
        "| full s0 | e_0p15 | 40.0 | 30.0 | 50.0 | 1 | 2.00 [2.00, 2.00] | 0.00 |",
    ]
    rc = robustness_boxes.main(["--sweeps", str(sweep), "--conditions", "hue_20", "--class", "WBC"])
    assert rc == 2 and "no kept condition 'hue_20'" in capsys.readouterr().err
    rc = robustness_boxes.main(["--sweeps", str(sweep), "--class", "Blast"])
    assert rc == 2 and "class 'Blast' not in" in capsys.readouterr().err
