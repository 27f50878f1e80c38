"""The open-set outcome in the count: cells of no known type are listed as Other, apart from
the uncertain cells and outside the differential (cells.csv, summary.json, counts.csv, page)."""

from __future__ import annotations

import csv
import dataclasses
import json

import cv2
import numpy as np
import pytest

from bmc_detectron.evaluation.feature_scores import fit_knn
from bmc_detectron.evaluation.open_set import OpenSetThreshold
from bmc_detectron.pipeline import CellCounter, Lineage
from bmc_detectron.pipeline.counter import Cell
from bmc_detectron.pipeline.html_report import render_html
from bmc_detectron.pipeline.recognition import CellClassifier
from bmc_detectron.pipeline.report import FieldRecord, build_summary, cells_csv, counts_csv
from bmc_detectron.tools import count as count_tool
from tests.helpers import CONFIGS
from tests.pipeline.helpers import (
    CLASS_COLORS,
    ChannelModel,
    DiscDetector,
    channel_classifier,
    disc_field,
    save_random_detector,
)

# two known discs (A, B) and a grey one of no known class (X): energies 10.0, 10.0 and 5.6
DISCS = [(16, 16, 7, "A"), (46, 18, 8, "B"), (30, 46, 8, "X")]
THRESHOLD = OpenSetThreshold(threshold=8.0)


def _open_set_classifier(threshold=THRESHOLD) -> CellClassifier:
    return dataclasses.replace(channel_classifier(crop_size=16), open_set=threshold)


def test_a_cell_of_no_known_type_is_other():
    image, _ = disc_field(64, 64, DISCS)
    cells = CellCounter(DiscDetector(), _open_set_classifier()).count_image(image)
    by_x = sorted(cells, key=lambda c: (c.box[1], c.box[0]))
    assert [c.label for c in by_x] == ["A", "B", "Other"]
    assert by_x[2].is_other and not by_x[2].is_uncertain(0.99)  # Other is never uncertain
    assert by_x[2].probs is not None and by_x[2].prob == pytest.approx(max(by_x[2].probs))
    # no threshold: the same cells, every one of a known type (as before)
    plain = CellCounter(DiscDetector(), channel_classifier(crop_size=16)).count_image(image)
    assert "Other" not in [c.label for c in plain]
    # the override: -inf switches it off, a lower threshold flags nothing
    off = _open_set_classifier().with_open_set_threshold(float("-inf"))
    assert off.open_set is None
    low = _open_set_classifier().with_open_set_threshold(5.0)
    assert "Other" not in [c.label for c in CellCounter(DiscDetector(), low).count_image(image)]


def test_counter_settings_name_the_threshold_only_when_there_is_one():
    with_it = CellCounter(DiscDetector(), _open_set_classifier()).settings()["classifier"]
    assert with_it["open_set"] == {"score": "energy", "threshold": 8.0}
    plain = CellCounter(DiscDetector(), channel_classifier()).settings()["classifier"]
    assert "open_set" not in plain


def test_a_threshold_needs_logits():
    class ProbsOnly:
        def predict_crops(self, crops):
            raise AssertionError("not called")

    clf = CellClassifier(ProbsOnly(), ["A", "B", "C"], 16, 0.25, open_set=THRESHOLD)
    image, _ = disc_field(32, 32, DISCS[:1])
    with pytest.raises(ValueError, match="needs a classifier with predict_logits"):
        CellCounter(DiscDetector(), clf).count_image(image)


class FeatureChannelModel(ChannelModel):
    """:class:`ChannelModel` whose pooled features are the centre pixel's channels."""

    def predict_logits_and_features(self, crops):
        logits = self.predict_logits(crops)
        return logits, logits * self.temperature


