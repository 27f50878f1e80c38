"""The real-marrow detectors page: the NMS threshold chosen on val, the page's tables."""

from __future__ import annotations

import json

from studies.real_marrow import detectors


def _m(ap, recall, precision, crowd=True):
    m = {"AP": float(ap), "AP50": ap + 30.0, "recall": float(recall)}
    m.update(precision=float(precision), field_factor=1.0)
    if crowd:
        kinds = {"isolated": 0.95, "touching": 0.9, "overlapping": 0.8}
        m["crowding"] = {
            "recall": {
                k: {"cells": 10, "found": int(10 * r), "recall": r} for k, r in kinds.items()
            },
            "pairs": {"pairs": 4, "both_found": 3, "share": 0.75},
        }
    return m


def test_choose_maximises_recall_plus_precision_then_ap():
    rows = {"0.4": _m(50, 80, 95), "0.5": _m(49, 88, 90), "0.6": _m(60, 90, 80)}
    assert detectors.choose(rows) == "0.5"  # 178 > 175 = 170
    rows["0.6"] = _m(60, 89, 89)
    assert detectors.choose(rows) == "0.6"  # 178 = 178: the higher AP


def test_page_marks_the_chosen_threshold_and_the_bccd_check():
    name = detectors.NAMES[0]
    run = {"marrow_real_val": {"0.4": _m(50, 80, 95), "0.5": _m(49, 88, 90, crowd=False)}}
    run.update(chosen="0.4", bccd_test={"0.4": _m(40, 70, 60)})
    text = detectors.page({"date": "2026-12-06", "runs": {name: run}}, "cmd", 0.5)
    assert (
        "| full model | 0.4 (chosen) | 50.0 | 80.0 | 80.0 | 95.0 | 95.0 | 90.0 | 80.0 | 75.0 |"
        in text
    )
    assert "| full model | 0.5 | 49.0 | 79.0 | 88.0 | 90.0 | - | - | - | - |" in text
    assert "| full model | 0.4 | 40.0 | 70.0 | 70.0 | 60.0 | 1.000 |" in text


def test_rows_of_a_run_without_weights_come_from_the_earlier_record(tmp_path):
    name = detectors.NAMES[1]
    run = {"marrow_real_val": {"0.4": _m(50, 80, 95)}, "chosen": "0.4"}
    record = tmp_path / "detectors.json"
    record.write_text(json.dumps({"date": "2026-12-06", "runs": {name: run}}))
    earlier = detectors.earlier_results(record)
    assert earlier[name]["measured"] == "2026-12-06"
    assert detectors.earlier_results(tmp_path / "none.json") == {}
    now = {detectors.NAMES[0]: {**run, "measured": "2026-12-07"}, **earlier}
    text = detectors.page({"date": "2026-12-07", "runs": now}, "cmd", 0.5)
    assert "| full model | 0.4 (chosen) | 50.0 |" in text  # measured today: no mark
    assert "| detectron2 RetinaNet (measured 2026-12-06) | 0.4 (chosen) | 50.0 |" in text
