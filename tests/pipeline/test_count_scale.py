"""Scale and stain in the count: the training profile, rescale and map back, red cells as a
ruler, stain normalisation, out-of-distribution flags, the count command's scale options."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.field_checks import field_flags, measure_field
from bmc_detectron.pipeline.field_prep import FieldPrep, unresized
from bmc_detectron.pipeline.model_scale import ModelScale
from bmc_detectron.pipeline.recognition import CellClassifier
from bmc_detectron.pipeline.scale_plan import ScaleOptions, make_setup, plan_scale, with_options
from bmc_detectron.smear import PROFILE_FILE, TrainingProfile
from bmc_detectron.smear.ruler import rescaled
from bmc_detectron.smear.stain import stain_shift
from bmc_detectron.tools import count as count_tool
from tests.helpers import CONFIGS
from tests.pipeline.helpers import (
    DiscDetector,
    channel_classifier,
    disc_field,
    save_random_detector,
    smear_bgr,
    write_profile,
)

DET_CONFIG = str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")
DET_OPTS = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]
DET_OPTS += ["TEST.DETECTIONS_PER_IMAGE", "6"]


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("profile")
    write_profile(folder)
    return folder


@pytest.fixture(scope="module")
def profile(profile_dir) -> TrainingProfile:
    return TrainingProfile.load(profile_dir / PROFILE_FILE)


class TruthDetector:
    """Returns fixed boxes of the original field scaled to the size of the image it is given."""

    class_names = ["cell"]

    def __init__(self, boxes: np.ndarray, height: int, width: int) -> None:
        self.boxes, self.size = np.asarray(boxes, np.float32), (height, width)
        self.calls = []

    def __call__(self, image: np.ndarray) -> Detections:
        h, w = image.shape[:2]
        self.calls.append((h, w))
        s = np.float32([w / self.size[1], h / self.size[0]] * 2)
        n = len(self.boxes)
        return Detections(self.boxes * s, np.full(n, 0.9), np.zeros(n))


# ---------------------------------------------------------------- rescale and map back


def test_rescale_and_map_back_within_a_pixel():
    boxes = np.array([[3.0, 5.0, 40.5, 61.0], [70.0, 12.0, 129.0, 97.0]], np.float32)
    for factor in (0.37, 0.5, 0.75, 1.6, 2.5):
        det = TruthDetector(boxes, 97, 131)
        counter = CellCounter(det, tile_size=0)
        cells = counter.count_image(np.zeros((97, 131, 3), np.uint8), FieldPrep(factor, True))
        assert det.calls == [(round(97 * factor), round(131 * factor))]
        got = np.array(sorted(c.box for c in cells))
        assert np.abs(got - boxes).max() < 1.0


def test_rescale_composes_with_tiling_and_crops_come_from_the_original():
    discs = [(30, 30, 9, "A"), (150, 40, 11, "B"), (95, 110, 10, "C"), (200, 150, 8, "A")]
    image, truth = disc_field(180, 230, discs)
    det = DiscDetector()
    counter = CellCounter(det, channel_classifier(), tile_size=160, tile_overlap=60)
    field = counter.count_field(image, FieldPrep(1.5, True))
    assert field.tiles > 1 and all(max(s) <= 160 for s in det.calls)
    got = np.array(sorted(c.box for c in field.cells))
    np.testing.assert_allclose(got, truth[np.lexsort(truth.T[::-1])], atol=1.5)
    assert sorted(c.label for c in field.cells) == sorted(d[3] for d in discs)


def test_fixed_scale_switches_the_detectors_own_resize_off():
    class Resizing(DiscDetector):
        min_size, max_size = 320, 426

    det = Resizing()
    copy = unresized(det)
    assert copy.min_size == 0 and det.min_size == 320 and unresized(DiscDetector()).__class__
    # a 640 x 480 training image is seen at 320 / 480 of its size
    assert ModelScale(image_size=(480, 640)).input_factor(det) == pytest.approx(2 / 3)
    assert ModelScale().input_factor(det) is None
    assert ModelScale().input_factor(DiscDetector()) == 1.0


# ---------------------------------------------------------------- plan: given and estimated


def _surveys(fields, setup, counter):
    return {
        f"f{i}": measure_field(image, str(i), "k", counter, setup) for i, image in enumerate(fields)
    }


def test_microns_per_pixel_gives_the_factor(profile):
    setup = make_setup(ScaleOptions(microns_per_pixel=0.1), profile, "p.json")
    plan = plan_scale(setup, {}, DiscDetector())
    assert plan.prep.factor == 0.5 and plan.prep.fixed_scale and plan.summary["source"] == "given"
    assert plan.summary["microns_per_pixel"] == 0.1 and plan.summary["to_training_scale"] == 0.5
    # a resizing detector: the factor includes its test resize of a training-sized image
    detector = type("R", (DiscDetector,), {"min_size": 128, "max_size": 200})()
    assert plan_scale(setup, {}, detector).prep.factor == 0.25
    # no scale options: nothing changes
    assert plan_scale(make_setup(ScaleOptions(), profile, "p"), {}, detector).prep.identity


def test_auto_scale_estimates_a_known_scale_and_a_rescaled_copy(profile):
    counter = CellCounter(DiscDetector())
    setup = make_setup(ScaleOptions(auto=True), profile, "p.json")
    native = [smear_bgr(s) for s in (1, 2, 3)]
    for fields, truth in (
        (native, 1.0),
        ([rescaled(f, 1.5)[0] for f in native], 1 / 1.5),
        ([rescaled(f, 0.6)[0] for f in native], 1 / 0.6),
        ([smear_bgr(s, 320, 2.5) for s in (4, 5)], 2.0 / 2.5),  # drawn at another scale
    ):
        plan = plan_scale(setup, _surveys(fields, setup, counter), DiscDetector())
        assert plan.summary["source"] == "ruler"
        assert abs(plan.to_training / truth - 1) < 0.1, (truth, plan.to_training)
        ruler = plan.summary["red_cells"]
        assert ruler["fields_measured"] == len(fields) and ruler["spread"] < 0.1
        assert plan.summary["microns_per_pixel"] == pytest.approx(0.2 * plan.to_training, 1e-3)
        assert not plan.outliers and not plan.warnings


def test_fields_that_disagree_are_warned_and_flagged(profile):
    counter = CellCounter(DiscDetector())
    setup = make_setup(ScaleOptions(auto=True), profile, "p.json")
    fields = [smear_bgr(1), smear_bgr(2), rescaled(smear_bgr(3), 0.5)[0]]
    plan = plan_scale(setup, surveys := _surveys(fields, setup, counter), DiscDetector())
    assert plan.outliers == ["f2"] and "differ from the case median" in plan.warnings[0]
    assert any("case median" in r for r in field_flags("f2", surveys["f2"], plan, setup))
    assert field_flags("f0", surveys["f0"], plan, setup) == []


def test_ood_flags_off_scale_and_off_colour_fields_not_in_range_ones(profile):
    counter = CellCounter(DiscDetector())
    setup = make_setup(ScaleOptions(), profile, "p.json")
    fields = [smear_bgr(7), rescaled(smear_bgr(8), 0.5)[0]]
    fields.append(stain_shift(smear_bgr(9), 1.0, 0.35, 1.0, -0.1, "BGR"))
    surveys = _surveys(fields, setup, counter)
    plan = plan_scale(setup, surveys, DiscDetector())
    flags = [field_flags(n, surveys[n], plan, setup) for n in ("f0", "f1", "f2")]
    assert flags[0] == []
    assert any("red-cell diameter" in r and "rescale by" in r for r in flags[1])
    assert any("outside the training range" in r for r in flags[2])
    # the off-scale field alone, counted at its scale (0.4 um/px, the model's 0.2), is in range
    given = with_options(setup, ScaleOptions(microns_per_pixel=0.4))
    plan = plan_scale(given, {"f1": surveys["f1"]}, DiscDetector())
    assert plan.to_training == 2.0 and field_flags("f1", surveys["f1"], plan, given) == []


def test_unknown_model_scale_is_a_clear_error(profile):
    no_mpp = TrainingProfile.from_dict({**profile.to_dict(), "microns_per_pixel": None})
    for options, prof, match in (
        (ScaleOptions(microns_per_pixel=0.1), None, "model's is unknown"),
        (ScaleOptions(microns_per_pixel=0.1), no_mpp, "model's is unknown"),
        (ScaleOptions(stain="reinhard"), None, "needs the training profile"),
        (ScaleOptions(microns_per_pixel=-1.0), profile, "positive"),
    ):
        with pytest.raises(ValueError, match=match) as err:
            make_setup(options, prof, "p.json")
        assert "\n" not in str(err.value)
    config_only = ModelScale(0.2, None, source="config")
    assert make_setup(ScaleOptions(microns_per_pixel=0.1), None, None, config_only).model
    # a profile without the pixel size, completed by the config's
    model = make_setup(ScaleOptions(microns_per_pixel=0.1), no_mpp, "p", config_only).model
    assert model.microns_per_pixel == 0.2 and model.rbc_diameter_px == profile.rbc_diameter_px
    assert model.source == "p + config"


# ---------------------------------------------------------------- the count command


@pytest.fixture
def scale_case(tmp_path, monkeypatch, profile):
    """Three small smears at 1.5x the training scale, a tiny detector with the profile beside."""
    data = tmp_path / "case"
    data.mkdir()
    for i in range(3):
        cv2.imwrite(str(data / f"s{i}.png"), rescaled(smear_bgr(1 + i), 1.5)[0])
    model = tmp_path / "model"
    model.mkdir()
    weights = save_random_detector(model / "det.pth", DET_OPTS)
    (model / PROFILE_FILE).write_text(json.dumps(profile.to_dict()))
    cls_cfg, cls_weights = tmp_path / "cls.yaml", tmp_path / "cls.pth"
    cls_cfg.write_text("# stand-in\n")
    cls_weights.write_bytes(b"stand-in")
    monkeypatch.setattr(
        CellClassifier, "from_config", classmethod(lambda cls, c, w, o=(): channel_classifier())
    )
    args = ["--detector-config", DET_CONFIG, "--detector-weights", str(weights)]
    args += ["--detector-opts", *DET_OPTS, "--classifier-config", str(cls_cfg)]
    args += ["--classifier-weights", str(cls_weights), "--input", str(data / "*.png")]
    args += ["--score-threshold", "0", "--device", "cpu", "--no-progress"]
    return args, tmp_path / "report"


def test_count_command_with_auto_scale_and_stain_normalisation(scale_case, capsys):
    args, out = scale_case
    argv = [*args, "--output", str(out), "--auto-scale", "--stain-normalize", "reinhard"]
    assert count_tool.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    scale = summary["scale"]
    assert scale["source"] == "ruler" and abs(scale["to_training_scale"] * 1.5 - 1) < 0.1
    assert scale["microns_per_pixel"] == pytest.approx(0.2 * scale["to_training_scale"], 1e-3)
    assert scale["stain_normalize"] == "reinhard" and scale["ood_checked"]
    assert scale["profile"].endswith(PROFILE_FILE) and scale["red_cells"]["fields_measured"] == 3
    # training images of 256 px seen at 64 px: the fields are resized by 1 / 1.5 * 0.25
    assert scale["factor"] == pytest.approx(scale["to_training_scale"] * 0.25, abs=1e-3)
    assert summary["settings"]["field_prep"]["fixed_scale"]
    for f in summary["fields"]:  # at the estimated scale, no field is off-scale
        assert not any("red" in r for r in f["flags"]) and 40 < f["rbc_diameter_px"] < 60
        saved = json.loads((out / "cells" / f"{f['name']}.json").read_text())
        assert saved["flags"] == f["flags"]
        assert all(0 <= v <= 384 for c in saved["cells"] for v in c["box"])
    html = (out / "report.html").read_text()
    assert "Scale and stain" in html and "estimated from the red cells" in html
    printed = capsys.readouterr().out
    assert "scale: 0.13" in printed and "estimated from the red cells" in printed


def test_count_command_flags_and_rescales_with_a_given_scale(scale_case, capsys):
    args, out = scale_case
    # the automatic scale off: the fields as they are; the profile is found: they are checked
    assert count_tool.main([*args, "--output", str(out), "--no-auto-scale"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scale"]["source"] == "none" and summary["scale"]["factor"] == 1.0
    assert all(any("red-cell diameter" in r for r in f["flags"]) for f in summary["fields"])
    assert "outside the training data" in " ".join(summary["warnings"])
    html = (out / "report.html").read_text()
    assert "Fields outside the training data" in html and "flagged" in html
    # a given scale changes the fingerprint: every field is counted again, then unflagged
    argv = [*args, "--output", str(out), "--overwrite", "--microns-per-pixel", "0.1333"]
    assert count_tool.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    scale = summary["scale"]
    assert scale["source"] == "given" and scale["microns_per_pixel"] == 0.1333
    assert scale["to_training_scale"] == pytest.approx(0.6665) and scale["red_cells"]
    assert not any(f["reused"] for f in summary["fields"])
    assert not any("red" in r for f in summary["fields"] for r in f["flags"])
    assert count_tool.main(argv) == 0
    assert all(f["reused"] for f in json.loads((out / "summary.json").read_text())["fields"])
    assert "scale: 0.1333 um/px (given)" in capsys.readouterr().out


def test_count_command_errors_when_the_models_scale_is_unknown(scale_case, tmp_path, capsys):
    args, out = scale_case
    (tmp_path / "model" / PROFILE_FILE).unlink()
    for extra, words in (
        (["--microns-per-pixel", "0.1"], "BMC.DATA.MICRONS_PER_PIXEL"),
        (["--stain-normalize", "reinhard"], "needs the training profile"),
        (["--training-profile", str(tmp_path / "none.json")], "not found"),
    ):
        assert count_tool.main([*args, "--output", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err
    assert not out.exists()
    # the config's scale is enough for a given scale
    argv = list(args)
    at = argv.index("--detector-opts") + 1
    argv[at:at] = ["BMC.DATA.MICRONS_PER_PIXEL", "0.2"]
    assert count_tool.main([*argv, "--output", str(out), "--microns-per-pixel", "0.1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scale"]["source"] == "given" and summary["scale"]["model"]["source"] == "config"
    assert any("size is unknown" in w for w in summary["warnings"])


class RedCellBoxes:
    """A detector with a red-cell class: ``n`` red-cell boxes of side ``side`` (+ one cut by the
    border, which the ruler leaves out) and a white cell."""

    class_names = ["WBC", "RBC"]

    def __init__(self, side: float, n: int = 6) -> None:
        self.side, self.n = side, n

    def __call__(self, image: np.ndarray) -> Detections:
        boxes = [[10 + 30 * k, 10, 10 + 30 * k + self.side, 10 + self.side] for k in range(self.n)]
        boxes += [[0, 50, self.side / 2, 50 + self.side], [40, 60, 80, 100]]
        classes = [1] * (self.n + 1) + [0]
        return Detections(boxes, [0.9] * len(boxes), classes)


def test_a_detectors_red_cell_class_is_the_ruler(profile):
    with_boxes = TrainingProfile.from_dict({**profile.to_dict(), "rbc_box_diameter_px": 16.0})
    setup = make_setup(ScaleOptions(auto=True), with_boxes, "p.json")
    counter = CellCounter(RedCellBoxes(24.0))
    field = np.full((120, 260, 3), 235, np.uint8)  # no red cells for the classical estimate
    survey = measure_field(field, "0", "k", counter, setup)
    assert survey.rbc_box_px == 24.0 and not np.isfinite(survey.rbc_px)
    plan = plan_scale(setup, {"f0": survey}, counter.detector)
    assert plan.to_training == pytest.approx(16 / 24) and plan.summary["source"] == "ruler"
    assert plan.summary["red_cells"]["method"] == "detected red cells"
    # too few detected red cells: the classical estimate stands in
    survey = measure_field(smear_bgr(1), "1", "k", CellCounter(RedCellBoxes(24.0, 3)), setup)
    assert survey.rbc_box_px is None or not np.isfinite(survey.rbc_box_px)
    assert np.isfinite(survey.rbc_px)


def test_web_api_takes_the_microns_per_pixel(profile):
    pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")
    pytest.importorskip("python_multipart", reason="pip install -e '.[serve]'")
    from fastapi.testclient import TestClient

    from bmc_detectron.pipeline.scale_plan import ScaleSetup
    from bmc_detectron.serve import ServeSettings, create_app
    from tests.serve.helpers import encode

    counter = CellCounter(DiscDetector(), score_threshold=0.1)
    settings = ServeSettings(allowed_hosts=("testserver",))
    png = encode(rescaled(smear_bgr(1), 0.5)[0][:, :, ::-1])
    files = [("files", ("a.png", png, "image/png"))]
    model = ModelScale.from_profile(profile, "p.json")
    with TestClient(
        create_app(counter, settings=settings, scale=ScaleSetup(model=model, profile=profile))
    ) as c:
        plain = c.post("/api/v1/analyze", files=files).json()
        assert plain["scale"]["source"] == "none" and plain["scale"]["factor"] == 1.0
        assert any("red-cell diameter" in r for r in plain["fields"][0]["flags"])
        given = c.post("/api/v1/analyze", files=files, data={"microns_per_pixel": "0.4"}).json()
        assert given["scale"]["source"] == "given" and given["scale"]["factor"] == 2.0
        assert given["fields"][0]["flags"] == [] and given["fingerprint"] != plain["fingerprint"]
        bad = c.post("/api/v1/analyze", files=files, data={"microns_per_pixel": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_scale"
        assert c.get("/api/v1/model").json()["scale"]["microns_per_pixel"] == 0.2
    with TestClient(create_app(counter, settings=settings)) as c:
        unknown = c.post("/api/v1/analyze", files=files, data={"microns_per_pixel": "0.4"})
        assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "scale_unknown"
        assert c.post("/api/v1/analyze", files=files).json()["fields"][0]["flags"] == []
