"""Real white cells cut out of photographs with a mask, for the marrow composites.

* :func:`segment_cell`: the mask of the one white cell inside its box (the box slightly
  enlarged). Along 180 rays from the box centre, :func:`cell_contour` finds the closed outline of
  least cost by dynamic programming (:func:`min_path`): a point costs the drop of
  :func:`stain_map` across it (stained inside, plasma outside: nucleus, cytoplasm and red cells
  all count as stained), a pull towards the box's inscribed ellipse and the plasma left inside;
  rays end at the box edge, so a red cell touching the cell is cut off where the box ends. The
  outline is filled, holes filled, the edge smoothed and eroded by a pixel (no plasma rim), the
  component at the box centre kept. A mask covering an implausible share of its box (a round
  cell fills 79 % of its tight box; :data:`AREA_FRACTION_RANGE`) raises :class:`CutOutError`
  naming the file: such cells are skipped by the generator and listed.
  (Colour models such as ``cv2.grabCut`` were tried first: they take pale neutrophil cytoplasm
  for red cells, which have the same colour in these photos, and kept only the nucleus.)
* :func:`cut_out` / :func:`read_pbc_cell`: the cell as a :class:`CutOut` (RGB crop, alpha, mask,
  tight box in the source image, class, the photo's plasma colour); :func:`pbc_cells` lists the
  shared ``pbc_wbc`` images with their boxes and marrow classes (basophils, not a marrow class,
  are left out).

Pixel sizes: the PBC paper (Acevedo et al., Data in Brief 2020) gives the image size (360 x 363,
CellaVision DM96) but not the pixel size; the project's red-cell ruler reads a median red-cell
diameter of 66 px over 30 ``train`` images (10-90 %: 61-74 px), i.e. about 0.114 um/px for a
7.5 um red cell (:data:`PBC_MICRONS_PER_PIXEL`). BCCD reads 83 px (0.090 um/px).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import cv2
import numpy as np

from bmc_detectron.data.checks import DatasetError
from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.data.datasets import PBC_WBC_CLASSES
from bmc_detectron.data.pbc import PBC_MARROW_CLASSES, pbc_marrow_coco

#: um per pixel of the PBC (CellaVision DM96) images, from their red cells (module docstring)
PBC_MICRONS_PER_PIXEL = 0.114
#: the mean diameter of a mature red cell, um
RBC_MICRONS = 7.5
#: the share of its box a cell's mask may cover (a disc covers pi / 4 of its box)
AREA_FRACTION_RANGE = (0.45, 0.97)
#: at most about this many pixels (a regular subsample) estimate a photo's plasma colour
PLASMA_SAMPLE = 8192
#: the box is enlarged by this share of its size on each side before segmenting
BOX_MARGIN = 0.15
#: rays (angles) and radii of the outline search, and how far rays may pass the box edge
N_ANGLES, N_RADII, RAY_PAD = 180, 64, 0.03
#: weight of the pull towards the box's inscribed ellipse (per squared relative radius)
ELLIPSE_PRIOR = 1.5
#: cost of plasma inside the outline (per unit of relative radius along a ray)
PLASMA_PENALTY = 4.0
#: cells are segmented at a resolution where the short side of their box is about this many px
WORK_SIZE = 72.0


class CutOutError(DatasetError):
    """A cell whose mask fails a sanity check; the message names the file."""


@dataclass
class CutOut:
    """One cell cut out of a photo: its pixels, where it is, and what it is."""

    rgb: np.ndarray  # (h, w, 3) uint8: the crop of the cell's tight box
    alpha: np.ndarray  # (h, w) float32 coverage in [0, 1], zero outside ``mask``
    mask: np.ndarray  # (h, w) bool: the cell's pixels (the box is tight around them)
    box: np.ndarray  # (4,) XYXY in the source image, pixel edges (tight around ``mask``)
    cls: int  # marrow class id (index in MARROW_CLASSES)
    source: str  # the file it was cut from
    plasma: np.ndarray  # (3,) float32 RGB plasma colour of that photo (:func:`plasma_rgb`)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every region not connected to the border filled."""
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    return mask | (flood[1:-1, 1:-1] == 0)


