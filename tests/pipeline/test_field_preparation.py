"""Field preparation in pieces, on hand-built values: what is done to a field
(``pipeline.field_prep``), what is measured on it (``pipeline.field_checks``) and the case's
scale plan (``pipeline.scale_plan``). The end-to-end count with them is in test_count_scale."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.field_checks import (
    FieldSurvey,
    RedCellReading,
    load_survey,
    rbc_from_detections,
    red_cell_ruler,
    save_survey,
    survey_key,
)
from bmc_detectron.pipeline.field_prep import FieldPrep, detect_rescaled, map_boxes_back
from bmc_detectron.pipeline.model_scale import ModelScale, sidecar_scale
from bmc_detectron.pipeline.scale_plan import ScaleOptions, ScaleSetup, plan_scale, relative_size
from bmc_detectron.smear.ruler import RBCEstimate
from bmc_detectron.smear.stain import ReinhardTarget

NAN = float("nan")
# training images: 0.2 um/px, red cells 30 px (classical) and 20 px (boxes), 480 x 640
MODEL = ModelScale(0.2, 30.0, 20.0, (480, 640), "hand-built")


def _survey(rbc_px: float, box: float | None = None) -> FieldSurvey:
    return FieldSurvey("sha", "k", rbc_px, 0.1, 40, box, [200.0, 140.0, 120.0], [20.0, 5.0, 5.0])


# ---------------------------------------------------------------- field_prep


def test_field_prep_checks_rounds_and_describes_itself():
    assert FieldPrep().identity and not FieldPrep(1.0, True).identity
    prep = FieldPrep(0.123456, True, ReinhardTarget((70.0, 10.0, -5.0), (15.0, 5.0, 5.0)))
    assert prep.factor == 0.1235 and not prep.identity
    assert prep.settings()["stain"] == {"mean": [70.0, 10.0, -5.0], "std": [15.0, 5.0, 5.0]}
    assert FieldPrep(2.0).settings() == {"factor": 2.0, "fixed_scale": False, "stain": None}
    image = np.full((8, 8, 3), 120, np.uint8)
    assert FieldPrep().normalise(image) is image
    for bad in (0.0, -1.0, NAN, math.inf):
        with pytest.raises(ValueError):
            FieldPrep(bad)


def test_boxes_of_a_resized_field_come_back_clipped_to_the_field():
    dets = Detections([[10, 20, 110, 60], [-4, 0, 400, 90]], [0.9, 0.8], [0, 1])
    back = map_boxes_back(dets, 2.0, 0.5, 100, 150)
    np.testing.assert_allclose(back.boxes, [[5, 40, 55, 100], [0, 0, 150, 100]])
    assert back.classes.tolist() == [0, 1] and back.scores.tolist() == pytest.approx([0.9, 0.8])

    seen = []

    def detect(image):
        seen.append(image.shape[:2])
        return Detections([[0, 0, 20, 10]], [0.9], [0]), 1

    image = np.zeros((40, 60, 3), np.uint8)
    dets, tiles = detect_rescaled(detect, image, 2.0)
    assert seen == [(80, 120)] and tiles == 1
    np.testing.assert_allclose(dets.boxes, [[0, 0, 10, 5]])
    detect_rescaled(detect, image, 1.0)
    assert seen[-1] == (40, 60)


# ---------------------------------------------------------------- field_checks


def test_red_cells_from_detections_leave_out_cut_and_other_boxes():
    boxes = [[10, 10, 30, 28], [40, 10, 62, 30], [70, 10, 88, 30], [0, 40, 12, 60]]
    boxes += [[20, 40, 40, 60], [50, 40, 90, 80]]
    dets = Detections(boxes, [0.9] * 6, [1, 1, 1, 1, 1, 0])
    # the box on the border and the other class's are left out: sides 20, 22, 20, 20
    assert rbc_from_detections(dets, 1, 100, 100, min_cells=4) == 20.0
    assert math.isnan(rbc_from_detections(dets, 1, 100, 100, min_cells=5))


def test_field_survey_round_trips_through_its_cache(tmp_path):
    survey = _survey(NAN, None)
    path = tmp_path / "f.json"
    save_survey(path, survey)
    data = json.loads(path.read_text())
    assert data["rbc_px"] is None and data["rbc_box_px"] is None
    again = load_survey(path, "sha", "k")
    assert math.isnan(again.rbc_px) and again.rbc_box_px is None and again.rbc_n == 40
    assert load_survey(path, "other", "k") is None and load_survey(path, "sha", "x") is None
    assert load_survey(tmp_path / "none.json", "sha", "k") is None


class _RedBoxes:
    """Eight 24 px red cells (class 1) inside the field."""

    class_names = ["WBC", "RBC"]

    def __call__(self, image: np.ndarray) -> Detections:
        boxes = [[10 + 30 * k, 10, 34 + 30 * k, 34] for k in range(8)]
        return Detections(boxes, [0.9] * 8, [1] * 8)


def test_the_ruler_reads_the_detectors_red_cells_only_when_they_are_the_ruler():
    counter = CellCounter(_RedBoxes(), tile_size=0)
    field = np.full((60, 260, 3), 235, np.uint8)
    auto = ScaleSetup(ScaleOptions(auto=True), MODEL)
    reading = red_cell_ruler(field, counter, auto)
    assert reading.rbc_box_px == 24.0 and math.isnan(reading.rbc_px)
    assert relative_size(reading, MODEL) == pytest.approx(24 / 20)
    assert survey_key(counter, auto).startswith("classical+detector:")
    # no counter, no auto-scale, or no training boxes' diameter: the classical estimate only
    no_boxes = ScaleSetup(ScaleOptions(auto=True), ModelScale(0.2, 30.0))
    for c, setup in ((None, auto), (counter, ScaleSetup(model=MODEL)), (counter, no_boxes)):
        assert red_cell_ruler(field, c, setup).rbc_box_px is None
    assert survey_key(counter, no_boxes) == "classical"


# ---------------------------------------------------------------- scale_plan


def test_relative_size_prefers_the_boxes_and_is_nan_unmeasured():
    reading = RedCellReading(RBCEstimate(45.0, 0.1, 30), 30.0)
    assert relative_size(reading, MODEL) == 1.5
    assert relative_size(RedCellReading(RBCEstimate(45.0, 0.1, 30)), MODEL) == 1.5
    assert relative_size(_survey(60.0, NAN), MODEL) == 2.0
    assert relative_size(_survey(60.0, 30.0), ModelScale(rbc_diameter_px=30.0)) == 2.0
    assert math.isnan(relative_size(_survey(NAN), MODEL))
    assert math.isnan(relative_size(_survey(60.0), ModelScale()))


def test_the_plan_of_a_case_measured_by_hand():
    setup = ScaleSetup(ScaleOptions(auto=True, tolerance=0.15), MODEL)
    surveys = {"a": _survey(60.0), "b": _survey(62.0), "c": _survey(58.0), "d": _survey(90.0)}
    detector = SimpleNamespace(min_size=240, max_size=1000)  # sees training images at 1/2
    plan = plan_scale(setup, surveys, detector)
    median = (60.0 + 62.0) / 2 / 30.0
    assert plan.median == pytest.approx(median) and plan.outliers == ["d"]
    assert plan.to_training == pytest.approx(1 / median)
    assert plan.prep.fixed_scale and plan.prep.factor == round(0.5 / median, 4)
    summary = plan.summary
    assert summary["source"] == "ruler" and summary["red_cells"]["fields_measured"] == 4
    assert summary["red_cells"]["method"] == "classical (OpenCV)"
    assert summary["microns_per_pixel"] == round(0.2 / median, 5)
    assert summary["detector_resize"] == "off (fixed scale)" and summary["ood_checked"] is False
    assert "1 field(s)" in plan.warnings[0] and "d" in plan.warnings[0]
    # detected boxes where found: the method says so
    mixed = {**surveys, "a": _survey(60.0, 40.0)}
    assert "where found" in plan_scale(setup, mixed, detector).summary["red_cells"]["method"]


def test_a_given_scale_wins_and_a_disagreeing_ruler_is_warned():
    setup = ScaleSetup(ScaleOptions(microns_per_pixel=0.4), MODEL)
    surveys = {"a": _survey(30.0), "b": _survey(30.0)}  # the red cells say: already at scale
    plan = plan_scale(setup, surveys, SimpleNamespace(min_size=0))
    assert plan.to_training == 2.0 and plan.prep.factor == 2.0
    assert plan.summary["source"] == "given" and plan.summary["microns_per_pixel"] == 0.4
    assert "check the microns per pixel given" in plan.warnings[0]


def test_auto_scale_without_red_cells_counts_fields_at_their_own_size():
    setup = ScaleSetup(ScaleOptions(auto=True), MODEL)
    plan = plan_scale(setup, {"a": _survey(NAN)}, SimpleNamespace(min_size=0))
    assert plan.prep.identity and plan.summary["source"] == "none"
    assert plan.summary["red_cells"] is None and "no red cells measured" in plan.warnings[0]
    assert "could not be settled (no red cells measured)" in plan.warnings[1]


def test_sidecar_scale_of_an_onnx_detector():
    meta = {"scale": {"microns_per_pixel": 0.25, "rbc_diameter_px": 0}}
    scale = sidecar_scale(SimpleNamespace(meta=meta))
    assert scale == ModelScale(0.25, None, source="ONNX sidecar (config)")
    assert sidecar_scale(SimpleNamespace(meta={"scale": {"microns_per_pixel": 0}})) is None
    assert sidecar_scale(SimpleNamespace()) is None


def test_the_detector_pads_its_input_by_repeating_the_edges():
    """A field resized to a size off the backbone's multiple (257 px, stride 32) reaches the model
    edge-padded (no flat strip for a model never trained on padding to read as cells); boxes come
    back in the field's pixels, the padding's cut off, the empty ones dropped."""
    import torch
    from detectron2.structures import Boxes, Instances

    from bmc_detectron.pipeline.detector import Detector, pad_to_multiple

    seen = []

    def model(inputs):
        image = inputs[0]["image"]
        seen.append(image)
        h, w = image.shape[1:]
        boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [250.0, 20.0, 280.0, 40.0]])
        boxes = torch.cat([boxes, torch.tensor([[260.0, 260.0, 280.0, 280.0]])])
        found = Instances((h, w), pred_boxes=Boxes(boxes), scores=torch.tensor([0.9, 0.8, 0.7]))
        found.pred_classes = torch.zeros(3, dtype=torch.int64)
        return [{"instances": found}]

    field = np.random.default_rng(0).integers(0, 255, (257, 250, 3), dtype=np.uint8)
    detector = Detector(model=model, class_names=["cell"], min_size=0, size_divisibility=32)
    dets = detector(field)
    image = seen[0].numpy().transpose(1, 2, 0)
    assert image.shape == (288, 256, 3)
    assert (image[:257, :250] == field).all() and (image[257:, :250] == field[-1]).all()
    assert (image[:257, 250:] == field[:, -1:]).all()
    assert dets.boxes.tolist() == [[10.0, 10.0, 30.0, 30.0]]  # the others lie in the padding
    assert pad_to_multiple(field[:256, :224], 32).shape == (256, 224, 3)
    assert pad_to_multiple(field, 0) is field
