"""A synthetic smear slide: a pyramidal TIFF (written with tifffile) with a thick zone, a
monolayer zone of known nucleated cells and an empty tail, and a stand-in nucleus detector.

Level 0 is 2304 x 768 px at :data:`MPP` um/px, three zones of 768 px side by side:

- thick (x < 768): red discs piled over every pixel (no glass), some nucleated discs;
- monolayer (768 <= x < 1536): glass with red discs apart and nucleated (purple) discs on a
  jittered grid, never touching each other: the known cells;
- tail (x >= 1536): glass with a few red discs.

Levels downsample 1, 8 and 32 (area-averaged), tiles of 64 px, lossless.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import tifffile

from bmc_detectron.pipeline import Detections

MPP = 0.25
HEIGHT, ZONE = 768, 768
GLASS = (235, 235, 235)
RED = (215, 140, 150)  # RGB
PURPLE = (100, 50, 150)  # RGB
LEVELS = (1, 8, 32)


def _disc(image: np.ndarray, cx: int, cy: int, r: int, rgb: Tuple[int, int, int]) -> List[int]:
    """Draw a filled disc; its pixel extent in XYXY with exclusive ends."""
    cv2.circle(image, (cx, cy), r, rgb, thickness=-1)
    patch = np.zeros((2 * r + 5, 2 * r + 5), np.uint8)
    cv2.circle(patch, (r + 2, r + 2), r, 1, thickness=-1)
    ys, xs = np.nonzero(patch)
    ox, oy = cx - r - 2, cy - r - 2
    return [int(xs.min()) + ox, int(ys.min()) + oy, int(xs.max()) + 1 + ox, int(ys.max()) + 1 + oy]


def smear_slide(seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """The level-0 RGB image and the (N, 4) boxes of the monolayer's nucleated cells."""
    rng = np.random.default_rng(seed)
    image = np.full((HEIGHT, 3 * ZONE, 3), GLASS, np.uint8)
    image[:, :ZONE] = RED
    for _ in range(2500):  # piled red cells, darker where they overlap
        cx, cy = rng.integers(0, ZONE, 2)
        cv2.circle(image, (int(cx), int(cy)), 9, (185, 105, 120), 1)
    for cy in range(40, HEIGHT - 20, 64):
        for cx in range(40, ZONE - 30, 64):
            _disc(image, int(cx), int(cy), 10, PURPLE)
    for _ in range(700):  # red cells of the monolayer, apart
        cx, cy = rng.integers(ZONE + 10, 2 * ZONE - 10), rng.integers(10, HEIGHT - 10)
        _disc(image, int(cx), int(cy), 9, RED)
    boxes = []
    for cy in range(24, HEIGHT - 12, 48):
        for cx in range(ZONE + 24, 2 * ZONE - 12, 48):
            jx, jy = rng.integers(-6, 7, 2)
            boxes.append(_disc(image, int(cx + jx), int(cy + jy), 10, PURPLE))
    for _ in range(8):
        cx, cy = rng.integers(2 * ZONE + 20, 3 * ZONE - 20), rng.integers(20, HEIGHT - 20)
        _disc(image, int(cx), int(cy), 9, RED)
    return image, np.array(boxes, np.float32)


def write_slide(path: Path, image: np.ndarray, mpp: float | None = MPP) -> Path:
    """``image`` as a pyramidal TIFF (SubIFDs) at :data:`LEVELS`, resolution in px per cm."""
    extra = {}
    if mpp is not None:
        extra = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(64, 64), photometric="rgb", subifds=len(LEVELS) - 1, **extra)
        for k in LEVELS[1:]:
            h, w = image.shape[0] // k, image.shape[1] // k
            small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            tif.write(small, tile=(64, 64), photometric="rgb", subfiletype=1)
    return path


class NucleusDetector:
    """Stand-in detector: the boxes of the purple blobs it sees (the nucleated cells)."""

    class_names = ["cell"]

    def __init__(self) -> None:
        self.calls: List[Tuple[int, int]] = []

    def __call__(self, image: np.ndarray) -> Detections:
        self.calls.append(image.shape[:2])
        bgr = np.array(PURPLE[::-1], np.int16)
        mask = (np.abs(image.astype(np.int16) - bgr).max(axis=2) < 30).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:]]
        return Detections(boxes, [0.9] * (n - 1), [0] * (n - 1))
