"""The count knows when its scale is wrong (issue 24 s.2 and s.4, issue 31 s.2): the size at
which the detector sees the cells against its training size (``pipeline.detector_view``), the
red-cell ruler that disagrees with itself, and fields where the stain shows cells but none are
found (``pipeline.field_checks``); each a warning with a code in summary.json, stderr and the
report, or a refusal with ``--strict-scale``."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import cv2
import pytest

from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.count_warnings import (
    DETECTOR_SCALE,
    FEW_CELLS_FOUND,
    RULER_OUTLIERS,
    RULER_SPREAD,
    SCALE_UNSETTLED,
    CountWarning,
    warning_entries,
)
from bmc_detectron.pipeline.detector_view import (
    ScaleMismatchError,
    check_strict,
    detector_view,
    tile_shape,
)
from bmc_detectron.pipeline.field_checks import (
    RedCellReading,
    boxes_fraction,
    few_cells_warning,
    nucleus_fraction,
)
from bmc_detectron.pipeline.field_prep import FieldPrep
from bmc_detectron.pipeline.model_scale import ModelScale
from bmc_detectron.pipeline.run import run_count
from bmc_detectron.pipeline.scale_plan import ScaleOptions, ScaleSetup, plan_scale
from bmc_detectron.smear.ruler import RBCEstimate
from bmc_detectron.tools import count as count_tool
from tests.helpers import CONFIGS
from tests.pipeline.helpers import DiscDetector, disc_field

# The issue's detector: tests at 320 px, trained at 480 px on 640 x 480 images.
BCCD_LIKE = SimpleNamespace(min_size=320, max_size=1333, train_min_size=(480,), train_max_size=640)
DISCS = [(60, 60, 14, "A"), (150, 90, 16, "B"), (90, 170, 12, "A")]


class ResizingDiscDetector(DiscDetector):
    """The disc detector with the issue's test and training resize rules (as attributes)."""

    min_size, max_size, train_min_size, train_max_size = 320, 1333, (480,), 640


class BlindDetector(DiscDetector):
    """Finds nothing, whatever the field shows."""

    def __call__(self, image):
        self.calls.append(image.shape[:2])
        return Detections.empty()


def test_the_issues_field_is_seen_at_a_third_of_its_training_size():
    shapes = {"big": (1440, 1440), "like_training": (480, 640)}
    view = detector_view(BCCD_LIKE, shapes, FieldPrep(), tile_size=1024, image_size=(480, 640))
    assert view.training.factor == 1.0 and not view.training.assumptions
    big = view.fields["big"]
    assert big["tile"] == [1024, 1024] and big["input"] == [320, 320]
    assert big["relative"] == pytest.approx(320 / 1024) and view.off == ["big"]
    # a training-sized field is seen at 320 / 480 of its training size: within 1.5x
    assert view.fields["like_training"]["relative"] == pytest.approx(2 / 3, abs=1e-3)
    (warning,) = view.warnings()
    assert warning.code == DETECTOR_SCALE and "0.31x their training size" in warning
    assert "1440x1440 px in tiles of 1024x1024 px seen at 320x320 px" in warning
    with pytest.raises(ScaleMismatchError, match=r"^big: cells seen at 0\.31x.*--strict-scale"):
        check_strict(view, strict=True)
    check_strict(view, strict=False)  # warns only


def test_a_known_scale_brings_the_view_back_and_the_tolerance_is_a_setting():
    # the field at twice the training pixel size, resized to it with the detector's resize off
    prep = FieldPrep(0.5 * 320 / 480, fixed_scale=True)
    view = detector_view(
        BCCD_LIKE, {"f": (1440, 1440)}, prep, tile_size=1024, to_training=0.5, image_size=(480, 640)
    )
    assert view.fields["f"]["relative"] == pytest.approx(2 / 3, abs=1e-3) and not view.off
    strict = detector_view(
        BCCD_LIKE,
        {"f": (480, 640)},
        FieldPrep(),
        tile_size=1024,
        image_size=(480, 640),
        tolerance=1.2,
    )
    assert strict.off == ["f"]
    with pytest.raises(ValueError, match="factor > 1"):
        detector_view(BCCD_LIKE, {}, FieldPrep(), tile_size=0, tolerance=0.5)
    assert tile_shape(1440, 900, 0.5, 512) == (512, 450)


