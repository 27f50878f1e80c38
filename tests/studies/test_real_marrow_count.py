"""The real-marrow count page: targets and verdicts from a count evaluation."""

from __future__ import annotations

from studies.real_marrow import count


def _result(recall, precision, worst):
    return {
        "matching": {"recall": recall, "precision": precision},
        "cases": {"fields_per_case": 10, "mae_max": worst, "mae_mean": worst / 2, "cases": 10},
        "crowding": {"pairs": {"pairs": 40, "both_found": 38, "share": 0.95}},
    }


def test_targets_and_verdicts():
    summary = {"other": 7, "uncertain": {"total": 12, "per_class": {}}}
    rows = count.target_rows(_result(0.95, 0.89, 2.5), summary)
    assert rows[0] == ["recall >= 90 % (IoU 0.5)", "95.0", "met"]
    assert rows[1] == ["precision >= 90 %", "89.0", "not met"]
    assert rows[2][1:] == ["2.50 (mean 1.25)", "met"]
    assert rows[3][1] == "95.0 % of 40 pairs"
    assert rows[4] == ["uncertain / other cells listed", "12 / 7", "reported"]
    assert count.target_rows(_result(0.95, 0.95, 3.5), summary)[2][2] == "not met"


def test_the_page_says_how_the_classifier_sees_a_cell(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "MODEL:\n  BMC:\n    CLASSIFIER:\n      CROP_SIZE: 96\n      TEST_FLIPS: 8\n"
        "SOLVER:\n  MAX_ITER: 2800\n"
    )
    assert count.classifier_views(tmp_path) == "96 px crops, 8 views averaged, 2800 iterations"