def test_a_knn_threshold_reads_the_features():
    # the bank: the A and B colours; the grey X is sqrt(2 - 2 cos) ~ 0.67 from its nearest (k=1)
    bank = fit_knn(np.array([CLASS_COLORS["A"], CLASS_COLORS["B"]], dtype=float), k=1)
    threshold = OpenSetThreshold(-0.3, score="knn", statistics=bank)
    clf = dataclasses.replace(
        channel_classifier(crop_size=16), model=FeatureChannelModel(), open_set=threshold
    )
    image, _ = disc_field(64, 64, DISCS)
    cells = CellCounter(DiscDetector(), clf).count_image(image)
    assert [c.label for c in sorted(cells, key=lambda c: (c.box[1], c.box[0]))] == [
        "A",
        "B",
        "Other",
    ]
    # a model without features cannot serve a feature score: a clear error
    without = dataclasses.replace(clf, model=ChannelModel())
    with pytest.raises(ValueError, match="needs a classifier with predict_logits_and_features"):
        CellCounter(DiscDetector(), without).count_image(image)


def _summary():
    cells = [
        Cell((0, 0, 10, 10), 0.9, "cell", "Red", 0.95, [0.05, 0.95]),
        Cell((20, 0, 30, 10), 0.8, "cell", "Lobu", 0.55, [0.55, 0.45]),
        Cell((40, 0, 50, 10), 0.7, "cell", "Lobu", 0.85, [0.85, 0.15]),
        Cell((60, 0, 70, 10), 0.7, "cell", "Other", 0.52, [0.52, 0.48]),
    ]
    record = FieldRecord("f1", "f1.png", "0" * 64, "fp", 64, 80, 1, 0.5, 0.25, cells)
    settings = {"classifier": {"open_set": {"score": "energy", "threshold": 3.5}}}
    summary = build_summary(
        [record], [], ["Lobu", "Red"], uncertain_below=0.6, lineage=Lineage(), settings=settings
    )
    return record, summary


def test_other_cells_are_listed_apart_and_in_no_percentage():
    record, summary = _summary()
    assert summary["detected"] == 4
    assert (summary["counted"], summary["uncertain"]["total"], summary["other"]) == (2, 1, 1)
    assert [(r["class"], r["percent"]) for r in summary["classes"]] == [
        ("Lobu", 50.0),
        ("Red", 50.0),
    ]
    assert summary["me"] == {**summary["me"], "myeloid": 1, "erythroid": 1}
    entry = summary["fields"][0]
    assert (entry["cells"], entry["uncertain"], entry["other"]) == (2, 1, 1)
    rows = list(csv.DictReader(cells_csv([record], ["Lobu", "Red"], 0.6).splitlines()))
    assert [(r["class"], r["uncertain"]) for r in rows][-1] == ("Other", "0")
    assert rows[-1]["p_Lobu"] == "0.52"  # the closest known type stays readable
    counts = list(csv.DictReader(counts_csv(summary).splitlines()))
    assert [(r["class"], r["count"], r["percent"]) for r in counts[-2:]] == [
        ("all", "2", "100.0"),
        ("Other", "1", ""),
    ]


def test_a_classifier_with_an_other_class_gets_no_other_row_in_the_differential():
    cells = [
        Cell((0, 0, 10, 10), 0.9, "cell", "Red", 0.95, [0.0, 0.95, 0.05]),
        Cell((60, 0, 70, 10), 0.7, "cell", "Other", 0.9, [0.05, 0.05, 0.9]),  # the class won
    ]
    record = FieldRecord("f1", "f1.png", "0" * 64, "fp", 64, 80, 1, 0.5, 0.25, cells)
    names = ["Lobu", "Red", "Other"]
    summary = build_summary(
        [record], [], names, uncertain_below=0.6, lineage=Lineage(), settings={}
    )
    assert [r["class"] for r in summary["classes"]] == ["Lobu", "Red"]
    assert (summary["counted"], summary["other"]) == (1, 1)
    assert [r["percent"] for r in summary["classes"]] == [0.0, 100.0]


