"""Procedural drawing of May-Grünwald-Giemsa-stained marrow cells and of the smear around them.

Cells are drawn in *optical density* (absorbance) space: a colour ``rgb`` seen on white light has
density ``-ln(rgb / 255)`` and overlapping stained material adds up (Beer-Lambert), which is how
a thin smear looks under bright-field illumination. :func:`render_cell` draws one nucleated cell
into a small patch and :func:`smear_background` the plasma haze, the crowded unlabelled mature red
cells and a few platelets; :mod:`bmc_detectron.data.synthetic.composer` places the patches.

Every cell is built from signed-distance shapes (negative inside, in pixels) evaluated on the
patch grid with numpy, so drawing is vectorised and independent of the cell's position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from bmc_detectron.data.synthetic.composer import RenderedCell, paste_patch

Range = Tuple[float, float]
RGB = Tuple[int, int, int]

#: a pixel belongs to a cell (and to its box) when the cell's coverage reaches this value
MASK_THRESHOLD = 0.25


def rgb_to_od(rgb: Sequence[float]) -> np.ndarray:
    """Optical density (per RGB channel) of a colour seen on a white background."""
    c = np.clip(np.asarray(rgb, np.float32), 1.0, 255.0) / 255.0
    return -np.log(c)


@dataclass(frozen=True)
class CellStyle:
    """The distinguishing traits of one class (lengths are relative to the cell radius)."""

    diameter: Range  # pixel diameter at scale 1
    elongation: Range  # major / minor axis ratio of the cell outline
    nucleus: str  # round | kidney | band | lobes | bilobed
    nc_ratio: Range  # nucleus radius / cell radius
    offset: Range  # nucleus centre distance from the cell centre / cell radius
    nuc_rgb: RGB
    chromatin: str  # fine | dense | clumped | coarse | lacy
    cyto_rgb: RGB
    granules: str = "none"  # none | azurophil | fine | eosinophil
    gran_rgb: RGB = (255, 255, 255)
    halo: bool = False  # pale perinuclear Golgi zone
    nucleoli: float = 0.0  # probability of visible nucleoli
    vacuoles: float = 0.0  # probability of cytoplasmic vacuoles
    cyto_alt_rgb: RGB | None = None  # second cytoplasm colour, mixed at random


# Order follows bmc_detectron.data.classes.MARROW_CLASSES. Columns: diameter, elongation, nucleus
# shape, N:C radius ratio, nucleus offset, nucleus colour, chromatin, cytoplasm colour, extras.
# fmt: off
CELL_STYLES: List[CellStyle] = [
    # Prim: blast, large round nucleus (high N:C), fine pale chromatin, nucleoli, blue rim
    CellStyle((30, 38), (1.0, 1.12), "round", (0.72, 0.82), (0.0, 0.12), (150, 100, 175),
              "fine", (125, 150, 210), nucleoli=0.85),
    # Lym: small, very dense round nucleus, scant sky-blue cytoplasm
    CellStyle((18, 23), (1.0, 1.1), "round", (0.8, 0.88), (0.0, 0.12), (62, 32, 95),
              "dense", (150, 185, 230)),
    # Mono: large, folded kidney nucleus with lacy chromatin, grey-blue cytoplasm, vacuoles
    CellStyle((36, 44), (1.0, 1.2), "kidney", (0.6, 0.7), (0.1, 0.22), (128, 88, 158),
              "lacy", (178, 180, 208), vacuoles=0.6),
    # Plas: oval, eccentric clumped nucleus, deep blue cytoplasm, perinuclear halo
    CellStyle((26, 32), (1.2, 1.45), "round", (0.5, 0.6), (0.32, 0.42), (62, 34, 92),
              "clumped", (118, 135, 196), halo=True),
    # Red: small nucleated red cell, pyknotic very dark nucleus, grey-lilac to pink cytoplasm
    CellStyle((18, 24), (1.0, 1.08), "round", (0.52, 0.66), (0.0, 0.1), (45, 20, 65),
              "dense", (185, 165, 200), cyto_alt_rgb=(230, 160, 170)),
    # Promy: largest, round nucleus, blue cytoplasm full of purple azurophil granules
    CellStyle((38, 48), (1.0, 1.15), "round", (0.56, 0.66), (0.1, 0.25), (125, 80, 155),
              "fine", (158, 165, 212), "azurophil", (105, 25, 100), nucleoli=0.4),
    # Myelo: large, round eccentric nucleus, lilac cytoplasm with fine pink granules
    CellStyle((34, 42), (1.0, 1.15), "round", (0.5, 0.6), (0.18, 0.32), (95, 58, 128),
              "coarse", (212, 182, 208), "fine", (175, 115, 165)),
    # Late: metamyelocyte, kidney/indented nucleus, pale pink cytoplasm
    CellStyle((28, 34), (1.0, 1.12), "kidney", (0.56, 0.66), (0.05, 0.18), (85, 50, 118),
              "coarse", (226, 200, 216), "fine", (190, 140, 180)),
    # Rods: band neutrophil, U/C-shaped band nucleus
    CellStyle((26, 32), (1.0, 1.1), "band", (0.5, 0.62), (0.0, 0.1), (78, 42, 110),
              "coarse", (228, 204, 218), "fine", (195, 145, 185)),
    # Lobu: segmented neutrophil, 2-5 lobes joined by thin strands
    CellStyle((26, 32), (1.0, 1.1), "lobes", (0.24, 0.3), (0.0, 0.08), (72, 38, 105),
              "coarse", (228, 204, 218), "fine", (195, 145, 185)),
    # Eosl: eosinophil, bilobed nucleus, packed orange-red coarse granules
    CellStyle((28, 34), (1.0, 1.12), "bilobed", (0.3, 0.36), (0.0, 0.1), (88, 52, 125),
              "coarse", (235, 210, 205), "eosinophil", (228, 105, 70)),
]
# fmt: on

MEAN_DIAMETERS: Dict[int, float] = {i: sum(s.diameter) / 2 for i, s in enumerate(CELL_STYLES)}


def smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit variance."""
    n = rng.standard_normal(shape, dtype=np.float32)
    if sigma > 0.3:
        n = cv2.GaussianBlur(n, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return (n - n.mean()) / (n.std() + 1e-6)


def coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (about one pixel wide) of the shape ``sdf < 0``."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _rotate(x: np.ndarray, y: np.ndarray, theta: float) -> Tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(theta), np.sin(theta)
    return x * c + y * s, -x * s + y * c


def _wobbly_ellipse_sdf(x, y, a, b, theta, rng, amp):
    """Approximate signed distance to an ellipse whose outline wavers by ``amp`` (relative)."""
    u, v = _rotate(x, y, theta)
    un, vn = u / a, v / b
    rho = np.sqrt(un * un + vn * vn)
    phi = np.arctan2(vn, un)
    wob = np.ones_like(rho)
    for k in (2, 3, 4, 5):
        wob += amp * rng.uniform(0.2, 1.0) / k * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    return (rho - wob) * np.sqrt(a * b)


def _disk_sdf(x, y, cx, cy, r):
    return np.hypot(x - cx, y - cy) - r


def _segment_dist(x, y, p, q):
    d = np.asarray(q, np.float32) - np.asarray(p, np.float32)
    t = np.clip(((x - p[0]) * d[0] + (y - p[1]) * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return np.hypot(x - (p[0] + t * d[0]), y - (p[1] + t * d[1]))


def _band_sdf(x, y, rm, width, rng):
    """A C/U-shaped band of half-thickness ``width / 2`` along an arc of radius ``rm``."""
    u = x / rng.uniform(1.0, 1.3)  # stretch the C into a U
    gap = rng.uniform(0.45, 1.0)  # half-angle of the opening
    rho = np.hypot(u, y)
    phi = np.abs(np.arctan2(y, u))
    ex, ey = rm * np.cos(gap), rm * np.sin(gap)
    end = np.minimum(np.hypot(u - ex, y - ey), np.hypot(u - ex, y + ey))
    dist = np.where(phi >= gap, np.abs(rho - rm), end)
    return dist - 0.5 * width * (1.0 + 0.15 * np.cos(3 * phi + rng.uniform(0, 6.3)))


def _lobes_sdf(x, y, radius, n, rng, limit):
    """``n`` round lobes along a curved chain, joined by thin chromatin strands."""
    step = rng.uniform(1.5, 1.9) * radius
    ang, turn = rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0])
    pts = [np.zeros(2)]
    for _ in range(n - 1):
        ang += turn * rng.uniform(0.3, 1.1)
        pts.append(pts[-1] + step * np.array([np.cos(ang), np.sin(ang)]))
    pts_a = np.array(pts) - np.mean(pts, axis=0)
    extent = np.max(np.hypot(pts_a[:, 0], pts_a[:, 1])) + radius
    if extent > limit:
        pts_a *= max(limit - radius, 0.3 * radius) / max(extent - radius, 1e-6)
    radii = radius * rng.uniform(0.85, 1.12, size=n)
    sdf = np.min([_disk_sdf(x, y, p[0], p[1], r) for p, r in zip(pts_a, radii)], axis=0)
    strand = max(0.05 * limit, 0.7)
    for p, q in zip(pts_a[:-1], pts_a[1:]):
        sdf = np.minimum(sdf, _segment_dist(x, y, p, q) - strand)
    return sdf


def _nucleus_sdf(style: CellStyle, x, y, radius, theta, rng):
    """Signed distance of the nucleus, its centre (pixels from the cell centre) and radius.

    An eccentric nucleus sits towards one end of the cell's major axis (``theta``).
    """
    psi = theta + rng.choice([0.0, np.pi]) + rng.normal(0.0, 0.35)
    off = rng.uniform(*style.offset) * radius
    cx, cy = off * np.cos(psi), off * np.sin(psi)
    rn = rng.uniform(*style.nc_ratio) * radius
    beta = rng.uniform(0, 2 * np.pi)
    u, v = _rotate(x - cx, y - cy, beta)
    kind = style.nucleus
    if kind == "round":
        e = rng.uniform(1.0, 1.15)
        sdf = _wobbly_ellipse_sdf(u, v, rn * e, rn / e, 0.0, rng, 0.08)
    elif kind == "kidney":
        folded = style.chromatin == "lacy"
        sdf = _wobbly_ellipse_sdf(u, v, rn * 1.1, rn / 1.1, 0.0, rng, 0.14 if folded else 0.06)
        depth = rng.uniform(0.8, 1.0) if folded else rng.uniform(0.85, 1.05)
        notch = _disk_sdf(u, v, depth * rn, 0.0, rn * rng.uniform(0.45, 0.6))
        sdf = np.maximum(sdf, -notch)
    elif kind == "band":
        sdf = _band_sdf(u, v, rn, radius * rng.uniform(0.2, 0.26), rng)
    elif kind == "lobes":
        n = int(rng.choice([2, 3, 4, 5], p=[0.15, 0.45, 0.3, 0.1]))
        sdf = _lobes_sdf(u, v, rn * (1.1 if n <= 3 else 0.95), n, rng, 0.78 * radius)
    elif kind == "bilobed":
        d = rn * rng.uniform(1.05, 1.25)
        lobes = np.minimum(_disk_sdf(u, v, -d, 0, rn), _disk_sdf(u, v, d, 0, rn * 0.95))
        sdf = np.minimum(lobes, _segment_dist(u, v, (-d, 0), (d, 0)) - 0.25 * rn)
    else:
        raise ValueError(f"unknown nucleus shape {kind!r}")
    return sdf, cx, cy, rn


def _chromatin(style: CellStyle, shape, radius: float, rng) -> np.ndarray:
    """Multiplicative density texture of the nucleus."""
    kind = style.chromatin
    if kind == "fine":
        return 0.85 + 0.07 * smooth_noise(rng, shape, 0.7)
    if kind == "dense":
        return 1.05 + 0.1 * smooth_noise(rng, shape, 1.0)
    if kind == "clumped":  # "clock-face" blocks of dense chromatin with pale gaps
        blocks = (smooth_noise(rng, shape, max(0.12 * radius, 1.0)) > -0.2).astype(np.float32)
        return 0.6 + 0.55 * cv2.GaussianBlur(blocks, (0, 0), 0.8)
    if kind == "lacy":
        return 0.85 + 0.15 * smooth_noise(rng, shape, 0.9)
    return 0.95 + 0.2 * smooth_noise(rng, shape, 1.3)  # coarse


def _granules(rng, shape, density: float, dot: int) -> np.ndarray:
    """Random granules of about ``dot`` pixels, as a coverage map in [0, 1]."""
    pts = (rng.random(shape, dtype=np.float32) < density).astype(np.float32)
    if dot > 1:
        pts = cv2.dilate(pts, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (dot, dot)))
    return np.clip(cv2.GaussianBlur(pts, (0, 0), 0.6) * 1.4, 0.0, 1.0)


