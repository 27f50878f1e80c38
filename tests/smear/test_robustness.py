"""Stain space, Reinhard, red cells as a ruler, the OOD check and the robustness command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import transforms as T

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.data.augment import build_bmc_augmentations
from bmc_detectron.data.synthetic import RBC_DIAMETER, generate_image
from bmc_detectron.smear import (
    RandomStainJitter,
    ReinhardTarget,
    StainTransform,
    TrainingRanges,
    case_scale,
    estimate_rbc_diameter,
    hed2rgb,
    reinhard_normalize,
    rescale_factor,
    rgb2hed,
    stain_shift,
)
from bmc_detectron.smear.ranges import colour_reasons, scale_reason
from bmc_detectron.smear.ruler import rescaled
from bmc_detectron.smear.stain import lab_stats
from bmc_detectron.tools import estimate_scale
from studies.robustness.sweep import KeepScaleResize, rescale_boxes

SYNTH_RBC = float(np.mean(RBC_DIAMETER))


def _smear(seed: int = 0, size: int = 256) -> np.ndarray:
    return generate_image(np.random.default_rng(seed), size, size)[0]


def _bccd(shared_root: Path, n: int) -> list:
    names = (shared_root / "bccd" / "ImageSets" / "Main" / "test.txt").read_text().split()[:n]
    return [cv2.imread(str(shared_root / "bccd" / "JPEGImages" / f"{x}.jpg")) for x in names]


def test_hed_round_trip_and_identity_shift():
    image = _smear()
    assert np.abs(hed2rgb(rgb2hed(image)).astype(int) - image).max() <= 1
    same = stain_shift(image, 1.0, 0.0, 1.0, 0.0)
    assert np.abs(same.astype(int) - image).max() <= 1
    bgr = image[..., ::-1].copy()
    np.testing.assert_array_equal(stain_shift(bgr, channel_order="BGR")[..., ::-1], same)


def test_shift_then_opposite_shift_returns_the_image_and_stays_in_range():
    image = _smear(1)
    there = stain_shift(image, 1.0, 0.05, 1.0, -0.04)
    assert there.dtype == np.uint8 and np.abs(there.astype(int) - image).mean() > 1
    back = stain_shift(there, 1.0, -0.05, 1.0, 0.04)
    assert np.abs(back.astype(int) - image).max() <= 4
    extreme = stain_shift(image, 3.0, 2.0, 0.1, -2.0)
    assert extreme.dtype == np.uint8 and extreme.shape == image.shape


def test_stain_transform_inverse_and_jitter_augmentation():
    image = _smear(2)
    t = StainTransform(1.1, 0.03, 0.9, -0.02, "RGB")
    back = t.inverse().apply_image(t.apply_image(image))
    assert np.abs(back.astype(int) - image).max() <= 4
    boxes = np.array([[1.0, 2.0, 30.0, 40.0]])
    np.testing.assert_array_equal(t.apply_box(boxes), boxes)
    np.random.seed(0)
    aug = T.AugInput(image.copy())
    RandomStainJitter(0.1, 0.05, "RGB")(aug)
    assert aug.image.dtype == np.uint8 and not np.array_equal(aug.image, image)
    with pytest.raises(ValueError):
        RandomStainJitter(1.5, 0.0)


def test_stain_jitter_is_switched_by_the_config():
    cfg = get_bmc_cfg()
    assert not any(isinstance(a, RandomStainJitter) for a in build_bmc_augmentations(cfg, True))
    cfg.BMC.AUG.STAIN_HED = [0.1, 0.05]
    augs = build_bmc_augmentations(cfg, True)
    assert isinstance(augs[-1], RandomStainJitter) and augs[-1].image_format == cfg.INPUT.FORMAT
    assert not any(isinstance(a, RandomStainJitter) for a in build_bmc_augmentations(cfg, False))


def test_reinhard_moves_statistics_to_the_target():
    target = ReinhardTarget.from_images([_smear(3), _smear(4)])
    source = stain_shift(_smear(5), 1.3, 0.1, 0.7, 0.0)
    before = np.abs(lab_stats(source)[0] - target.mean).max()
    mean, std = lab_stats(reinhard_normalize(source, target))
    assert np.abs(mean - target.mean).max() < 1.5 < before
    np.testing.assert_allclose(std, target.std, rtol=0.15, atol=0.5)


def test_rbc_diameter_of_synthetic_smears_at_known_scales():
    for seed in (0, 1):
        image = _smear(seed)
        base = estimate_rbc_diameter(image).median_px
        assert abs(base / SYNTH_RBC - 1) < 0.2  # the generator also zooms by 0.93..1.07
        for factor in (1.5, 2.0):
            est = estimate_rbc_diameter(rescaled(image, factor)[0])
            assert abs(est.median_px / (SYNTH_RBC * factor) - 1) < 0.2
            assert abs(est.median_px / base / factor - 1) < 0.1
            assert est.n > 20
    blank = np.full((64, 64, 3), 240, np.uint8)
    assert estimate_rbc_diameter(blank).n == 0


def test_rbc_scale_factor_on_rescaled_bccd(shared_root):
    for image in _bccd(shared_root, 3):
        base = estimate_rbc_diameter(image, "BGR").median_px
        assert 60 < base < 130  # BCCD's annotated red cells are about 100 px wide
        for factor in (0.5, 0.75, 1.5, 2.0):
            est = estimate_rbc_diameter(rescaled(image, factor)[0], "BGR").median_px
            assert abs(rescale_factor(base, est) / factor - 1) < 0.1


HUE_20_MISREAD = pytest.mark.xfail(
    strict=True,
    reason="known: under a +20 deg hue rotation the a* mask reads BCCD's red cells at about half "
    "their size (docs/results/robustness/RESULTS_robustness.md); a colour-direction-free mask "
    "tried instead failed "
    "on marrow fields, where the large dark nucleated cells took Otsu's split",
)


@pytest.mark.parametrize(
    "shift",
    [
        "hue:-20",
        pytest.param("hue:20", marks=HUE_20_MISREAD),
        "sat:1.4",
        "h:0.15",
        "e:0.15",
        "e:-0.15",
    ],
)
def test_rbc_diameter_survives_stain_shifts(shared_root, shift):
    """The ruler reads the same red cells after a stain shift: the case's median ratio within
    10 % on BCCD, and each synthetic smear's."""
    from studies.robustness.sweep import parse_stain_shift, stain_op

    op = stain_op(parse_stain_shift(shift))

    def ratio(image: np.ndarray) -> float:
        return estimate_rbc_diameter(op(image)).median_px / estimate_rbc_diameter(image).median_px

    assert all(abs(ratio(_smear(seed)) - 1) < 0.1 for seed in (0, 1))
    bccd = [im[..., ::-1].copy() for im in _bccd(shared_root, 6)]
    assert abs(np.median([ratio(im) for im in bccd]) - 1) < 0.1