def _component_at_centre(mask: np.ndarray, centre: Tuple[float, float], radius: float):
    """The largest connected component of ``mask`` with a pixel within ``radius`` of ``centre``."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    h, w = mask.shape
    yy, xx = np.ogrid[:h, :w]
    near = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    ids = np.unique(labels[near & mask])
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros_like(mask)
    best = ids[np.argmax(stats[ids, cv2.CC_STAT_AREA])]
    return labels == best


def _smooth(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Round off the edge of a binary mask (blur, threshold at one half)."""
    blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    return blurred >= 0.5


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of non-negative values (on 256 levels up to their maximum)."""
    top = max(float(values.max()), 1e-6)
    levels = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8).reshape(-1, 1)
    thr, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return max(float(thr) * top / 255.0, 1e-3)


def plasma_rgb(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The plasma colour of an RGB image (of its ``valid`` pixels): the commonest brightness
    among the brighter half of the pixels (plasma is the brightest large area; pale red-cell
    centres and glare are fewer), the median colour of the pixels near it."""
    pixels = image.reshape(-1, 3) if valid is None else image[valid]
    pixels = pixels[:: max(1, len(pixels) // PLASMA_SAMPLE)].astype(np.float32)
    light = pixels.sum(axis=1)
    bright = light[light >= np.median(light)]
    counts, edges = np.histogram(bright, bins=np.arange(0.0, 3 * 255 + 6, 6.0))
    mode = edges[int(np.argmax(counts))] + 3.0
    return np.median(pixels[np.abs(light - mode) <= 9.0], axis=0)


def stain_map(crop: np.ndarray) -> np.ndarray:
    """How far each pixel is from the plasma colour, 0 (plasma) .. 1 (clearly stained).

    The distance in L*a*b* from :func:`plasma_rgb` (blurred) is mapped linearly from half to one
    and a half times a threshold between plasma and pale cytoplasm (Otsu's, taken twice: the
    first one separates the nucleus), so that nucleus, cytoplasm and red cells all read about 1
    and the boundary to plasma is one step.
    """
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    plasma_pixel = np.clip(np.rint(plasma_rgb(crop)), 0, 255).astype(np.uint8)[None, None]
    plasma = cv2.cvtColor(plasma_pixel, cv2.COLOR_RGB2LAB).astype(np.float32)[0, 0]
    dist = cv2.GaussianBlur(np.linalg.norm(lab - plasma, axis=2), (0, 0), 1.0)
    t = _otsu(dist)
    t = _otsu(dist[dist < t])  # plasma vs. pale cytoplasm, below the nucleus' threshold
    return np.clip((dist - 0.5 * t) / t, 0.0, 1.0).astype(np.float32)


def min_path(cost: np.ndarray, step: int) -> np.ndarray:
    """Per row, the column of the cheapest path down ``cost`` moving at most ``step`` columns
    between rows (dynamic programming)."""
    n, k = cost.shape
    cols = np.arange(k)
    shifts = np.clip(cols[None, :] + np.arange(-step, step + 1)[:, None], 0, k - 1)
    acc = cost[0].copy()
    back = np.zeros((n, k), np.int64)
    for i in range(1, n):
        candidates = acc[shifts]
        best = np.argmin(candidates, axis=0)
        back[i] = shifts[best, cols]
        acc = candidates[best, cols] + cost[i]
    path = np.empty(n, np.int64)
    path[-1] = int(np.argmin(acc))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def cell_contour(crop: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The cell's outline in ``crop`` as an (N, 2) float polygon, for a cell tight in ``box``.

    Rays from the box centre are scanned from 0.55 to 1.5 times the inscribed ellipse's radius,
    never beyond the box edge (plus :data:`RAY_PAD`); the outline is the closed path of least
    cost, where a point costs ``-(stain inside - stain outside)`` (:func:`stain_map`), plus
    :data:`ELLIPSE_PRIOR` times its squared relative distance from the ellipse, plus
    :data:`PLASMA_PENALTY` times the plasma the ray holds inside it (a loose box does not pull
    the outline into the plasma). The angles run twice round and the second turn is kept, so
    the path closes on itself.
    """
    x0, y0, x1, y1 = box
    cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    theta = np.linspace(0.0, 2 * np.pi, N_ANGLES, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    ellipse = 1.0 / np.sqrt((c / a) ** 2 + (s / b) ** 2)
    with np.errstate(divide="ignore"):
        to_box = np.minimum(a / np.abs(c), b / np.abs(s)) / ellipse
    rho = np.linspace(0.55, 1.5, N_RADII)
    r = ellipse[:, None] * rho[None, :]
    map_x = (cx + r * c[:, None] - 0.5).astype(np.float32)
    map_y = (cy + r * s[:, None] - 0.5).astype(np.float32)
    ray = cv2.remap(
        stain_map(crop), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    g = 2
    inside = np.pad(ray, ((0, 0), (g, 0)), mode="edge")[:, :-g]
    outside = np.pad(ray, ((0, 0), (0, g)), mode="edge")[:, g:]
    plasma_inside = np.cumsum(1.0 - ray, axis=1) * (rho[1] - rho[0])
    cost = -(inside - outside) + ELLIPSE_PRIOR * (rho[None, :] - 1.0) ** 2
    cost += PLASMA_PENALTY * plasma_inside
    cost[rho[None, :] > to_box[:, None] + RAY_PAD] = np.inf
    path = min_path(np.vstack([cost, cost]), step=2)[N_ANGLES:]
    radius = ellipse * rho[path]
    return np.stack([cx + radius * c, cy + radius * s], axis=1)


def segment_cell(
    image: np.ndarray, box: Sequence[float], source: str = "<image>"
) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The mask of the white cell in ``box`` (XYXY) of an RGB ``image``.

    Returns ``(mask, offset)``: a bool mask of the enlarged box region and its (x, y) offset in
    ``image``. Raises :class:`CutOutError` naming ``source`` when the mask covers less or more of
    the box than :data:`AREA_FRACTION_RANGE` allows.
    """
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = BOX_MARGIN * (x1 - x0), BOX_MARGIN * (y1 - y0)
    ox, oy = max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my)))
    ex, ey = min(width, int(np.ceil(x1 + mx))), min(height, int(np.ceil(y1 + my)))
    crop = np.ascontiguousarray(image[oy:ey, ox:ex])
    f = min(1.0, WORK_SIZE / max(min(x1 - x0, y1 - y0), 1.0))
    small = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else crop
    local = (x0 - ox, y0 - oy, x1 - ox, y1 - oy)
    outline = cell_contour(small, [v * f for v in local]) / f
    mask = np.zeros((ey - oy, ex - ox), np.uint8)
    cv2.fillPoly(mask, [np.round(outline * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    size = min(x1 - x0, y1 - y0)
    mask = _smooth(_fill_holes(mask > 0), max(1.0, 0.015 * size))
    mask = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # no plasma rim
    centre = ((local[0] + local[2]) / 2, (local[1] + local[3]) / 2)
    mask = _component_at_centre(mask, centre, 0.15 * size)
    fraction = float(mask.sum()) / max((x1 - x0) * (y1 - y0), 1.0)
    lo, hi = AREA_FRACTION_RANGE
    if not lo <= fraction <= hi:
        raise CutOutError(
            f"{source}: the cell mask covers {fraction:.0%} of its box "
            f"({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}), outside {lo:.0%}-{hi:.0%}: cell skipped"
        )
    return mask, (ox, oy)


def _tight(mask: np.ndarray) -> Tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def soft_alpha(mask: np.ndarray, sigma: float = 0.7) -> np.ndarray:
    """A coverage in [0, 1] that is zero outside ``mask`` and softens its inner edge."""
    blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    return np.where(mask, np.clip(blurred, 0.0, 1.0), 0.0).astype(np.float32)


def cut_out(image: np.ndarray, box: Sequence[float], cls: int, source: str = "<image>") -> CutOut:
    """The cell in ``box`` of an RGB ``image`` as a :class:`CutOut` (see :func:`segment_cell`)."""
    mask, (ox, oy) = segment_cell(image, box, source)
    x0, y0, x1, y1 = _tight(mask)
    m = mask[y0:y1, x0:x1]
    rgb = np.ascontiguousarray(image[oy + y0 : oy + y1, ox + x0 : ox + x1])
    tight = np.array([ox + x0, oy + y0, ox + x1, oy + y1], np.float32)
    return CutOut(rgb, soft_alpha(m), m, tight, int(cls), source, plasma_rgb(image))


def read_rgb(path: Union[str, Path]) -> np.ndarray:
    """An image file as RGB uint8; :class:`DatasetError` naming the file if it cannot be read."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{path}: cannot read the image")
    return np.ascontiguousarray(bgr[..., ::-1])


@dataclass(frozen=True)
class CellSource:
    """A shared PBC image with its cell's box (XYXY pixel edges) and marrow class."""

    image: Path
    box: Tuple[float, float, float, float]
    cls: int


def pbc_cells(root: Union[str, Path], splits: Sequence[str]) -> List[CellSource]:
    """The cells of the PBC images of ``splits`` (folders of ``root`` = ``.../pbc_wbc``).

    Read with :func:`~bmc_detectron.data.pbc.pbc_marrow_coco` (its checks and errors);
    basophils (no marrow class) are left out. Sorted by path.
    """
    coco = pbc_marrow_coco(Path(root), splits, PBC_WBC_CLASSES)
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    out: List[CellSource] = []
    for ann in coco["annotations"]:
        name = PBC_MARROW_CLASSES[ann["category_id"] - 1]
        if name not in MARROW_ABBRS:
            continue
        x, y, w, h = ann["bbox"]
        path = Path(root) / files[ann["image_id"]]
        out.append(CellSource(path, (x, y, x + w, y + h), MARROW_ABBRS.index(name)))
    return sorted(out, key=lambda c: str(c.image))


def read_pbc_cell(source: CellSource) -> CutOut:
    """Cut the cell of one PBC image (:class:`CutOutError` if its mask fails the check)."""
    return cut_out(read_rgb(source.image), source.box, source.cls, str(source.image))
