"""Differential count: Wilson intervals, lineages and M:E, the counter, the report, the command."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bmc_detectron.counting import CounterSpec, build_counter, scale_setup, summary_lines
from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.data.crops import crop_boxes
from bmc_detectron.pipeline import CellCounter, Detections, Lineage, wilson_interval
from bmc_detectron.pipeline.counter import Cell
from bmc_detectron.pipeline.recognition import CellClassifier
from bmc_detectron.pipeline.report import FieldRecord, build_summary, cells_csv, counts_csv
from bmc_detectron.pipeline.scale_plan import ScaleOptions
from bmc_detectron.structures.differential import differential, me_ratio
from bmc_detectron.tools import count as count_tool
from tests.helpers import CONFIGS
from tests.pipeline.helpers import (
    ChannelModel,
    DiscDetector,
    channel_classifier,
    disc_field,
    save_random_detector,
)

# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        # computed by hand from the Wilson score formula, z = 1.96
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (50, 100, 0.4038, 0.5962),
        # Newcombe (1998), Stat Med 17:857, Table I, method 3
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=6e-5)


def test_wilson_interval_edges():
    assert wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


COUNTS = {"Prim": 2, "Lym": 8, "Mono": 3, "Plas": 1, "Red": 16, "Promy": 3, "Myelo": 5}
COUNTS.update({"Late": 4, "Rods": 6, "Lobu": 10, "Eosl": 2})


def test_me_ratio_default_lineage():
    # myeloid 2 + 3 + 5 + 4 + 6 + 10 + 2 = 32; erythroid 16 (Lym, Mono, Plas in neither)
    assert me_ratio(COUNTS, Lineage()) == {"myeloid": 32, "erythroid": 16, "ratio": 2.0}
    assert me_ratio({"Lobu": 3}, Lineage())["ratio"] is None


def test_lineage_file_yaml_and_json(tmp_path):
    # a lab that counts blasts apart and monocytes as myeloid: 32 - 2 + 3 = 33 myeloid
    yaml_file = tmp_path / "lab.yaml"
    yaml_file.write_text(
        "myeloid: [Promy, Myelo, Late, Rods, Lobu, Eosl, Mono]\nerythroid: [Red]\n"
    )
    assert me_ratio(COUNTS, Lineage.load(yaml_file))["ratio"] == pytest.approx(33 / 16)
    json_file = tmp_path / "lab.json"
    json_file.write_text(json.dumps({"erythroid": ["Red", "Plas"]}))  # myeloid stays the default
    assert me_ratio(COUNTS, Lineage.load(json_file)) == {
        "myeloid": 32,
        "erythroid": 17,
        "ratio": pytest.approx(32 / 17),
    }
    json_file.write_text(json.dumps({"myeloid": ["Red"], "erythroid": ["Red"]}))
    with pytest.raises(ValueError, match="both myeloid and erythroid"):
        Lineage.load(json_file)
    json_file.write_text(json.dumps({"lymphoid": ["Lym"]}))
    with pytest.raises(ValueError, match="unknown key"):
        Lineage.load(json_file)


def test_differential_percentages_exclude_uncertain_cells():
    labels = ["Lym"] * 6 + ["Red"] * 3 + ["Lobu"] * 1 + ["Lym", "Red"]
    unsure = [False] * 10 + [True, True]
    diff = differential(labels, unsure, ["Lym", "Red", "Lobu"], Lineage())
    rows = {r["class"]: r for r in diff["classes"]}
    assert diff["counted"] == 10 and diff["uncertain"]["total"] == 2
    assert rows["Lym"]["percent"] == pytest.approx(60.0)
    assert rows["Lym"]["uncertain"] == 1 and rows["Red"]["uncertain"] == 1
    assert rows["Red"]["ci95_percent"] == pytest.approx([10.78, 60.32], abs=0.01)  # 3 of 10
    assert rows["Lobu"]["lineage"] == "myeloid" and rows["Lym"]["lineage"] == ""
    assert diff["me"]["ratio"] == pytest.approx(1 / 3)
    assert any("ICSH" in w for w in diff["warnings"])
    assert not differential(["Lym"] * 500, [False] * 500, ["Lym"], Lineage())["warnings"]


# ---------------------------------------------------------------- the counter

DISCS = [(16, 16, 7, "A"), (46, 18, 8, "B"), (20, 46, 6, "C"), (48, 48, 9, "A"), (34, 32, 5, "B")]


def test_counter_classifies_the_crops_of_the_detected_cells():
    image, truth = disc_field(64, 64, DISCS)
    classifier = channel_classifier(crop_size=16)
    counter = CellCounter(DiscDetector(), classifier, batch_size=2)
    cells = counter.count_image(image)
    assert sorted((c.box, c.label) for c in cells) == sorted(
        (tuple(b), d[3]) for b, d in zip(truth.tolist(), DISCS)
    )
    batches = classifier.model.batches
    assert [len(b) for b in batches] == [2, 2, 1]
    # the classifier saw exactly crop_boxes' crops of the detected boxes, channels first
    boxes = np.array([c.box for c in cells], dtype=np.float32)
    expected = crop_boxes(image, boxes, 16, 0.25)
    got = np.concatenate([b.permute(0, 2, 3, 1).numpy() for b in batches])
    np.testing.assert_array_equal(got, expected)
    assert all(c.det_class == "cell" and len(c.probs) == 3 for c in cells)
    assert all(c.prob == pytest.approx(max(c.probs)) for c in cells)


def test_counter_gives_rgb_crops_to_an_rgb_classifier():
    image, truth = disc_field(64, 64, DISCS)
    classifier = channel_classifier("RGB", crop_size=16)
    cells = CellCounter(DiscDetector(), classifier).count_image(image)
    assert sorted(c.label for c in cells) == sorted(d[3] for d in DISCS)
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    boxes = np.array([c.box for c in cells], dtype=np.float32)
    got = classifier.model.batches[0].permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(got, crop_boxes(rgb, boxes, 16, 0.25))


class MultiClassDetector:
    """Two classes; one cell reported twice (both classes), one below the score threshold."""

    class_names = ["Lym", "Red"]

    def __call__(self, image):
        boxes = [[10, 10, 30, 30], [11, 10, 30, 31], [40, 40, 60, 60], [2, 40, 20, 60]]
        return Detections(boxes, [0.9, 0.6, 0.7, 0.2], [0, 1, 1, 0])


def test_counter_without_classifier_counts_the_detector_classes_once():
    cells = CellCounter(MultiClassDetector(), score_threshold=0.5).count_image(
        np.zeros((64, 64, 3), np.uint8)
    )
    assert [(c.label, c.prob, c.probs) for c in cells] == [
        ("Lym", pytest.approx(0.9), None),
        ("Red", pytest.approx(0.7), None),
    ]


def test_counter_keeps_only_the_detector_classes_asked_for():
    counter = CellCounter(MultiClassDetector(), score_threshold=0.5, detector_classes=["Red"])
    cells = counter.count_image(np.zeros((64, 64, 3), np.uint8))
    # the Lym box (score 0.9) is dropped before the NMS, so the Red box it overlapped survives
    assert sorted((c.label, c.box) for c in cells) == [
        ("Red", (11.0, 10.0, 30.0, 31.0)),
        ("Red", (40.0, 40.0, 60.0, 60.0)),
    ]
    assert counter.settings()["kept_detector_classes"] == ["Red"]
    with pytest.raises(ValueError, match="not among the detector's"):
        CellCounter(MultiClassDetector(), detector_classes=["WBC"])


def test_counter_with_no_detection_does_not_call_the_classifier():
    classifier = channel_classifier()
    field = CellCounter(DiscDetector(), classifier).count_field(np.full((32, 32, 3), 235, np.uint8))
    assert field.cells == [] and classifier.model.batches == [] and field.tiles == 1


def test_classifier_shape_mismatch_is_reported():
    bad = CellClassifier(ChannelModel(), ["A", "B"], crop_size=8, crop_margin=0.1)
    image, _ = disc_field(32, 32, [(16, 16, 6, "A")])
    with pytest.raises(ValueError, match="expected \\(1, 2\\)"):
        CellCounter(DiscDetector(), bad).count_image(image)


# ---------------------------------------------------------------- report tables


def _record(cells):
    return FieldRecord("f1", "f1.png", "0" * 64, "fp", 64, 64, 1, 0.5, 0.25, cells)


def test_uncertain_cells_are_listed_not_counted():
    cells = [
        Cell((0, 0, 10, 10), 0.9, "cell", "Red", 0.95, [0.05, 0.95]),
        Cell((20, 0, 30, 10), 0.8, "cell", "Lobu", 0.55, [0.55, 0.45]),
        Cell((40, 0, 50, 10), 0.7, "cell", "Lobu", 0.85, [0.85, 0.15]),
    ]
    summary = build_summary(
        [_record(cells)], [], ["Lobu", "Red"], uncertain_below=0.6, lineage=Lineage(), settings={}
    )
    assert (summary["counted"], summary["uncertain"]["total"], summary["detected"]) == (2, 1, 3)
    assert [r["percent"] for r in summary["classes"]] == [50.0, 50.0]
    assert summary["me"]["ratio"] == 1.0
    assert summary["fields"][0]["detect_s"] == 0.5 and summary["fields"][0]["recognise_s"] == 0.25
    rows = list(csv.DictReader(cells_csv([_record(cells)], ["Lobu", "Red"], 0.6).splitlines()))
    assert [r["uncertain"] for r in rows] == ["0", "1", "0"]
    assert rows[0]["p_Red"] == "0.95" and rows[1]["class_prob"] == "0.55"
    counts = list(csv.DictReader(counts_csv(summary).splitlines()))
    assert [(r["class"], r["count"], r["uncertain"]) for r in counts] == [
        ("Lobu", "1", "1"),
        ("Red", "1", "0"),
        ("all", "2", "1"),
    ]


# ---------------------------------------------------------------- the command, end to end

DET_OPTS = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]
DET_OPTS += ["TEST.DETECTIONS_PER_IMAGE", "6"]


@pytest.fixture
def case(tmp_path, monkeypatch):
    """Three tiny fields, a corrupt PNG, a text file, detector weights and a stand-in classifier."""
    data = tmp_path / "case01"
    data.mkdir()
    for i, (h, w) in enumerate([(64, 64), (64, 80), (72, 64)]):
        image, _ = disc_field(h, w, DISCS[: 3 + i])
        cv2.imwrite(str(data / f"field{i}.png"), image)
    (data / "broken.png").write_bytes((data / "field0.png").read_bytes()[:80])
    (data / "notes.txt").write_text("not an image\n")
    weights = save_random_detector(tmp_path / "det.pth", DET_OPTS)
    cls_cfg, cls_weights = tmp_path / "cls.yaml", tmp_path / "cls.pth"
    cls_cfg.write_text("# stand-in\n")
    cls_weights.write_bytes(b"stand-in")
    monkeypatch.setattr(
        CellClassifier, "from_config", classmethod(lambda cls, c, w, o=(): channel_classifier())
    )
    args = ["--detector-config", str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")]
    args += ["--detector-weights", str(weights), "--detector-opts", *DET_OPTS]
    args += ["--classifier-config", str(cls_cfg), "--classifier-weights", str(cls_weights)]
    args += ["--input", str(data / "*"), "--score-threshold", "0", "--device", "cpu"]
    args += ["--no-progress", "--output", str(tmp_path / "report")]
    return args, tmp_path / "report"


def test_count_command_end_to_end(case, capsys):
    args, out = case
    assert count_tool.main(args) == 1  # done, but two inputs were skipped
    summary = json.loads((out / "summary.json").read_text())
    assert [f["name"] for f in summary["fields"]] == ["field0", "field1", "field2"]
    skipped = {Path(s["image"]).name: s["reason"] for s in summary["skipped"]}
    assert skipped["broken.png"].startswith("unreadable image") and "BytesIO" not in str(skipped)
    assert skipped["notes.txt"].startswith("not an image file (.txt)")
    assert summary["class_names"] == ["A", "B", "C"]
    assert summary["detected"] == summary["counted"] + summary["uncertain"]["total"] > 0
    assert all(f["detect_s"] > 0 and f["recognise_s"] > 0 for f in summary["fields"])
    with open(out / "cells.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary["detected"]
    assert {r["field"] for r in rows} <= {"field0", "field1", "field2"}
    counts = list(csv.DictReader((out / "counts.csv").read_text().splitlines()))
    assert counts[-1]["count"] == str(summary["counted"])
    for f in summary["fields"]:
        assert cv2.imread(str(out / f["drawing"])).shape[:2] == (f["height"], f["width"])
        assert json.loads((out / "cells" / f"{f['name']}.json").read_text())["cells"] is not None
    html = (out / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 3 and "<svg" in html
    assert not re.search(r"<script|<link|src=\"http|url\(", html)
    assert "broken.png" in html and "ICSH" in html
    assert "report.html" in capsys.readouterr().out


def test_count_command_resumes_without_recounting_finished_fields(case, monkeypatch):
    args, out = case
    counted, interrupted = [], []
    original = CellCounter.count_field

    def interrupted_once(self, image):
        counted.append(image.shape[:2])
        if len(counted) == 2 and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt("simulated interruption")
        return original(self, image)

    monkeypatch.setattr(CellCounter, "count_field", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        count_tool.main(args)
    assert not (out / "summary.json").exists() and (out / "run.json").exists()
    first = out / "cells" / "field0.json"
    stamp = first.stat().st_mtime_ns
    counted.clear()
    assert count_tool.main(args) == 1  # the unfinished run is resumed, no --overwrite needed
    assert counted == [(64, 80), (72, 64)]  # field0 was not counted again
    assert first.stat().st_mtime_ns == stamp
    summary = json.loads((out / "summary.json").read_text())
    assert [f["reused"] for f in summary["fields"]] == [True, False, False]


def test_count_command_refuses_to_overwrite_a_finished_report(case, capsys):
    args, out = case
    assert count_tool.main(args) == 1
    before = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert count_tool.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("error: ") and "finished report" in err[-1] and "--overwrite" in err[-1]
    )
    assert (out / "summary.json").read_bytes() == before
    assert count_tool.main([*args, "--overwrite", "--uncertain-below", "0.99"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertain_below"] == 0.99
    assert all(f["reused"] for f in summary["fields"])  # same models and images: nothing recounted


def test_a_run_killed_while_writing_run_json_is_not_a_foreign_folder(case, capsys):
    """A process killed inside an atomic write leaves its temp file (the batch's pool terminates
    the other workers when one dies): the folder is counted, not refused, and the files go."""
    args, out = case
    out.mkdir()
    (out / ".run.json.k3x_9q2a.tmp").write_text('{"fingerprint": "')
    assert count_tool.main(args) == 1
    assert (out / "summary.json").exists() and not list(out.glob(".*.tmp"))
    (out / "summary.json").unlink()  # killed later, while writing a field's cells
    (out / "cells" / ".field0.json.0abcdefg.tmp").write_text("[")
    assert count_tool.main(args) == 1
    assert not list((out / "cells").glob(".*.tmp"))
    other = case[1].parent / "other"
    other.mkdir()
    (other / ".notes.tmp").write_text("not ours: no 8-character random part\n")
    args[args.index("--output") + 1] = str(other)
    capsys.readouterr()
    assert count_tool.main(args) == 2
    assert "not empty and holds no count run" in capsys.readouterr().err
    assert (other / ".notes.tmp").exists()


def test_count_command_empty_input_is_a_one_line_error(case, tmp_path, capsys):
    args, out = case
    empty = tmp_path / "empty"
    empty.mkdir()
    args[args.index("--input") + 1] = str(empty)
    assert count_tool.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no input images") and "\n" not in err
    args[args.index("--input") + 1] = str(tmp_path / "nothing-*.png")
    assert count_tool.main(args) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not out.exists()


def test_count_command_with_a_real_classifier(tmp_path):
    pytest.importorskip("bmc_detectron.modeling.classifier")
    from detectron2.modeling import build_model

    from bmc_detectron.config import build_cfg

    cls_config = str(CONFIGS / "recognition" / "cell_classifier_R_18_synth_cpu.yaml")
    cls_opts = ["MODEL.BMC.CLASSIFIER.CROP_SIZE", "32", "MODEL.DEVICE", "cpu"]
    torch.manual_seed(0)
    cls_weights = tmp_path / "cls.pth"
    torch.save({"model": build_model(build_cfg(cls_config, cls_opts)).state_dict()}, cls_weights)
    classifier = CellClassifier.from_config(cls_config, str(cls_weights), cls_opts)
    assert (classifier.crop_size, classifier.crop_margin) == (32, 0.15)
    image, truth = disc_field(64, 64, DISCS)
    probs = classifier.classify(image, truth, batch_size=2)
    assert probs.shape == (len(DISCS), 11)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    cv2.imwrite(str(tmp_path / "field.png"), image)
    det_weights = save_random_detector(tmp_path / "det.pth", DET_OPTS)
    args = ["--detector-config", str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")]
    args += ["--detector-weights", str(det_weights), "--detector-opts", *DET_OPTS]
    args += ["--classifier-config", cls_config, "--classifier-weights", str(cls_weights)]
    args += ["--classifier-opts", *cls_opts[:2], "--input", str(tmp_path / "field.png")]
    args += ["--score-threshold", "0", "--no-progress", "--output", str(tmp_path / "out")]
    assert count_tool.main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["class_names"] == list(MARROW_ABBRS)
    assert summary["detected"] > 0
    assert summary["settings"]["classifier"]["crop_size"] == 32


# ---------------------------------------------------------------- the counter factory


def test_counter_from_a_spec_sets_the_threshold_device_and_settings(tmp_path):
    weights = save_random_detector(tmp_path / "det.pth", DET_OPTS)
    spec = CounterSpec(
        detector_config=str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml"),
        detector_weights=str(weights),
        detector_opts=(*DET_OPTS, "BMC.DATA.MICRONS_PER_PIXEL", "0.1"),
        device="cpu",
        score_threshold=0.3,
        tile_size=512,
        tile_overlap=64,
        detector_classes=("Lym",),
    )
    counter = build_counter(spec)
    assert counter.classifier is None and counter.detector.device == "cpu"
    assert counter.detector.model.test_score_thresh == pytest.approx(0.3)  # the model's own
    settings = counter.settings()
    assert (settings["score_threshold"], settings["tile_size"], settings["tile_overlap"]) == (
        0.3,
        512,
        64,
    )
    assert settings["kept_detector_classes"] == ["Lym"] and settings["nms_threshold"] == 0.5
    # the scale: read from the config only when the options (or the web page) need it
    assert scale_setup(spec, counter).model is None
    given = scale_setup(spec, counter, ScaleOptions(microns_per_pixel=0.2))
    assert given.model.microns_per_pixel == pytest.approx(0.1) and given.profile is None
    page = scale_setup(spec, counter, per_request=True)
    assert page.model.microns_per_pixel == pytest.approx(0.1)


def test_counter_spec_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="needs the detector's config and weights"):
        build_counter(CounterSpec(detector_config="det.yaml"))
    with pytest.raises(ValueError, match="needs the detector's .onnx file"):
        build_counter(CounterSpec(backend="onnx", detector_config="det.yaml"))
    with pytest.raises(ValueError, match="unknown backend 'tf'"):
        build_counter(CounterSpec(backend="tf"))
    with pytest.raises(FileNotFoundError, match="detector weights not found"):
        config = str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")
        build_counter(CounterSpec(detector_config=config, detector_weights=str(tmp_path / "x")))


def test_summary_lines_say_cells_scale_and_warnings():
    summary = {
        "counted": 7,
        "uncertain": {"total": 2},
        "other": 1,
        "fields": [{}, {}],
        "skipped": [{}],
        "scale": {"source": "given", "microns_per_pixel": 0.25, "factor": 0.5},
        "warnings": ["field3 is off scale"],
    }
    assert summary_lines(summary, Path("out")) == [
        "7 cells counted, 2 uncertain, 1 other (no known type), in 2 field(s), 1 skipped: "
        f"{Path('out') / 'report.html'}",
        "scale: 0.25 um/px (given); fields resized by 0.5 before detection",
        "warning: field3 is off scale",
    ]
    summary["scale"] = {}
    assert summary_lines(summary, Path("out"))[1] == (
        "scale: none; fields resized by 1 before detection"
    )