def test_case_scale_flags_the_field_that_disagrees():
    case = case_scale([16.0, 16.5, 15.8, 31.0, float("nan")])
    assert case.outliers == [3] and case.disagree and abs(case.median_px - 16.25) < 1e-6


def test_boxes_rescaled_and_mapped_back_within_a_pixel():
    image = np.zeros((97, 131, 3), np.uint8)
    boxes = np.array([[3.0, 5.0, 60.5, 90.0], [100.0, 0.0, 131.0, 97.0]])
    for factor in (0.5, 0.75, 1.5, 3.0):
        small, (fx, fy) = rescaled(image, factor)
        assert small.shape[:2] == (round(97 * factor), round(131 * factor))
        back = rescale_boxes(rescale_boxes(boxes, fx, fy), 1 / fx, 1 / fy)
        assert np.abs(back - boxes).max() < 1.0
        # the test resize keeps the rescale: the model sees it factor x the usual size
        t = KeepScaleResize(64, 1000, factor).get_transform(small)
        assert abs(t.new_h / 64 / factor - 1) < 0.05


def test_training_ranges_flag_off_scale_and_stain_shifted_fields():
    train = [_smear(s) for s in range(8)]
    stats = [lab_stats(im) for im in train]
    diameters = [estimate_rbc_diameter(im).median_px for im in train]
    ranges = TrainingRanges.from_stats([m for m, _ in stats], [s for _, s in stats], diameters)
    field = _smear(9)
    assert colour_reasons(*lab_stats(field), ranges) == []
    assert scale_reason(estimate_rbc_diameter(field).median_px, ranges) is None
    big = rescaled(field, 2.0)[0]
    assert "red-cell diameter" in scale_reason(estimate_rbc_diameter(big).median_px, ranges)
    shifted = stain_shift(field, 1.0, 0.35, 1.0, -0.1)
    assert any(
        "outside the training range" in r for r in colour_reasons(*lab_stats(shifted), ranges)
    )
    assert "no red cells" in scale_reason(float("nan"), ranges)
    assert TrainingRanges.from_dict(json.loads(json.dumps(ranges.to_dict()))) == ranges


