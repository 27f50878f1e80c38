"""The slide bench's known cells and its score: the synthetic slide's cells laid out as its
patches are (cut by the glass bands), and a count matched to them on a hand-built report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from studies.slides.score import score_count
from studies.slides.synthetic_slide import MARGIN, PATCH, known_cells, write_known_cells


def _patch(box, cls):
    return [(np.array([box], np.float32), np.array([cls]))]


def test_known_cells_are_laid_out_as_the_patches_and_cut_by_the_glass_bands():
    size = 3 * PATCH  # one patch column per zone: thick, mono, tail
    cells = {
        "thick": _patch([10, 500, 50, 540], 0),
        "mono": _patch([100, 170, 140, 210], 1),  # in row 0: 64 % below the top band
        "tail": _patch([200, 100, 240, 140], 2),  # in row 0: inside the top band (dropped)
    }
    rows = known_cells(cells, size)
    lo = MARGIN * size
    mono = sorted(r[:4] for r in rows if r[5] == "mono")
    assert mono == [
        (PATCH + 100, lo, PATCH + 140, 210),  # cut by the band
        (PATCH + 100, PATCH + 170, PATCH + 140, PATCH + 210),
        (PATCH + 100, 2 * PATCH + 170, PATCH + 140, 2 * PATCH + 210),
    ]
    assert [r[:4] for r in rows if r[5] == "thick"][1] == (10, PATCH + 500, 50, PATCH + 540)
    assert len([r for r in rows if r[5] == "tail"]) == 2 and {r[4] for r in rows} == {0, 1, 2}


def test_score_matches_the_count_to_the_known_cells_of_its_fields(tmp_path):
    report = tmp_path / "report"
    (report / "cells").mkdir(parents=True)
    summary = {
        "fields": [{"name": "f1"}],
        "classes": [{"class": "cell", "percent": 100.0}],
        "slide": {"fields_in_zone": 1, "target_cells": 500, "reached": False},
    }
    (report / "summary.json").write_text(json.dumps(summary))
    field = {"slide": {"x": 1000, "y": 0, "downsample": 2.0}, "width": 250, "height": 250}
    (report / "cells" / "f1.json").write_text(json.dumps(field))  # slide x 1000-1500, y 0-500
    known = [
        (1100, 100, 1140, 140, 0, "mono"),  # A: found
        (1200, 100, 1240, 140, 1, "mono"),  # B: missed
        (1480, 300, 1530, 340, 1, "mono"),  # C: 40 % inside, not truth; found as its cut part
        (1600, 100, 1640, 140, 1, "mono"),  # D: outside the field
    ]
    write_known_cells(tmp_path / "known.csv", known)
    head = "field,slide_x0,slide_y0,slide_x1,slide_y1,det_score\n"
    rows = ["f1,1101,101,1141,141,0.9", "f1,1480,300,1500,340,0.8", "f1,1300,300,1340,340,0.7"]
    (report / "cells.csv").write_text(head + "\n".join(rows) + "\n")
    score = score_count(report, tmp_path / "known.csv")
    assert (score["truth_cells"], score["truth_matched"], score["matched"]) == (2, 1, 2)
    assert score["recall"] == 0.5 and score["precision"] == pytest.approx(0.6667)
    assert score["true_differential"] == {"Lym": 50.0, "Prim": 50.0}
    assert score["recall_per_class"] == {"Lym": 0.0, "Prim": 1.0}
    assert score["count_vs_true_mae_pp"] is None and score["found_vs_true_mae_pp"] == 50.0
