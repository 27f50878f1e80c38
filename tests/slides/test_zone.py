"""The counting zone on a hand-built picture read from memory (no file): thick, monolayer, a
blurred monolayer, the empty tail and glass; and the tissue mask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("tifffile", reason="the [wsi] extra is not installed")

from bmc_detectron.pipeline.tiling import Tile
from bmc_detectron.slides.zone import ZoneSettings, glass_mask, score_fields, survey, tissue_mask
from tests.slides.helpers import GLASS, PURPLE, RED

SIDE = 256  # one zone per 256 px column


def _picture() -> np.ndarray:
    rng = np.random.default_rng(1)
    image = np.full((SIDE, 5 * SIDE, 3), GLASS, np.uint8)
    image[:, :SIDE] = RED  # thick: no glass
    for x0 in (SIDE, 2 * SIDE):  # monolayer, twice
        for cy in range(16, SIDE, 32):
            for cx in range(x0 + 16, x0 + SIDE, 32):
                cv2.circle(image, (cx, cy), 11, RED if (cx + cy) % 64 else PURPLE, -1)
    band = image[:, 2 * SIDE : 3 * SIDE]
    image[:, 2 * SIDE : 3 * SIDE] = cv2.GaussianBlur(band, (0, 0), 4)  # out of focus
    for _ in range(3):  # the tail: a few cells
        cx, cy = rng.integers(3 * SIDE + 20, 4 * SIDE - 20), rng.integers(20, SIDE - 20)
        cv2.circle(image, (int(cx), int(cy)), 9, RED, -1)
    return image  # 4 * SIDE ... 5 * SIDE: bare glass


def test_fields_are_sorted_into_zones():
    image = _picture()
    tissue = np.ones(image.shape[:2], bool)
    tissue[:, 4 * SIDE :] = False

    def read(x, y, w, h):
        out = np.full((h, w, 3), 255, np.uint8)
        part = image[y : y + h, x : x + w]
        out[: part.shape[0], : part.shape[1]] = part
        return out

    settings = ZoneSettings(block=64, survey_ratio=1.0)
    blocks = survey(read, image.shape[0], image.shape[1], 1.0, tissue, settings)
    assert blocks.size == 64 and blocks.zone.shape == (4, 20)
    fields = [Tile(x, 0, x + SIDE, SIDE) for x in range(0, 5 * SIDE, SIDE)]
    scores = score_fields(blocks, fields, settings)
    assert [s.zone for s in scores] == ["thick", "count", "blurred", "empty", "no tissue"]
    assert [s.score is not None for s in scores] == [False, True, False, False, False]
    assert scores[1].score > 0.02 and scores[1].glass > 0.3 and scores[0].glass == 0
    assert scores[2].focus < 0.3 * scores[1].focus
    # a field half in the zone is on its edge, never counted
    half = score_fields(blocks, [Tile(SIDE // 2, 0, SIDE // 2 + SIDE, SIDE)], settings)[0]
    assert half.zone in ("edge", "thick") and half.score is None


def test_tissue_mask_and_glass():
    image = _picture()
    assert glass_mask(image[:, 4 * SIDE :]).all() and not glass_mask(image[:, :SIDE]).any()
    thumb = cv2.resize(image, (5 * SIDE // 8, SIDE // 8), interpolation=cv2.INTER_AREA)
    mask = tissue_mask(thumb)  # on a thumbnail: 1/8 here
    side = SIDE // 8
    assert mask[:, :side].all() and mask[:, side : 3 * side].all()  # thick, monolayers
    assert not mask[:, 4 * side + 3 :].any()  # glass