def test_estimate_scale_command(tmp_path, capsys):
    for i, factor in enumerate((1.0, 1.0, 2.0)):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), rescaled(_smear(i)[..., ::-1], factor)[0])
    out = tmp_path / "scale.json"
    rc = estimate_scale.main(
        ["--images", str(tmp_path / "*.png"), "--reference-diameter", "32", "--json", str(out)]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "case: median" in captured.out and "rescale factor" in captured.out
    assert "f2.png" in captured.err and "warning" in captured.err
    assert json.loads(out.read_text())["outliers"][0].endswith("f2.png")
    assert estimate_scale.main(["--images", str(tmp_path / "none*.png")]) == 2


ROBUST_CFG = str(
    Path(__file__).resolve().parents[2] / "configs" / "cpu" / "retinanet_R_18_FPN_cpu.yaml"
)
ROBUST_TINY = [
    *("MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1", "MODEL.DEVICE", "cpu"),
    *("INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "200", "DATALOADER.NUM_WORKERS", "0"),
    *("MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"),
]


def test_robustness_command_on_a_tiny_model(tmp_path, capsys):
    import torch
    from detectron2.modeling import build_model

    from bmc_detectron.config import build_cfg
    from bmc_detectron.data.classes import marrow_metadata
    from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
    from bmc_detectron.data.synthetic import generate_dataset
    from studies.robustness import robustness

    json_file = generate_dataset(tmp_path / "data", "test", 2, seed=0, height=80, width=96)
    register_coco_dataset("robust_tiny", json_file, tmp_path / "data" / "test", marrow_metadata())
    weights = tmp_path / "tiny.pth"
    torch.manual_seed(0)
    torch.save({"model": build_model(build_cfg(ROBUST_CFG, ROBUST_TINY)).state_dict()}, weights)
    out = tmp_path / "out"
    argv = ["--config-file", ROBUST_CFG, "--weights", str(weights), "--dataset", "robust_tiny"]
    argv += ["--scales", "1", "2", "--stain-shifts", "h:0.1", "--output", str(out)]
    try:
        assert robustness.main(argv + ["--report", "md", *ROBUST_TINY]) == 0
    finally:
        unregister_dataset("robust_tiny")
    rows = json.loads((out / "robustness.json").read_text())["results"]["tiny"]
    assert [(r["kind"], r["value"]) for r in rows] == [
        ("scale", 1.0),
        ("scale", 2.0),
        ("h", 0.1),
        ("h", 0.0),
    ]
    assert all(0 <= r["AP"] <= 100 and 0 <= r["AP50"] <= 100 for r in rows)
    copy = json.loads((out / "copies" / "tiny" / "scale_2" / "annotations.json").read_text())
    assert copy["images"][0]["width"] == 192 and copy["images"][0]["height"] == 160
    assert (out / "ap_vs_scale.png").is_file() and (out / "ap_vs_stain.png").is_file()
    assert "| scale | 2 |" in (out / "robustness.md").read_text()  # a column per model
    assert "| tiny | h | 0.1 |" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["d2_retinanet_R_18_FPN", "retinanet_R_18_full"])
def test_robust_training_configs(model):
    """The multi-scale and H&E training configs switch on exactly their augmentation."""
    from detectron2.data import transforms as T_

    configs = Path(__file__).resolve().parents[2] / "configs/cpu"
    ms, hed = get_bmc_cfg(), get_bmc_cfg()
    ms.merge_from_file(str(configs / f"{model}_MS_cpu.yaml"))
    hed.merge_from_file(str(configs / f"{model}_HED_cpu.yaml"))
    resize = build_bmc_augmentations(ms, True)[0]
    assert isinstance(resize, T_.ResizeShortestEdge) and resize.is_range
    assert tuple(resize.short_edge_length) == (192, 544) and resize.max_size == 726
    assert not any(isinstance(a, RandomStainJitter) for a in build_bmc_augmentations(ms, True))
    test_resize = build_bmc_augmentations(ms, False)[0]
    assert tuple(test_resize.short_edge_length) == (320, 320)
    augs = build_bmc_augmentations(hed, True)
    assert isinstance(augs[-1], RandomStainJitter)
    assert (augs[-1].scale_range, augs[-1].shift_range) == (0.2, 0.15)
    assert tuple(augs[0].short_edge_length) == (320,)


def test_robust_training_configs_at_r50():
    """The R-50 full model's multi-scale (0.6x-1.7x the test size 800) and H&E configs."""
    from detectron2.data import transforms as T_

    configs = Path(__file__).resolve().parents[2] / "configs"
    ms, hed = get_bmc_cfg(), get_bmc_cfg()
    ms.merge_from_file(str(configs / "retinanet_R_50_full_MS_1x.yaml"))
    hed.merge_from_file(str(configs / "retinanet_R_50_full_HED_1x.yaml"))
    resize = build_bmc_augmentations(ms, True)[0]
    assert isinstance(resize, T_.ResizeShortestEdge) and resize.is_range
    assert tuple(resize.short_edge_length) == (480, 1360) and resize.max_size == 2267
    assert ms.MODEL.BMC.ASSIGNER.NAME == hed.MODEL.BMC.ASSIGNER.NAME == "PAA"
    augs = build_bmc_augmentations(hed, True)
    assert isinstance(augs[-1], RandomStainJitter) and augs[-1].shift_range == 0.15
    assert tuple(augs[0].short_edge_length) == (640, 672, 704, 736, 768, 800)


def test_one_large_blob_is_no_red_cell_reading():
    # a grey field with a pure-green corner or half: the mask is one large blob, not red cells
    # (it read a 'diameter' of hundreds of px from zero cells, and the count resized by it)
    for patch in ((slice(0, 60), slice(0, 60)), (slice(0, 256), slice(0, 128))):
        field = np.full((256, 256, 3), 200, np.uint8)
        field[patch] = (0, 255, 0)
        est = estimate_rbc_diameter(field, "RGB")
        assert math.isnan(est.median_px) and est.n < 3
    # the same field with a few discs is measured as before
    smear = _smear(seed=0)
    assert np.isfinite(estimate_rbc_diameter(smear, "RGB").median_px)