def _jitter(rgb: RGB, rng, strength: float = 0.07) -> np.ndarray:
    """Per-cell colour jitter: density scaled globally and per channel."""
    od = rgb_to_od(rgb)
    return od * rng.uniform(0.85, 1.15) * (1.0 + strength * rng.standard_normal(3))


def _cytoplasm_od(style: CellStyle, rng, xx, yy, body, body_sdf, nuc_geom, radius) -> np.ndarray:
    """Cytoplasm density: mottled colour, denser membrane, Golgi halo and vacuoles."""
    rgb = np.asarray(style.cyto_rgb, np.float32)
    if style.cyto_alt_rgb is not None:
        rgb = rgb + rng.random() * (np.asarray(style.cyto_alt_rgb, np.float32) - rgb)
    dens = body * (1.0 + 0.08 * smooth_noise(rng, body.shape, 1.5))
    dens *= 1.0 + 0.3 * np.clip(1.0 + body_sdf / 1.5, 0.0, 1.0)  # membrane
    _, ncx, ncy, rn = nuc_geom
    if style.halo:  # pale zone on the cell-centre side of the eccentric nucleus
        norm = max(float(np.hypot(ncx, ncy)), 1e-3)
        hx, hy = ncx - ncx / norm * 0.95 * rn, ncy - ncy / norm * 0.95 * rn
        d = np.hypot(xx - hx, yy - hy) / (0.55 * rn)
        dens *= 1.0 - 0.7 * np.clip(1.0 - d, 0.0, 1.0) ** 0.6
    if rng.random() < style.vacuoles:
        for _ in range(int(rng.integers(2, 7))):
            r, ang = rng.uniform(0.4, 0.85) * radius, rng.uniform(0, 2 * np.pi)
            vac = coverage(
                _disk_sdf(xx, yy, r * np.cos(ang), r * np.sin(ang), rng.uniform(0.05, 0.1) * radius)
            )
            dens *= 1.0 - 0.75 * vac
    return dens[..., None] * _jitter(tuple(rgb), rng)


