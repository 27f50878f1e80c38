"""Real red-cell backgrounds for the marrow composites, from the PBC and BCCD photographs.

* :func:`remove_cells`: the white cells (and platelets) of a photo removed: their masks grown a
  little and filled with the photo's plasma colour, the rim inpainted (``cv2.inpaint``) so that
  the red cells they touched fade into plasma instead of being cut by a hard line;
* :func:`pbc_backgrounds` / :func:`bccd_backgrounds` list the sources (a PBC image loses its
  segmented white cell; a BCCD image its WBC and platelet boxes, as ellipses) and
  :func:`make_background` makes one, resized to the field's pixel size;
* :func:`quilt` fills a field of any size from such tiles: square patches of random tiles (turned
  and flipped at random, plasma colour matched to the first patch) overlap and are joined along
  the seam of least colour difference (image quilting, Efros & Freeman 2001), which runs through
  plasma or along red-cell edges rather than across red cells. A PBC image is only ~41 um wide
  (164 px at 0.25 um/px) and a BCCD one 58 x 43 um, so a 512 px field needs many of them.

BCCD's ``test`` split is never used (it is the real check of the detectors): the train fields
take BCCD ``train``, the val fields BCCD ``val``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import cv2
import numpy as np

from bmc_detectron.data.convert import read_image_list, voc_to_coco
from bmc_detectron.data.datasets import BCCD_CLASSES
from bmc_detectron.data.synthetic.cutouts import (
    PBC_MICRONS_PER_PIXEL,
    CellSource,
    CutOutError,
    min_path,
    plasma_rgb,
    read_rgb,
    segment_cell,
)

#: um per pixel of the BCCD images: the red-cell ruler reads 83 px (19 images) for 7.5 um
BCCD_MICRONS_PER_PIXEL = 0.090
#: BCCD cells are removed by the ellipse of their box with axes this much longer
HOLE_GROW = 1.2
#: holes are grown by this many pixels (after resizing); the rim inpainted is this wide
HOLE_MARGIN_PX, RIM_PX = 3, 2
#: side of the quilted patches and their overlap, pixels
PATCH, OVERLAP = 128, 24
#: random patches tried for each place of the quilt
CANDIDATES = 6


@dataclass(frozen=True)
class BackgroundSource:
    """A photo to make a red-cell background from, with the boxes of what is to be removed."""

    image: Path
    holes: Tuple[Tuple[float, float, float, float], ...]  # XYXY boxes, source pixels
    microns_per_pixel: float
    segment: bool = False  # True: ``holes[0]`` is a PBC white cell, removed by its mask


def pbc_backgrounds(cells: Sequence[CellSource]) -> List[BackgroundSource]:
    """One background per PBC image: its white cell removed."""
    return [BackgroundSource(c.image, (c.box,), PBC_MICRONS_PER_PIXEL, True) for c in cells]


def bccd_backgrounds(root: Union[str, Path], split: str) -> List[BackgroundSource]:
    """One background per BCCD image of ``split`` (``ImageSets/Main/<split>.txt``), its WBC and
    platelet boxes removed. ``test`` is refused: it is kept for evaluation."""
    root = Path(root)
    if split not in ("train", "val"):
        raise ValueError(f"BCCD backgrounds come from 'train' or 'val', not {split!r}")
    ids = read_image_list(root / "ImageSets" / "Main" / f"{split}.txt")
    coco = voc_to_coco(root / "Annotations", root / "JPEGImages", BCCD_CLASSES, ids)
    remove = {c["id"] for c in coco["categories"] if c["name"] in ("WBC", "Platelets")}
    holes: dict = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        if ann["category_id"] in remove:
            x, y, w, h = ann["bbox"]
            holes[ann["image_id"]].append((x, y, x + w, y + h))
    return [
        BackgroundSource(
            root / "JPEGImages" / im["file_name"], tuple(holes[im["id"]]), BCCD_MICRONS_PER_PIXEL
        )
        for im in coco["images"]
    ]


def remove_cells(image: np.ndarray, holes: np.ndarray, grow: int = HOLE_MARGIN_PX) -> np.ndarray:
    """``image`` (RGB uint8) with ``holes`` (bool mask) grown by ``grow`` px made plasma: filled
    with :func:`plasma_rgb`, their rim (``RIM_PX`` each side) inpainted."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    hole = cv2.dilate(holes.astype(np.uint8), disc) > 0
    if not hole.any():
        return image.copy()
    out = image.copy()
    out[hole] = np.clip(np.rint(plasma_rgb(image, ~hole)), 0, 255).astype(np.uint8)
    ring = np.ones((2 * RIM_PX + 1, 2 * RIM_PX + 1), np.uint8)
    hole8 = hole.astype(np.uint8)
    rim = cv2.dilate(hole8, ring) - cv2.erode(hole8, ring)
    return cv2.inpaint(out, rim, RIM_PX + 1, cv2.INPAINT_TELEA)


def _ellipses(shape: Tuple[int, int], boxes: Sequence[Sequence[float]], grow: float) -> np.ndarray:
    """Bool mask of the ellipses inscribed in ``boxes``, their axes ``grow`` times longer."""
    mask = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in boxes:
        centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
        axes = (int(np.ceil(grow * (x1 - x0) / 2)), int(np.ceil(grow * (y1 - y0) / 2)))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return mask > 0


