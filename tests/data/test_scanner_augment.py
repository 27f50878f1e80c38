"""Augmentation for any microscope: scale jitter with exact boxes, blur, resolution loss, JPEG,
and the scanner config building a working mapper."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from bmc_detectron.config import build_cfg
from bmc_detectron.data.augment import (
    GaussianBlurTransform,
    JpegTransform,
    RandomDegradation,
    RandomScale,
    ResolutionLossTransform,
    build_bmc_augmentations,
)
from tests.helpers import CONFIGS, tiny_cfg

SCANNER = CONFIGS / "cpu" / "agnostic" / "retinanet_R_18_full_agnostic_marrow_real_SCANNER_cpu.yaml"


def marked(h: int, w: int, box) -> np.ndarray:
    """A black image with a white rectangle over the pixel-edge box (x0, y0, x1, y1)."""
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 255
    return img


def pixel_box(img: np.ndarray) -> list:
    ys, xs = np.nonzero(img[:, :, 0] > 127)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def texture(seed: int = 0, size: int = 64) -> np.ndarray:
    """Fine random texture (lots of high-frequency energy)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def high_frequency_energy(img: np.ndarray) -> float:
    return float(np.mean(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F) ** 2))


@pytest.mark.parametrize("factor", [0.5, 2.0, 2.5])
def test_scale_moves_boxes_exactly_with_the_image(factor):
    box = [4, 6, 12, 10]  # x0, y0, x1, y1 on a 20 x 16 image (even sides: exact halves)
    img = marked(16, 20, box)
    aug_input = T.AugInput(img, boxes=np.array([box], np.float64))
    tfm = T.AugmentationList([RandomScale(factor, factor)])(aug_input)
    assert aug_input.image.shape == (round(16 * factor), round(20 * factor), 3)
    expected = [v * factor for v in box]
    assert aug_input.boxes.tolist() == [expected]
    assert tfm.apply_box(np.array([box], np.float64)).tolist() == [expected]
    if factor == 2.0:  # the white block itself lands on the scaled box
        assert pixel_box(aug_input.image) == expected


def test_scale_draws_log_uniformly_within_the_range():
    np.random.seed(0)
    img = np.zeros((100, 100, 3), np.uint8)
    sides = [RandomScale(0.4, 2.5).get_transform(img).apply_image(img).shape[0] for _ in range(400)]
    assert 40 <= min(sides) < 50 and 230 < max(sides) <= 250
    # log-uniform: half the draws below the geometric mean (1.0), not the arithmetic one (1.45)
    assert 0.4 < np.mean(np.array(sides) < 100) < 0.6


def test_resolution_loss_keeps_size_and_removes_detail():
    img = texture()
    out = ResolutionLossTransform(4.0).apply_image(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert high_frequency_energy(out) < 0.2 * high_frequency_energy(img)
    # a flat image has no detail to lose
    flat = np.full((30, 40, 3), 77, np.uint8)
    assert np.array_equal(ResolutionLossTransform(3.0).apply_image(flat), flat)


def test_blur_lowers_high_frequency_energy_more_with_larger_sigma():
    img = texture(1)
    energies = [high_frequency_energy(GaussianBlurTransform(s).apply_image(img)) for s in (0, 1, 2)]
    assert energies[0] == high_frequency_energy(img)
    assert energies[0] > 4 * energies[1] > 4 * energies[2]
    assert GaussianBlurTransform(1.0).apply_image(img).shape == img.shape


def test_jpeg_changes_pixels_not_shape_and_respects_channel_order():
    img = texture(2, 48)
    out = JpegTransform(30).apply_image(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).mean() > 5
    rgb = JpegTransform(30, "RGB").apply_image(np.ascontiguousarray(img[:, :, ::-1]))
    assert np.array_equal(rgb[:, :, ::-1], out)  # the same colours compressed either way
    gray = np.ascontiguousarray(img[:, :, 0])
    assert JpegTransform(50).apply_image(gray).shape == gray.shape


@pytest.mark.parametrize(
    "kind,cls", [("blur", GaussianBlurTransform), ("resolution", ResolutionLossTransform)]
)
def test_degradation_leaves_boxes_and_follows_its_probability(kind, cls):
    np.random.seed(0)
    img = texture(3, 32)
    box = np.array([[3.0, 4.0, 20.0, 25.0]])
    assert isinstance(RandomDegradation(kind, 2, 2, prob=0.0).get_transform(img), T.NoOpTransform)
    tfm = RandomDegradation(kind, 2, 2, prob=1.0).get_transform(img)
    assert isinstance(tfm, cls) and tfm.apply_box(box).tolist() == box.tolist()
    jpeg = RandomDegradation("jpeg", 40, 40, prob=1.0).get_transform(img)
    assert isinstance(jpeg, JpegTransform) and jpeg.quality == 40
    with pytest.raises(ValueError, match="kind"):
        RandomDegradation("noise", 1, 2)


def test_defaults_leave_training_as_before_and_bad_ranges_are_named():
    cfg = tiny_cfg()
    names = [type(a).__name__ for a in build_bmc_augmentations(cfg, True)]
    assert not {"RandomScale", "RandomCrop", "RandomDegradation"} & set(names)
    cfg.merge_from_list(["BMC.AUG.RESOLUTION_LOSS", [0.5, 2.0]])
    with pytest.raises(ValueError, match="BMC.AUG.RESOLUTION_LOSS"):
        build_bmc_augmentations(cfg, True)
    cfg.merge_from_list(["BMC.AUG.RESOLUTION_LOSS", [], "BMC.AUG.SCALE_RANGE", [2.0, 1.0]])
    with pytest.raises(ValueError, match="BMC.AUG.SCALE_RANGE"):
        build_bmc_augmentations(cfg, True)


def test_scanner_config_builds_a_mapper_with_exact_boxes(tmp_path):
    cfg = build_cfg(str(SCANNER), ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64"])
    cfg.defrost()
    cfg.BMC.AUG.SCALE_CROP = 96
    augs = build_bmc_augmentations(cfg, True)
    names = [type(a).__name__ for a in augs]
    assert names[:3] == ["ResizeShortestEdge", "RandomScale", "RandomCrop"]
    assert names.count("RandomDegradation") == 3
    assert [type(a).__name__ for a in build_bmc_augmentations(cfg, False)] == names[:1]
    path = tmp_path / "field.png"
    cv2.imwrite(str(path), marked(64, 64, [16, 16, 32, 40]))
    record = {
        "file_name": str(path),
        "height": 64,
        "width": 64,
        "image_id": 0,
        "annotations": [{"bbox": [16, 16, 16, 24], "bbox_mode": 1, "category_id": 0}],
    }
    cfg.BMC.AUG.DEGRADE_PROB = 0.0  # the box must then sit exactly on the white block
    mapper = DatasetMapper(cfg, True, augmentations=build_bmc_augmentations(cfg, True))
    np.random.seed(0)
    seen = 0
    for _ in range(8):
        out = mapper(dict(record))
        image = out["image"].permute(1, 2, 0).numpy()
        assert max(image.shape[:2]) <= 96 and image.shape[0] >= round(64 * 0.4)
        boxes = out["instances"].gt_boxes.tensor.numpy()
        seen += len(boxes)
        if len(boxes):  # the crop may leave the cell out
            assert np.allclose(boxes[0], pixel_box(image), atol=1.0)
    assert seen >= 4