# granules: (density of granule seeds, dot size / cell diameter, intensity, share over nucleus)
_GRANULES = {
    "azurophil": (0.05, 0.06, 1.0, 0.7),
    "fine": (0.1, 0.0, 0.45, 0.0),
    "eosinophil": (0.11, 0.075, 1.0, 0.3),
}


def render_cell(rng: np.random.Generator, cls: int, diameter: float) -> RenderedCell:
    """Draw one cell of class ``cls`` (index in ``MARROW_CLASSES``) with the given diameter."""
    style = CELL_STYLES[cls]
    radius = 0.5 * float(diameter)
    e = rng.uniform(*style.elongation)
    a, b = radius * np.sqrt(e), radius / np.sqrt(e)
    half = int(np.ceil(a * 1.08)) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    body_sdf = _wobbly_ellipse_sdf(xx, yy, a, b, theta, rng, 0.06)
    body = coverage(body_sdf)
    nuc_geom = _nucleus_sdf(style, xx, yy, radius, theta, rng)
    nuc = np.minimum(coverage(nuc_geom[0]), body)

    od = _cytoplasm_od(style, rng, xx, yy, body, body_sdf, nuc_geom, radius)
    chrom = _chromatin(style, body.shape, radius, rng)
    od = od * (1.0 - nuc)[..., None] + (nuc * chrom)[..., None] * _jitter(style.nuc_rgb, rng)
    if rng.random() < style.nucleoli:
        _, ncx, ncy, rn = nuc_geom
        pale = rgb_to_od((170, 165, 215))
        for _ in range(int(rng.integers(1, 4))):
            r, ang = rng.uniform(0, 0.45) * rn, rng.uniform(0, 2 * np.pi)
            spot = (
                coverage(
                    _disk_sdf(
                        xx,
                        yy,
                        ncx + r * np.cos(ang),
                        ncy + r * np.sin(ang),
                        rng.uniform(0.09, 0.14) * radius,
                    )
                )
                * nuc
            )
            od = od * (1.0 - spot)[..., None] + spot[..., None] * pale
    if style.granules != "none":
        density, dot, strength, over = _GRANULES[style.granules]
        gmap = _granules(rng, body.shape, density, max(1, int(round(dot * diameter))))
        gmap *= body * (1.0 - (1.0 - over) * nuc) * strength
        od += gmap[..., None] * _jitter(style.gran_rgb, rng)

    mask = body >= MASK_THRESHOLD
    od[~mask] = 0.0
    return RenderedCell(od.astype(np.float32), (body * mask).astype(np.float32), mask, cls)