def test_without_a_profile_the_assumption_is_stated():
    view = detector_view(BCCD_LIKE, {"f": (1440, 1440)}, FieldPrep(), tile_size=1024)
    assert view.training.factor == 1.0 and "own size" in view.training.assumptions[0]
    assert view.to_json()["assumptions"] and view.off == ["f"]
    onnx_like = SimpleNamespace(min_size=320, max_size=1333)  # no training rule known
    assumed = detector_view(onnx_like, {}, FieldPrep(), tile_size=0, image_size=(480, 640))
    assert assumed.training.factor == pytest.approx(320 / 480)
    assert "assumed the test resize" in assumed.training.assumptions[0]


def _reading(px: float) -> RedCellReading:
    return RedCellReading(RBCEstimate(px, 0.05, 30))


def test_a_ruler_that_disagrees_with_itself_does_not_resize():
    model = ModelScale(0.2, 30.0, None, (480, 640), "hand-built")
    setup = ScaleSetup(ScaleOptions(auto=True, tolerance=0.15), model)
    surveys = {"a": _reading(30.0), "b": _reading(45.0), "c": _reading(60.0), "d": _reading(20.0)}
    plan = plan_scale(setup, surveys, SimpleNamespace(min_size=0))
    assert plan.spread > 0.15 and plan.prep.identity and plan.to_training == 1.0
    assert plan.summary["source"] == "none" and plan.summary["ruler_rejected"]
    assert plan.summary["red_cells"]["spread"] == round(plan.spread, 4)
    codes = [w.code for w in plan.warnings]
    assert codes[:2] == [RULER_SPREAD, SCALE_UNSETTLED] and "cannot read" in plan.warnings[0]
    assert "counted at the model's scale (factor 1" in plan.warnings[1]
    assert not plan.summary["settled"] and plan.summary["confidence"] == 0
    # a given microns per pixel still wins
    given = ScaleSetup(ScaleOptions(microns_per_pixel=0.4, tolerance=0.15), model)
    plan = plan_scale(given, surveys, SimpleNamespace(min_size=0))
    assert plan.to_training == 2.0 and RULER_SPREAD not in [w.code for w in plan.warnings]


def test_many_fields_off_the_median_mean_the_ruler_cannot_read_the_case():
    # six fields agree, four read 1.5x: the spread (MAD / median) is 0, but 40 % of the fields
    # are off the median: crowded fields the ruler misreads; one case-level line, no field flags
    model = ModelScale(0.2, 30.0, None, (480, 640), "hand-built")
    setup = ScaleSetup(ScaleOptions(tolerance=0.15), model)
    surveys = {f"f{i}": _reading(30.0 if i < 6 else 45.0) for i in range(10)}
    plan = plan_scale(setup, surveys, SimpleNamespace(min_size=0))
    assert plan.spread == 0 and plan.outlier_share == pytest.approx(0.4)
    assert not plan.ruler_agrees and [w.code for w in plan.warnings] == [RULER_SPREAD]
    assert "40% of the fields off the median" in plan.warnings[0]
    # two fields off the median of ten: the ruler reads the case, and flags them singly
    surveys = {f"f{i}": _reading(30.0 if i < 8 else 45.0) for i in range(10)}
    plan = plan_scale(setup, surveys, SimpleNamespace(min_size=0))
    assert plan.ruler_agrees and plan.outlier_share == 0.0
    assert [w.code for w in plan.warnings] == [RULER_OUTLIERS]


def test_nucleus_stain_without_cells_is_warned():
    image, boxes = disc_field(200, 200, DISCS)
    nuclei = nucleus_fraction(image)
    assert 0.01 < nuclei < 0.1  # the blue-purple discs, not the background
    covered = boxes_fraction(boxes.tolist(), 200, 200)
    assert covered > nuclei and boxes_fraction([], 200, 200) == 0.0
    assert few_cells_warning([("found", nuclei, covered)]) == []
    (warning,) = few_cells_warning([("missed", nuclei, 0.0), ("empty", 0.0, 0.0)])
    assert warning.code == FEW_CELLS_FOUND and "1 field(s)" in warning and "missed" in warning
    assert "empty" not in warning.split(":", 1)[1]