@dataclass
class Tile:
    """A red-cell background ready for :func:`quilt`."""

    rgb: np.ndarray  # (h, w, 3) float32
    hole: np.ndarray  # (h, w) bool: where cells were removed (quilt avoids it)
    plasma: np.ndarray  # (3,) float32: :func:`plasma_rgb`


def make_background(source: BackgroundSource, microns_per_pixel: float) -> Tile:
    """The red-cell background of ``source`` at ``microns_per_pixel``.

    A PBC white cell is removed by its segmented mask (by its box's ellipse, enlarged, if the
    mask fails its check), BCCD boxes by their ellipses enlarged by :data:`HOLE_GROW`. The
    photo is resized first, then its cells removed (:func:`remove_cells`).
    """
    image = read_rgb(source.image)
    holes = _ellipses(image.shape[:2], source.holes, HOLE_GROW)
    if source.segment:
        try:
            mask, (ox, oy) = segment_cell(image, source.holes[0], str(source.image))
            holes[:] = False
            holes[oy : oy + mask.shape[0], ox : ox + mask.shape[1]] = mask
        except CutOutError:
            pass
    f = source.microns_per_pixel / microns_per_pixel
    size = (max(1, int(round(image.shape[1] * f))), max(1, int(round(image.shape[0] * f))))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small_holes = cv2.resize(holes.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    rgb = remove_cells(small, small_holes)
    return Tile(rgb.astype(np.float32), small_holes, plasma_rgb(rgb, ~small_holes))


def _random_patch(rng: np.random.Generator, tile: Tile, side: int) -> Tuple[np.ndarray, float]:
    """A random ``side`` px square of a tile, turned and flipped; its share of removed cells."""
    turns, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
    rgb, hole = np.rot90(tile.rgb, turns), np.rot90(tile.hole, turns)
    if flip:
        rgb, hole = rgb[:, ::-1], hole[:, ::-1]
    y = int(rng.integers(0, rgb.shape[0] - side + 1))
    x = int(rng.integers(0, rgb.shape[1] - side + 1))
    window = (slice(y, y + side), slice(x, x + side))
    return rgb[window], float(hole[window].mean())


def _seam_keep_new(old: np.ndarray, new: np.ndarray, left: bool, top: bool, o: int) -> np.ndarray:
    """Share (0..1) of the new patch to keep: cut along least-difference seams in the left and
    top overlaps (``o`` px wide) where there are neighbours, softened by one pixel."""
    side = new.shape[0]
    keep = np.ones((side, side), np.float32)
    err = ((old - new) ** 2).sum(axis=2)
    if left:
        cut = min_path(err[:, :o], step=1)
        keep[np.arange(side)[None, :] < cut[:, None]] = 0.0
    if top:
        cut = min_path(np.ascontiguousarray(err[:o, :].T), step=1)
        keep[np.arange(side)[:, None] < cut[None, :]] = 0.0
    return cv2.GaussianBlur(keep, (3, 3), 0.8, borderType=cv2.BORDER_REPLICATE)


def _overlap_error(old: np.ndarray, new: np.ndarray, left: bool, top: bool, o: int) -> float:
    """Mean squared colour difference of ``new`` and ``old`` over the overlaps in use."""
    parts = ([(old[:, :o] - new[:, :o]) ** 2] if left else []) + (
        [(old[:o, :] - new[:o, :]) ** 2] if top else []
    )
    return float(np.mean([p.mean() for p in parts])) if parts else 0.0


def quilt(
    rng: np.random.Generator,
    tiles: Sequence[Tile],
    height: int,
    width: int,
) -> np.ndarray:
    """A ``height`` x ``width`` RGB field quilted from :func:`make_background` tiles (see the
    module docstring), in the plasma colour of the first tile. Each patch (:data:`PATCH` px,
    less for smaller tiles) is the best of :data:`CANDIDATES` random ones: least removed-cell
    area (in tenths), then least overlap error."""
    side = min(PATCH, *(min(t.rgb.shape[:2]) for t in tiles))
    o = max(2, min(OVERLAP, side // 4))
    step = side - o
    ny, nx = -(-(height - o) // step), -(-(width - o) // step)
    canvas = np.zeros((ny * step + o, nx * step + o, 3), np.float32)
    reference = tiles[0].plasma
    for i in range(ny):
        for j in range(nx):
            y, x = i * step, j * step
            old = canvas[y : y + side, x : x + side]
            best = None
            for _ in range(CANDIDATES):
                tile = tiles[int(rng.integers(len(tiles)))]
                patch, holes = _random_patch(rng, tile, side)
                patch = patch * (reference / np.maximum(tile.plasma, 1.0))
                score = (round(holes, 1), _overlap_error(old, patch, j > 0, i > 0, o))
                if best is None or score < best[0]:
                    best = (score, patch)
            patch = best[1]
            keep = _seam_keep_new(old, patch, j > 0, i > 0, o)[..., None]
            canvas[y : y + side, x : x + side] = keep * patch + (1.0 - keep) * old
    return np.clip(np.rint(canvas[:height, :width]), 0, 255).astype(np.uint8)
