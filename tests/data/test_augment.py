"""Smear augmentation: exact quarter turns and the configured pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from detectron2.data import transforms as T

from bmc_detectron.data.augment import RandomRot90, Rot90Transform, build_bmc_augmentations
from tests.helpers import tiny_cfg


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_moves_a_marked_box_exactly(k):
    h, w = 6, 10
    img = np.zeros((h, w, 3), np.uint8)
    img[1:3, 2:5] = 255  # box x0=2, y0=1, x1=5, y1=3 (pixel-edge coordinates)
    t = Rot90Transform(h, w, k)
    out = t.apply_image(img)
    ys, xs = np.nonzero(out[:, :, 0])
    box = t.apply_box(np.array([[2.0, 1.0, 5.0, 3.0]]))[0]
    assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    back = t.inverse().apply_image(out)
    assert np.array_equal(back, img)


def test_random_rot90_covers_all_turns():
    np.random.seed(0)
    img = np.zeros((4, 6, 3), np.uint8)
    seen = {getattr(RandomRot90().get_transform(img), "k", 0) for _ in range(50)}
    assert seen == {0, 1, 2, 3}


def test_pipeline_follows_config():
    cfg = tiny_cfg()
    train = build_bmc_augmentations(cfg, True)
    names = [type(a).__name__ for a in train]
    assert names == [
        "ResizeShortestEdge",
        "RandomFlip",
        "RandomFlip",
        "RandomRot90",
        "RandomBrightness",
        "RandomContrast",
        "RandomSaturation",
    ]
    assert [type(a).__name__ for a in build_bmc_augmentations(cfg, False)] == ["ResizeShortestEdge"]
    cfg.merge_from_list(["BMC.AUG.ROT90", False, "BMC.AUG.BRIGHTNESS", [], "BMC.AUG.VFLIP", False])
    names = [type(a).__name__ for a in build_bmc_augmentations(cfg, True)]
    assert names == ["ResizeShortestEdge", "RandomFlip", "RandomContrast", "RandomSaturation"]
    cfg.merge_from_list(["BMC.AUG.CONTRAST", [1.2, 0.8]])
    with pytest.raises(ValueError, match="BMC.AUG.CONTRAST"):
        build_bmc_augmentations(cfg, True)


def test_color_jitter_keeps_boxes_and_dtype():
    np.random.seed(1)
    img = np.full((8, 8, 3), 120, np.uint8)
    aug = T.AugmentationList([T.RandomBrightness(0.5, 0.6)])
    inp = T.AugInput(img, boxes=np.array([[1.0, 1.0, 4.0, 4.0]]))
    tfm = aug(inp)
    assert inp.image.dtype == np.uint8 and inp.image.max() < 120
    assert tfm.apply_box(np.array([[1.0, 1.0, 4.0, 4.0]])).tolist() == [[1.0, 1.0, 4.0, 4.0]]