def test_the_html_report_shows_other_apart():
    _, summary = _summary()
    summary.update(created="now", scale={}, timing={"detect_s": 1, "recognise_s": 1})
    summary["settings"].update(score_threshold=0.5, tile_size=0, tile_overlap=0)
    summary["settings"]["classifier"].update(crop_size=64, crop_margin=0.15)
    html = render_html(summary, {}, "case")
    assert "Other: no known type" in html and "not in %" in html
    assert "open-set score (energy) &lt; 3.5" in html
    assert ", 1 Other" in html


def test_count_command_lists_other_cells(tmp_path, monkeypatch):
    data = tmp_path / "case"
    data.mkdir()
    image, _ = disc_field(64, 64, DISCS)
    cv2.imwrite(str(data / "field0.png"), image)
    opts = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]
    weights = save_random_detector(tmp_path / "det.pth", opts)
    monkeypatch.setattr(
        CellClassifier,
        "from_config",
        classmethod(lambda cls, c, w, o=(): _open_set_classifier()),
    )
    # the detector is random: count the stand-in detector's discs instead
    monkeypatch.setattr(
        "bmc_detectron.pipeline.detector.Detector.from_config",
        classmethod(lambda cls, c, w, o=(): DiscDetector()),
    )
    cls_cfg, cls_weights = tmp_path / "cls.yaml", tmp_path / "cls.pth"
    cls_cfg.write_text("# stand-in\n")
    cls_weights.write_bytes(b"stand-in")
    args = ["--detector-config", str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")]
    args += ["--detector-weights", str(weights), "--detector-opts", *opts]
    args += ["--classifier-config", str(cls_cfg), "--classifier-weights", str(cls_weights)]
    args += ["--input", str(data / "*.png"), "--score-threshold", "0", "--device", "cpu"]
    args += ["--no-progress", "--uncertain-below", "0.0"]
    assert count_tool.main([*args, "--output", str(tmp_path / "r1")]) == 0
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert (summary["detected"], summary["counted"], summary["other"]) == (3, 2, 1)
    rows = list(csv.DictReader((tmp_path / "r1" / "cells.csv").read_text().splitlines()))
    assert sorted(r["class"] for r in rows) == ["A", "B", "Other"]
    assert "Other: no known type" in (tmp_path / "r1" / "report.html").read_text()
    # the count option overrides the stored threshold: -inf switches the outcome off
    off = [*args, "--open-set-threshold", "off", "--output", str(tmp_path / "r2")]
    assert count_tool.main(off) == 0
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert (summary["counted"], summary["other"]) == (3, 0)


def test_count_evaluation_keeps_other_cells_out_of_classes_and_differential():
    from bmc_detectron.evaluation.count import evaluate_cells

    gt = {
        "images": [{"id": 1, "file_name": "a.png", "height": 80, "width": 80}],
        "categories": [{"id": 1, "name": "Lym"}, {"id": 2, "name": "Red"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": 400, "iscrowd": 0}
            for i, (c, b) in enumerate(
                [(1, [10, 10, 20, 20]), (2, [40, 40, 20, 20]), (1, [10, 50, 20, 20])]
            )
        ],
    }
    cells = {
        1: [
            Cell((10, 10, 30, 30), 0.9, "cell", "Lym", 0.9, [0.9, 0.1]),
            Cell((40, 40, 60, 60), 0.9, "cell", "Red", 0.9, [0.1, 0.9]),
            Cell((10, 50, 30, 70), 0.9, "cell", "Other", 0.6, [0.6, 0.4]),
        ]
    }
    result = evaluate_cells(cells, gt, "detector")
    assert result["agnostic"]["AP50"] == pytest.approx(100.0)  # the Other cell is a found cell
    matching = result["matching"]
    assert (matching["matched"], matching["matched_certain"], matching["matched_other"]) == (
        3,
        2,
        1,
    )
    assert matching["accuracy_certain"] == 1.0
    certain = result["counts"]["certain"]
    assert (certain["counted"], certain["other"]) == (2, 1)
    assert certain["percent"] == {"Lym": 50.0, "Red": 50.0}