def rbc_sprite(
    rng: np.random.Generator, diameter: float, od_rgb: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """A mature red cell (density patch, coverage): a pink disc with a pale centre."""
    e = rng.uniform(1.0, 1.12)
    a, b = 0.5 * diameter * e, 0.5 * diameter / e
    half = int(np.ceil(a)) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    t = rng.uniform(0, np.pi)
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    alpha = coverage((rho - 1.0) * np.sqrt(a * b))
    pallor = rng.uniform(0.3, 0.6)
    profile = 1.0 - pallor * np.clip(1.0 - rho / rng.uniform(0.5, 0.7), 0.0, 1.0) ** 0.8
    od = (alpha * profile)[..., None] * od_rgb * rng.uniform(0.85, 1.15)
    return od.astype(np.float32), alpha


RBC_DIAMETER = (14.0, 18.0)  # mature red cells at scale 1
_BACKGROUND_RGB = (246, 236, 240)
_RBC_RGB = (236, 168, 174)
_PLATELET_RGB = (150, 95, 165)


def _platelet(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Coverage of a platelet: a small granular purple dot."""
    d = rng.uniform(2.5, 4.5) * scale
    size = int(np.ceil(d)) + 2
    yy, xx = np.mgrid[-size : size + 1, -size : size + 1].astype(np.float32)
    return coverage(np.hypot(xx, yy) - 0.5 * d) * (0.6 + 0.4 * rng.random(xx.shape))


def smear_background(rng: np.random.Generator, height: int, width: int, scale: float):
    """Plasma haze, crowded unlabelled red cells and a few platelets, as optical density."""
    haze = cv2.resize(
        smooth_noise(rng, (8, 8), 0.0), (width, height), interpolation=cv2.INTER_CUBIC
    )
    od = (1.0 + 0.25 * haze)[..., None] * rgb_to_od(_BACKGROUND_RGB) * rng.uniform(0.6, 1.4)
    od = np.ascontiguousarray(od, dtype=np.float32)
    rbc_rgb = rgb_to_od(_RBC_RGB) * (1.0 + 0.08 * rng.standard_normal(3))
    sprites = [rbc_sprite(rng, rng.uniform(*RBC_DIAMETER) * scale, rbc_rgb) for _ in range(8)]
    mean_area = np.pi * (0.5 * np.mean(RBC_DIAMETER) * scale) ** 2
    n_rbc = int(rng.uniform(0.35, 0.75) * height * width / mean_area)
    xs, ys = rng.integers(0, width, n_rbc), rng.integers(0, height, n_rbc)
    picks = rng.integers(0, len(sprites), n_rbc)
    for x, y, k in zip(xs, ys, picks):
        paste_patch(od, sprites[k][0], sprites[k][1], int(x), int(y), 0.3)
    for _ in range(int(rng.integers(0, 6 * height * width // 65536 + 1))):
        alpha = _platelet(rng, scale)
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        paste_patch(od, alpha[..., None] * rgb_to_od(_PLATELET_RGB), alpha, cx, cy, 0.5)
    return od
