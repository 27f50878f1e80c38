"""Red cells as a ruler: a field's scale from the diameter of its mature red cells.

Mature red cells are the most numerous object of a blood or marrow smear and have a nearly
constant size (about 7.5 um), so their diameter in pixels measures the field's magnification.
:func:`estimate_rbc_diameter` works without knowing the scale:

1. **mask**: red cells are the pink-red pixels: a* of CIE L*a*b* (red vs green) minus a share of
   the haematoxylin density (so purple nuclei do not count), thresholded with Otsu; pale centres
   and small enclosed gaps are filled;
2. **granulometry**: the *opening transform* gives every mask pixel the radius of the largest disc
   that fits in the mask and covers it (a morphological opening by a disc of radius ``r`` is
   ``dist > r`` dilated by ``r``, two Euclidean distance transforms, for ``r`` on a geometric
   grid). A disc of radius R, alone or touching others, gets R at every pixel; so the
   area-weighted median over the mask is the typical red-cell radius, robust to touching and
   overlapping cells, and it needs no scale-dependent parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

# Grid of disc radii (pixels) of the opening transform: geometric, 4 % steps.
_RADII = np.exp(np.arange(np.log(2.0), np.log(400.0), np.log(1.04)))
_MIN_MASK_FRACTION = 0.02  # fewer red-cell pixels than this: no estimate
_MIN_CELLS = 3  # a mask holding fewer discs of the median size than this: no estimate


@dataclass(frozen=True)
class RBCEstimate:
    """A field's red-cell diameter: median (px), relative spread (interquartile range of the
    pixel radii / median) and the number of red cells the mask holds (area / median disc)."""

    median_px: float
    spread: float
    n: int

    def __iter__(self):
        return iter((self.median_px, self.spread, self.n))


def red_cell_mask(image: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """Boolean (H, W) mask of red-cell pixels (pale centres filled)."""
    code = cv2.COLOR_RGB2LAB if channel_order == "RGB" else cv2.COLOR_BGR2LAB
    lab = cv2.cvtColor(np.ascontiguousarray(image), code).astype(np.float32)
    rgb = image if channel_order == "RGB" else image[..., ::-1]
    red = lab[..., 1] - 0.5 * np.maximum(lab[..., 1] - 128.0, 0) * (
        rgb[..., 2].astype(np.float32) > rgb[..., 0].astype(np.float32)
    )
    score = cv2.GaussianBlur(red, (0, 0), 1.0)
    lo, hi = np.percentile(score, [1, 99])
    norm = np.clip((score - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    _, mask = cv2.threshold(norm, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return _fill_holes(mask > 0)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the background components that do not touch the border and are smaller than the
    largest inscribed disc of the mask (pale centres, gaps between touching cells)."""
    inv = (~mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    if n <= 1:
        return mask
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    limit = np.pi * float(np.percentile(dist[mask], 95) if mask.any() else 0.0) ** 2
    h, w = mask.shape
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    inner = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (area < limit)
    inner[0] = False
    return mask | inner[labels]


def opening_transform(mask: np.ndarray, radii: Sequence[float] = tuple(_RADII)) -> np.ndarray:
    """Float32 (H, W): per mask pixel, the largest radius in ``radii`` of a disc that fits in the
    mask and covers the pixel (0 outside the mask or below the smallest radius)."""
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    out = np.zeros(mask.shape, np.float32)
    for r in radii:
        centres = inside > r
        if not centres.any():
            break
        reach = cv2.distanceTransform(
            (~centres).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        )
        out[(reach <= r + 0.5) & mask] = r
    return out


def estimate_rbc_diameter(image: np.ndarray, channel_order: str = "RGB") -> RBCEstimate:
    """(median diameter px, relative spread, number of red cells) of one field; a median of
    ``nan`` when the field has too few red-cell pixels, or when its mask holds fewer than three
    discs of the median size (one large blob, e.g. a stain patch: no red cells to measure)."""
    mask = red_cell_mask(image, channel_order)
    if mask.mean() < _MIN_MASK_FRACTION:
        return RBCEstimate(float("nan"), float("nan"), 0)
    radius = opening_transform(mask)
    values = radius[radius > 0]
    if values.size == 0:
        return RBCEstimate(float("nan"), float("nan"), 0)
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    # +1: a disc of radius R covers pixels whose centres lie within R, so its width is 2R + 1.
    diameter = 2.0 * float(med) + 1.0
    n = int(round(mask.sum() / (np.pi * (diameter / 2.0) ** 2)))
    if n < _MIN_CELLS:
        return RBCEstimate(float("nan"), float("nan"), n)
    return RBCEstimate(diameter, float((q3 - q1) / med), n)


def rescale_factor(measured_px: float, reference_px: float) -> float:
    """The factor to resize a field by so that its red cells get the training data's diameter."""
    if not (measured_px > 0 and reference_px > 0):
        raise ValueError("rescale_factor: diameters must be positive")
    return float(reference_px) / float(measured_px)


@dataclass(frozen=True)
class CaseScale:
    """A case's red-cell diameter over its fields: median, relative spread (median absolute
    deviation / median) and the fields (indices) more than ``tolerance`` from the median."""

    median_px: float
    spread: float
    outliers: List[int]

    @property
    def disagree(self) -> bool:
        return bool(self.outliers)


def case_scale(diameters: Sequence[float], tolerance: float = 0.15) -> CaseScale:
    """Combine per-field diameters (``nan`` = no estimate, ignored) into one case estimate."""
    d = np.asarray(diameters, np.float64)
    valid = np.isfinite(d)
    if not valid.any():
        return CaseScale(float("nan"), float("nan"), [])
    med = float(np.median(d[valid]))
    spread = float(np.median(np.abs(d[valid] - med)) / med)
    outliers = [i for i, v in enumerate(d) if np.isfinite(v) and abs(v / med - 1.0) > tolerance]
    return CaseScale(med, spread, outliers)


def rescaled(image: np.ndarray, factor: float) -> Tuple[np.ndarray, Tuple[float, float]]:
    """``image`` resized by ``factor`` (area interpolation when shrinking) and the exact (x, y)
    factors of the rounded size."""
    h, w = image.shape[:2]
    nw, nh = max(1, int(round(w * factor))), max(1, int(round(h * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (nw, nh), interpolation=interp), (nw / w, nh / h)