def test_warnings_are_sentences_with_codes():
    coded = CountWarning(RULER_SPREAD, "the ruler disagrees")
    assert coded == "the ruler disagrees" and json.dumps([coded]) == '["the ruler disagrees"]'
    assert warning_entries([coded, "plain"]) == [
        {"code": RULER_SPREAD, "message": "the ruler disagrees"},
        {"code": "other", "message": "plain"},
    ]


def _case(tmp_path, size, discs):
    data = tmp_path / "case"
    data.mkdir()
    cv2.imwrite(str(data / "field.png"), disc_field(size, size, discs)[0])
    return [data / "field.png"]


def test_the_count_warns_when_the_detector_sees_the_cells_far_too_small(tmp_path, caplog):
    # issue 24 s.4: a 1440 x 1440 field through 1024 px tiles at MIN_SIZE_TEST 320 (silent before)
    inputs = _case(tmp_path, 1440, [(300, 300, 40, "A"), (900, 1000, 40, "B")])
    counter = CellCounter(ResizingDiscDetector(), tile_size=1024, tile_overlap=128)
    setup = ScaleSetup(model=ModelScale(image_size=(480, 640), source="hand-built"))
    with caplog.at_level(logging.WARNING, logger="bmc_detectron.pipeline.run"):
        summary = run_count(counter, inputs, tmp_path / "out", progress=False, scale=setup)
    codes = [w["code"] for w in summary["warning_codes"]]
    assert DETECTOR_SCALE in codes
    text = summary["warning_codes"][codes.index(DETECTOR_SCALE)]["message"]
    assert text in summary["warnings"] and "0.31x their training size" in text
    assert "0.31x" in caplog.text
    assert summary["scale"]["detector_input"]["off"] == ["field"]
    assert "0.31x their training size" in (tmp_path / "out" / "report.html").read_text()
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["warning_codes"] == summary["warning_codes"]
    # refused with strict_scale, before any field is counted
    strict = ScaleSetup(ScaleOptions(strict_scale=True), setup.model)
    with pytest.raises(ScaleMismatchError):
        run_count(counter, inputs, tmp_path / "strict", progress=False, scale=strict)
    assert not (tmp_path / "strict" / "cells").exists()


def test_the_count_warns_when_the_stain_shows_cells_but_none_are_found(tmp_path):
    inputs = _case(tmp_path, 200, DISCS)
    blind = run_count(CellCounter(BlindDetector()), inputs, tmp_path / "blind", progress=False)
    assert [w["code"] for w in blind["warning_codes"]].count(FEW_CELLS_FOUND) == 1
    assert "stain shows nucleated cells" in (tmp_path / "blind" / "report.html").read_text()
    found = run_count(CellCounter(DiscDetector()), inputs, tmp_path / "found", progress=False)
    assert found["detected"] == 3 and not found["warnings"][1:]  # only the under-500 rule
    assert FEW_CELLS_FOUND not in [w["code"] for w in found["warning_codes"]]


DET_CONFIG = str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")


def test_count_command_warns_or_refuses_the_issues_field(tmp_path, capsys):
    from tests.pipeline.helpers import save_random_detector

    opts = ["INPUT.MIN_SIZE_TEST", "320", "INPUT.MAX_SIZE_TEST", "1333"]
    opts += ["TEST.DETECTIONS_PER_IMAGE", "4"]
    inputs = _case(tmp_path, 1440, [(300, 300, 40, "A")])
    weights = save_random_detector(tmp_path / "det.pth", opts)
    args = ["--detector-config", DET_CONFIG, "--detector-weights", str(weights)]
    args += ["--detector-opts", *opts, "--input", str(inputs[0]), "--device", "cpu"]
    args += ["--no-progress", "--score-threshold", "0.99", "--no-auto-scale"]  # as it is
    strict = [*args, "--output", str(tmp_path / "strict"), "--strict-scale"]
    assert count_tool.main(strict) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: field: cells seen at 0.31x") and "\n" not in err
    assert "1440x1440 px" in err and "320x320 px" in err
    wide = [*args, "--output", str(tmp_path / "wide"), "--detector-scale-tolerance", "4"]
    assert count_tool.main(wide) == 0
    summary = json.loads((tmp_path / "wide" / "summary.json").read_text())
    assert DETECTOR_SCALE not in [w["code"] for w in summary["warning_codes"]]
