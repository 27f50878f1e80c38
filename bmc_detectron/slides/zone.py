"""Where on a smear to count: the tissue, the monolayer zone, and the fields in order of merit.

A hematologist counts where the cells lie side by side without piling up: not in the thick part
(cells overlapping, no glass visible between them), not in the feathered tail (mostly empty
glass), and only where the picture is sharp. Here:

1. **Tissue** (:func:`tissue_mask`): the slide's thumbnail, pixels that are not glass (glass:
   bright and colourless, :func:`glass_mask`), slightly grown. Glass-only parts of the slide are
   never read again.
2. **Blocks** (:func:`survey`): the tissue read at a coarse *survey* level (about
   ``survey_ratio`` counting pixels per pixel), region by region, and cut into square blocks of
   about ``block`` counting pixels (a few red cells across); per block the share of glass, the
   share of nucleus-stained pixels (:func:`~bmc_detectron.smear.stain.nucleus_mask`: the
   nucleated-cell density proxy) and the Laplacian's sums (focus). A block is ``thick`` when
   less than ``background_min`` of it is glass (cells piled), ``empty`` when cells cover less
   than ``cover_min`` of it (the tail), else ``count``.
3. **Fields** (:func:`score_fields`): a field (a tile of the counting level) is in the counting
   zone when at least ``zone_share`` of its area lies in ``count`` blocks, and ``blurred`` when
   the variance of its Laplacian is below ``focus_min`` times the zone's median. A zone field's
   score is its share of nucleus-stained pixels; the count reads the fields best first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from bmc_detectron.smear.stain import nucleus_mask

# A glass pixel: every channel above GLASS_MIN and channels within GLASS_CHROMA of each other.
GLASS_MIN = 200
GLASS_CHROMA = 30
# On the thumbnail, where a pixel averages cells and the glass between them, glass is stricter.
THUMB_GLASS_MIN = 215
THUMB_GLASS_CHROMA = 15
#: block classes, in the order of :attr:`BlockMap.zone`'s values
BLOCK_ZONES = ("count", "thick", "empty", "no tissue")
#: field classes: a block class, or partly in the counting zone, or out of focus
FIELD_ZONES = (*BLOCK_ZONES, "edge", "blurred")
_CHUNK_BLOCKS = 32  # blocks per side of one survey read


@dataclass(frozen=True)
class ZoneSettings:
    """How the counting zone is found (module doc); all in the fingerprint of a slide count."""

    survey_ratio: float = 8.0
    block: int = 256
    background_min: float = 0.1
    cover_min: float = 0.25
    focus_min: float = 0.3
    zone_share: float = 0.9

    def to_json(self) -> Dict[str, Any]:
        """The settings as a dict."""
        return asdict(self)


def glass_mask(
    rgb: np.ndarray, brightest: int = GLASS_MIN, chroma: int = GLASS_CHROMA
) -> np.ndarray:
    """(H, W) True where an RGB (or BGR) uint8 pixel is bright (every channel above
    ``brightest``) and colourless (channels within ``chroma``): bare glass."""
    lo, hi = rgb.min(axis=2), rgb.max(axis=2)
    return (lo > brightest) & (hi.astype(np.int16) - lo < chroma)


def tissue_mask(thumbnail: np.ndarray, grow: int = 2) -> np.ndarray:
    """(H, W) True where the slide's thumbnail, averaged over about 1/128 of its side, is not
    glass (cells spread apart read as tissue, the sparse tail as glass), grown by ``grow`` px."""
    k = max(3, max(thumbnail.shape[:2]) // 128)
    smooth = cv2.blur(thumbnail, (k, k))
    tissue = (~glass_mask(smooth, THUMB_GLASS_MIN, THUMB_GLASS_CHROMA)).astype(np.uint8)
    if grow > 0:
        tissue = cv2.dilate(tissue, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return tissue > 0


@dataclass
class BlockMap:
    """Per-block measures of the survey (rows x cols arrays); ``size``: counting-level pixels
    per block side, ``px``: survey pixels per block side; ``zone``: index into
    :data:`BLOCK_ZONES`."""

    size: float
    px: int
    glass: np.ndarray
    nuclei: np.ndarray
    lap_sum: np.ndarray
    lap_sq: np.ndarray
    zone: np.ndarray

    def counts(self) -> Dict[str, int]:
        """Blocks per zone."""
        return {name: int((self.zone == i).sum()) for i, name in enumerate(BLOCK_ZONES)}


def _block_sums(values: np.ndarray, block: int) -> np.ndarray:
    h, w = values.shape
    return values.reshape(h // block, block, w // block, block).sum(axis=(1, 3))


def _measure_chunk(rgb: np.ndarray, block: int) -> List[np.ndarray]:
    """Block means of glass and nuclei, block sums of the Laplacian and its square."""
    n = float(block * block)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    return [
        _block_sums(glass_mask(rgb).astype(np.float32), block) / n,
        _block_sums(nucleus_mask(rgb, "RGB").astype(np.float32), block) / n,
        _block_sums(lap, block),
        _block_sums(lap * lap, block),
    ]


def survey(
    read: Any,
    height: int,
    width: int,
    ratio: float,
    tissue: np.ndarray,
    settings: ZoneSettings,
) -> BlockMap:
    """Measure the blocks of a survey level of ``height x width`` px; ``read(x, y, w, h)`` gives
    its RGB pixels, ``ratio``: counting-level pixels per survey pixel, ``tissue``: the tissue mask
    over the whole slide (any resolution). Only regions with tissue are read."""
    b = max(4, round(settings.block / ratio))
    rows, cols = math.ceil(height / b), math.ceil(width / b)
    glass = np.ones((rows, cols), np.float32)
    nuclei = np.zeros((rows, cols), np.float32)
    lap_sum = np.zeros((rows, cols), np.float32)
    lap_sq = np.zeros((rows, cols), np.float32)
    has_tissue = cv2.resize(tissue.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    step = _CHUNK_BLOCKS
    for r0 in range(0, rows, step):
        for c0 in range(0, cols, step):
            r1, c1 = min(rows, r0 + step), min(cols, c0 + step)
            if not has_tissue[r0:r1, c0:c1].any():
                continue
            rgb = read(c0 * b, r0 * b, (c1 - c0) * b, (r1 - r0) * b)
            g, nu, ls, lq = _measure_chunk(rgb, b)
            glass[r0:r1, c0:c1], nuclei[r0:r1, c0:c1] = g, nu
            lap_sum[r0:r1, c0:c1], lap_sq[r0:r1, c0:c1] = ls, lq
    zone = np.full((rows, cols), BLOCK_ZONES.index("count"), np.int8)
    zone[glass < settings.background_min] = BLOCK_ZONES.index("thick")
    zone[1.0 - glass < settings.cover_min] = BLOCK_ZONES.index("empty")
    zone[has_tissue <= 0] = BLOCK_ZONES.index("no tissue")
    return BlockMap(b * ratio, b, glass, nuclei, lap_sum, lap_sq, zone)


@dataclass
class FieldScore:
    """A field's place: ``zone`` (``count``; ``blurred``; ``edge``: mostly but not enough in the
    counting zone; else the block zone most of it lies in), its ``score`` (None outside the
    counting zone) and its measures."""

    zone: str
    score: Optional[float]
    nuclei: float
    glass: float
    focus: float


def _weights(lo: float, hi: float, size: float, n: int) -> tuple:
    """Blocks [i0, i1) a [lo, hi) interval overlaps and the overlap of each (px)."""
    i0, i1 = max(0, int(lo // size)), min(n, int(math.ceil(hi / size)))
    edges = np.arange(i0, i1 + 1) * size
    return i0, i1, np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)


def _field(blocks: BlockMap, tile: Any, settings: ZoneSettings) -> FieldScore:
    rows, cols = blocks.zone.shape
    r0, r1, wy = _weights(tile.y0, tile.y1, blocks.size, rows)
    c0, c1, wx = _weights(tile.x0, tile.x1, blocks.size, cols)
    w = np.outer(wy, wx)
    area = float(w.sum())
    if area <= 0:
        return FieldScore("no tissue", None, 0.0, 1.0, 0.0)
    zone = blocks.zone[r0:r1, c0:c1]
    share = np.array([(w * (zone == i)).sum() / area for i in range(len(BLOCK_ZONES))])
    frac = w / area
    nuclei = float((frac * blocks.nuclei[r0:r1, c0:c1]).sum())
    glass = float((frac * blocks.glass[r0:r1, c0:c1]).sum())
    n_px = float(blocks.px**2)
    mean = float((frac * blocks.lap_sum[r0:r1, c0:c1]).sum()) / n_px
    focus = float((frac * blocks.lap_sq[r0:r1, c0:c1]).sum()) / n_px - mean * mean
    if share[0] >= settings.zone_share:
        return FieldScore("count", round(nuclei, 6), nuclei, glass, focus)
    most = BLOCK_ZONES[int(np.argmax(share))]
    return FieldScore("edge" if most == "count" else most, None, nuclei, glass, focus)


def score_fields(
    blocks: BlockMap, tiles: Sequence[Any], settings: ZoneSettings
) -> List[FieldScore]:
    """Each field's zone and score (tiles have ``x0, y0, x1, y1`` in counting-level pixels); a
    zone field whose focus is below ``focus_min`` x the zone's median is ``blurred``."""
    scores = [_field(blocks, t, settings) for t in tiles]
    zone_focus = [s.focus for s in scores if s.zone == "count"]
    if zone_focus:
        floor = settings.focus_min * float(np.median(zone_focus))
        for s in scores:
            if s.zone == "count" and s.focus < floor:
                s.zone, s.score = "blurred", None
    return scores
