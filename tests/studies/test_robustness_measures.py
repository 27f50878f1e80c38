"""The robustness sweep's inference-time measures (red-cell auto-scale, Reinhard) and its page."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.data.synthetic import generate_image
from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.field_checks import measure_field
from bmc_detectron.pipeline.scale_plan import plan_scale
from bmc_detectron.smear.profile import TrainingProfile, profile_from_records
from bmc_detectron.smear.ruler import rescaled
from bmc_detectron.smear.stain import lab_stats, stain_shift
from studies.robustness.measures import (
    MeasuredMapper,
    Measures,
    case_ruler,
    split_variant,
)
from studies.robustness.report import (
    load_sweeps,
    pivot_table,
    plot_curves,
    results_table,
    ruler_table,
    scale_deviation,
    stain_drop,
    verdicts,
)


def _record(path: Path, image_bgr: np.ndarray, image_id: int) -> dict:
    cv2.imwrite(str(path), image_bgr)
    h, w = image_bgr.shape[:2]
    return {"file_name": str(path), "height": h, "width": w, "image_id": image_id}


@pytest.fixture
def smears(tmp_path):
    """Two synthetic smears (BGR) at scale 1, their 2x copies and the profile of the originals."""
    rng = np.random.default_rng
    images = [generate_image(rng(s), 256, 256)[0][..., ::-1].copy() for s in (0, 1)]
    records = [_record(tmp_path / f"o{i}.png", im, i) for i, im in enumerate(images)]
    copies = [
        _record(tmp_path / f"x{i}.png", rescaled(im, 2.0)[0], 10 + i) for i, im in enumerate(images)
    ]
    return records, copies, profile_from_records(records, max_images=0)


def _cfg(min_size: int = 128):
    cfg = get_bmc_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = min_size, 1000
    cfg.INPUT.FORMAT = "BGR"
    return cfg


def _mapper(cfg, measures: Measures) -> MeasuredMapper:
    plain = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
    return MeasuredMapper(cfg, measures.augmentations(cfg, plain))


def test_auto_scale_mapper_resizes_a_2x_copy_like_the_original(smears):
    records, copies, profile = smears
    mapper = _mapper(_cfg(), Measures(auto_scale=True, profile=profile, profile_source="p"))
    for orig, copy in zip(records, copies):
        a, b = mapper(dict(orig)), mapper(dict(copy))
        size_a, size_b = a["image"].shape[1:], b["image"].shape[1:]
        # the training profile is of these images, their test resize 128 / 256: ~128 px
        assert abs(size_a[0] / 128 - 1) < 0.15
        assert abs(size_b[0] / size_a[0] - 1) < 0.10 and abs(size_b[1] / size_a[1] - 1) < 0.10
        assert abs(b["ruler"]["relative"] / a["ruler"]["relative"] / 2 - 1) < 0.10
        assert b["height"] == 512  # the copy's own size: boxes are mapped back to it


def test_auto_scale_per_case_uses_the_median_of_the_case(smears):
    records, copies, profile = smears
    measures = Measures(True, None, profile, "p", per_case=True)
    assert measures.variant("m") == "m + auto-scale per case"
    relative, entries = case_ruler([r["file_name"] for r in copies], measures.ruler())
    assert len(entries) == 2 and abs(relative / 2 - 1) < 0.15
    plain = T.ResizeShortestEdge(128, 1000, "choice")
    cfg = _cfg()
    mapper = MeasuredMapper(cfg, measures.augmentations(cfg, plain, relative))
    out = mapper(dict(copies[0]))
    assert out["ruler"]["relative"] == relative and np.isnan(out["ruler"]["rbc_px"])
    assert abs(out["image"].shape[1] / 128 - 1) < 0.15
    # no estimate for the case: the model's usual test resize
    blind = MeasuredMapper(cfg, measures.augmentations(cfg, plain, float("nan")))
    assert blind(dict(copies[0]))["image"].shape[1] == 128


class RedCellBoxes:
    """Eight 24 px red cells (class 1) inside any field."""

    class_names = ["WBC", "RBC"]

    def __call__(self, image: np.ndarray) -> Detections:
        boxes = [[10 + 30 * k, 10, 34 + 30 * k, 34] for k in range(8)]
        return Detections(boxes, [0.9] * 8, [1] * 8)


def test_the_sweeps_ruler_reads_a_field_as_the_count_does(smears):
    records, copies, profile = smears
    with_boxes = TrainingProfile.from_dict({**profile.to_dict(), "rbc_box_diameter_px": 16.0})
    measures = Measures(True, None, with_boxes, "p", per_case=True)
    image = cv2.imread(copies[0]["file_name"])
    for counter in (None, CellCounter(RedCellBoxes(), tile_size=0)):
        ruler = measures.ruler(counter)
        survey = measure_field(image, "0", "k", counter, ruler.setup)
        plan = plan_scale(ruler.setup, {"f": survey}, RedCellBoxes())
        assert ruler.measure(image) == {"rbc_px": survey.rbc_px, "relative": plan.relative["f"]}
    # with the detector's red cells the ruler reads their boxes: 24 px over the training 16 px
    assert ruler.measure(image)["relative"] == 1.5
    relative, entries = case_ruler([r["file_name"] for r in copies], ruler)
    assert relative == 1.5 and [e["relative"] for e in entries] == [1.5, 1.5]
    cfg = _cfg()
    plain = T.ResizeShortestEdge(128, 1000, "choice")
    mapper = MeasuredMapper(cfg, measures.augmentations(cfg, plain, None, ruler.counter))
    assert mapper(dict(copies[0]))["ruler"]["relative"] == 1.5


def test_reinhard_mapper_output_is_uint8_and_near_the_target(tmp_path, smears):
    records, _, profile = smears
    image = cv2.imread(records[0]["file_name"])
    shifted = stain_shift(image, 1.2, 0.15, 0.8, -0.1, channel_order="BGR")
    rec = _record(tmp_path / "shifted.png", shifted, 5)
    for auto in (False, True):
        measures = Measures(auto, "reinhard", profile, "p")
        out = _mapper(_cfg(256), measures)(rec)
        assert out["image"].dtype == torch.uint8 and out["image"].shape[0] == 3
        assert 0 <= int(out["image"].min()) and int(out["image"].max()) <= 255
        assert ("ruler" in out) == auto
    normalised = out["image"].permute(1, 2, 0).numpy()
    mean = lab_stats(normalised, "BGR")[0]
    before = lab_stats(shifted, "BGR")[0]
    target = np.asarray(profile.reinhard.mean)
    assert np.abs(mean - target).max() < 2.0 < np.abs(before - target).max()


def test_measures_names_and_checks(smears):
    profile = smears[2]
    assert Measures().variant("m") == "m"
    both = Measures(True, "reinhard", profile)
    assert both.variant("seed0") == "seed0 + auto-scale + Reinhard"
    assert split_variant(both.variant("seed0")) == ("seed0", "auto-scale + Reinhard")
    assert split_variant("seed0") == ("seed0", "plain")
    with pytest.raises(ValueError):
        Measures(stain="macenko", profile=profile)
    with pytest.raises(ValueError):
        Measures(auto_scale=True)


def _rows(aps, ruler=False):
    rows = []
    for s, ap in zip((0.5, 1.0, 2.0, 3.0), aps):
        row = {"kind": "scale", "value": s, "AP": ap, "AP50": ap + 20, "seconds": 1.0}
        if ruler:
            row["ruler"] = {"true_factor": s, "mean_estimate": s * 1.02, "sd_estimate": 0.05}
            row["ruler"].update(images=4, unmeasured=0)
        rows.append(row)
    rows.append({"kind": "hue", "value": 20.0, "AP": 30.0, "AP50": 50.0})
    return rows


def test_report_tables_verdicts_and_curves(tmp_path):
    results = {"ref": _rows([40, 50, 44, 20]), "ref + auto-scale": _rows([48, 50, 49, 47], True)}
    assert scale_deviation(results["ref"]) == (10.0, 0.5, 50)
    lines = verdicts(results, 3.0)
    assert len(lines) == 1 and "plain 10.0 (at 0.5; AP(1) 50.0; misses it)" in lines[0]
    assert "auto-scale 2.0 (at 0.5; AP(1) 50.0; meets it)" in lines[0]
    for rows in results.values():
        rows.append({"kind": "hue", "value": 0.0, "AP": 45.0, "AP50": 60.0})
    assert stain_drop(results["ref"]) == (15.0, "hue 20")
    assert "stain shift (below the unshifted copy): plain 15.0 (hue 20)" in verdicts(results)[1]
    table = pivot_table(results, ["scale"])
    assert "| scale | 2 | 44.0 / 64.0 | 49.0 / 69.0 |" in table and "hue" not in table
    assert "| scale 2 | 2 | 2.040 ± 0.050 |" in ruler_table(results)
    assert ruler_table({"ref": results["ref"]}) == ""
    scale_png, stain_png = plot_curves(results, tmp_path, "page")
    assert scale_png.name == "page_scale.png" and stain_png.stat().st_size > 0
    for i, name in enumerate(results):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps({"dataset": "d", "results": {name: results[name]}}))
    merged, variants = load_sweeps([tmp_path / "r0.json", tmp_path / "r1.json"])
    assert list(merged) == ["ref", "ref + auto-scale"]
    assert variants["ref + auto-scale"]["measures"] == "auto-scale"


def test_results_table_has_a_row_per_name_and_condition():
    results = {"ref": _rows([40, 50, 44, 20.25])[2:]}
    assert results_table(results) == (
        "| model | condition | value | AP | AP50 |\n"
        "|---|---|---|---|---|\n"
        "| ref | scale | 2 | 44.0 | 64.0 |\n"
        "| ref | scale | 3 | 20.2 | 40.2 |\n"
        "| ref | hue | 20 | 30.0 | 50.0 |\n"
    )


def test_robustness_command_with_the_measures_on_a_tiny_model(tmp_path):
    from detectron2.modeling import build_model

    from bmc_detectron.config import build_cfg
    from bmc_detectron.data.classes import marrow_metadata
    from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
    from bmc_detectron.data.synthetic import generate_dataset
    from bmc_detectron.smear.profile import profile_from_dataset
    from studies.robustness import robustness, robustness_report
    from tests.smear.test_robustness import ROBUST_CFG, ROBUST_TINY

    json_file = generate_dataset(tmp_path / "data", "test", 2, seed=0, height=128, width=160)
    register_coco_dataset("robust_m", json_file, tmp_path / "data" / "test", marrow_metadata())
    weights = tmp_path / "tiny.pth"
    torch.manual_seed(0)
    torch.save({"model": build_model(build_cfg(ROBUST_CFG, ROBUST_TINY)).state_dict()}, weights)
    argv = ["--config-file", ROBUST_CFG, "--weights", str(weights), "--dataset", "robust_m"]
    argv += ["--scales", "1", "2", "--label", "m"]
    try:
        profile_from_dataset(["robust_m"]).save(tmp_path / "training_profile.json")
        assert robustness.main([*argv, "--output", str(tmp_path / "plain"), *ROBUST_TINY]) == 0
        measured = [*argv, "--output", str(tmp_path / "auto"), "--auto-scale"]
        measured += ["--stain-normalize", "reinhard", "--report", "md"]
        assert robustness.main([*measured, *ROBUST_TINY]) == 0
        case = [*argv, "--output", str(tmp_path / "case"), "--auto-scale", "case"]
        assert robustness.main([*case, *ROBUST_TINY]) == 0
    finally:
        unregister_dataset("robust_m")
    case_rows = json.loads((tmp_path / "case" / "robustness.json").read_text())["results"]
    assert "case_estimate" in case_rows["m + auto-scale per case"][1]["ruler"]
    data = json.loads((tmp_path / "auto" / "robustness.json").read_text())
    rows = data["results"]["m + auto-scale + Reinhard"]
    assert [r["value"] for r in rows] == [1.0, 2.0]
    assert all(0 <= r["AP"] <= 100 and r["ruler"]["images"] == 2 for r in rows)
    assert abs(rows[1]["ruler"]["mean_estimate"] / rows[0]["ruler"]["mean_estimate"] / 2 - 1) < 0.15
    assert data["variants"]["m + auto-scale + Reinhard"]["profile"].endswith("profile.json")
    page = tmp_path / "docs" / "PAGE.md"
    inputs = [str(tmp_path / v / "robustness.json") for v in ("plain", "auto", "case")]
    assert robustness_report.main(["--inputs", *inputs, "--output", str(page)]) == 0
    text = page.read_text()
    assert "**m**: largest |AP(s) - AP(1)|" in text and "auto-scale + Reinhard" in text
    assert "case median" in text
    assert "![AP vs scale](PAGE_scale.png)" in text and (page.parent / "PAGE_scale.png").is_file()
