"""A large synthetic smear slide for the benchmark: a pyramidal JPEG TIFF of any size, written
tile by tile (memory bounded) from a small pool of smear patches of the procedural generator.

Along x the smear runs thick -> monolayer -> tail, as a wedge smear does: the first
``THICK`` of the width is *thick* (three generated smears laid on each other: their
transmissions multiply, cells pile up and almost no glass is left), the next part up to
``TAIL`` is the *monolayer* (the generator's smears as they are), the rest is the *tail*
(a few cells on glass).
A band of glass runs along the top and bottom edges. Patches are ``PATCH`` px, drawn at the
generator's scale 2 (0.234 um/px), and repeat in a pseudo-random order.

The generator returns each patch's cells (box, class), so the slide's nucleated cells are known:
:func:`known_cells` lists them in level-0 slide pixels with their zone (a thick patch's are the
cells of its three layers, flipped as the layers are), each box cut by the glass bands and the
slide's edge (a cell less than half visible is left out); :func:`write_slide` writes them beside
the slide (``<slide>_cells.csv``: ``x0, y0, x1, y1, class, zone``).

    python -m studies.slides.synthetic_slide output/slides/slide40k.tif --size 40000
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import tifffile

from bmc_detectron.data.classes import MARROW_CLASSES
from bmc_detectron.data.synthetic.bmc_synth import draw_smear, microns_per_pixel

PATCH = 1024
SCALE = 2.0
TILE = 512
LEVELS = (1, 4, 16, 64)
THICK, TAIL = 0.3, 0.7
MARGIN = 0.06  # glass bands along the top and bottom, as a share of the height
GLASS = 238
CELLS_SUFFIX = "_cells.csv"

#: a patch's cells: (N, 4) XYXY boxes in patch pixels and (N,) class indices (MARROW_CLASSES)
Cells = Tuple[np.ndarray, np.ndarray]


def patch_pool(
    n: int = 6, seed: int = 0
) -> Tuple[Dict[str, List[np.ndarray]], Dict[str, List[Cells]]]:
    """RGB patches of each zone, and each patch's cells."""
    rng = np.random.default_rng(seed)
    drawn = [draw_smear(rng, PATCH, PATCH, (24, 34), SCALE) for _ in range(n)]
    mono = [f.image for f in drawn]
    thick = [
        (
            mono[i].astype(np.float32)
            * mono[(i + 1) % n][::-1]
            * mono[(i + 2) % n][:, ::-1]
            / 255.0**2
        ).astype(np.uint8)
        for i in range(n)
    ]
    thick_cells = []
    for i in range(n):  # layer i as drawn, layer i+1 flipped upside down, i+2 left to right
        a, b, c = drawn[i], drawn[(i + 1) % n], drawn[(i + 2) % n]
        b_boxes = np.stack(
            [b.boxes[:, 0], PATCH - b.boxes[:, 3], b.boxes[:, 2], PATCH - b.boxes[:, 1]], 1
        )
        c_boxes = np.stack(
            [PATCH - c.boxes[:, 2], c.boxes[:, 1], PATCH - c.boxes[:, 0], c.boxes[:, 3]], 1
        )
        boxes = np.concatenate([a.boxes, b_boxes, c_boxes]).astype(np.float32)
        thick_cells.append((boxes, np.concatenate([a.classes, b.classes, c.classes])))
    tail, tail_cells = [], []
    for _ in range(n):
        field = draw_smear(rng, PATCH, PATCH, (1, 3), SCALE, clean=True)
        tail.append((field.image.astype(np.float32) * (GLASS / 255.0)).astype(np.uint8))
        tail_cells.append((field.boxes, field.classes))
    cells = {
        "thick": thick_cells,
        "mono": [(f.boxes, f.classes) for f in drawn],
        "tail": tail_cells,
    }
    return {"thick": thick, "mono": mono, "tail": tail}, cells


def _zone(x_centre: float, width: int) -> str:
    if x_centre < THICK * width:
        return "thick"
    return "mono" if x_centre < TAIL * width else "tail"


def region(pool: Dict[str, List[np.ndarray]], size: int, ds: int, x: int, y: int) -> np.ndarray:
    """The TILE x TILE tile at (x, y) of the level ``ds`` times smaller than the slide."""
    side = PATCH // ds
    out = np.full((TILE, TILE, 3), GLASS, np.uint8)
    lo, hi = MARGIN * size / ds, (1 - MARGIN) * size / ds
    for py in range(y // side, (y + TILE - 1) // side + 1):
        for px in range(x // side, (x + TILE - 1) // side + 1):
            if px * side >= size / ds:
                continue
            zone = _zone((px + 0.5) * PATCH, size)
            patches = pool[f"{zone}_{ds}"]
            patch = patches[(px * 7 + py * 13) % len(patches)]
            ox, oy = px * side - x, py * side - y
            a, b = max(0, ox), max(0, oy)
            c, d = min(TILE, ox + side), min(TILE, oy + side)
            out[b:d, a:c] = patch[b - oy : d - oy, a - ox : c - ox]
    rows = np.arange(y, y + TILE)
    out[(rows < lo) | (rows >= hi)] = GLASS
    return out


def known_cells(cells: Dict[str, List[Cells]], size: int) -> List[Tuple[float, ...]]:
    """The slide's nucleated cells at level 0: ``(x0, y0, x1, y1, class index, zone)`` rows,
    patch by patch as :func:`region` lays them, each box cut by the glass bands and the slide's
    edge; a cell with less than half of its box left is left out."""
    lo, hi = MARGIN * size, (1 - MARGIN) * size
    n = -(-size // PATCH)
    rows: List[Tuple[float, ...]] = []
    for py in range(n):
        for px in range(n):
            zone = _zone((px + 0.5) * PATCH, size)
            patches = cells[zone]
            boxes, classes = patches[(px * 7 + py * 13) % len(patches)]
            shifted = boxes + np.array([px, py, px, py], np.float32) * PATCH
            cut = np.clip(shifted, [0, lo, 0, lo], [size, hi, size, hi])
            area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
            kept = (cut[:, 2] - cut[:, 0]) * (cut[:, 3] - cut[:, 1]) >= 0.5 * area
            for box, cls in zip(cut[kept].tolist(), classes[kept].tolist()):
                rows.append((*box, int(cls), zone))
    return rows


def write_known_cells(path: Path, rows: Sequence[Tuple[float, ...]]) -> Path:
    """The known cells as CSV: ``x0, y0, x1, y1`` (level-0 px), ``class`` (abbreviation),
    ``zone`` (thick, mono, tail)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["x0", "y0", "x1", "y1", "class", "zone"])
        for x0, y0, x1, y1, cls, zone in rows:
            box = [round(float(v), 1) for v in (x0, y0, x1, y1)]
            writer.writerow([*box, MARROW_CLASSES[int(cls)].abbr, zone])
    return path


def cells_file(slide: Path) -> Path:
    """Where :func:`write_slide` writes the slide's known cells."""
    return slide.with_name(slide.stem + CELLS_SUFFIX)


def tiles(pool, size: int, ds: int) -> Iterator[np.ndarray]:
    """The level's tiles, row by row (tifffile's order)."""
    n = -(-size // ds // TILE)
    for ty in range(n):
        for tx in range(n):
            yield region(pool, size, ds, tx * TILE, ty * TILE)


def write_slide(path: Path, size: int, seed: int = 0) -> Dict[str, float]:
    """Write the slide (``size`` px square at level 0) and its known cells
    (:func:`cells_file`); what it took."""
    start = time.perf_counter()
    base, cells = patch_pool(seed=seed)
    pool = {
        f"{zone}_{ds}": [
            cv2.resize(p, (PATCH // ds,) * 2, interpolation=cv2.INTER_AREA) for p in ps
        ]
        for zone, ps in base.items()
        for ds in LEVELS
    }
    drawn = time.perf_counter() - start
    mpp = microns_per_pixel(SCALE)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = dict(tile=(TILE, TILE), photometric="rgb", compression="jpeg", dtype=np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            tiles(pool, size, 1),
            shape=(size, size, 3),
            subifds=len(LEVELS) - 1,
            resolution=(1e4 / mpp, 1e4 / mpp),
            resolutionunit="CENTIMETER",
            **options,
        )
        for ds in LEVELS[1:]:
            n = size // ds
            tif.write(tiles(pool, size, ds), shape=(n, n, 3), subfiletype=1, **options)
    write_known_cells(cells_file(path), known_cells(cells, size))
    return {"patches_s": round(drawn, 1), "write_s": round(time.perf_counter() - start - drawn, 1)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output")
    p.add_argument("--size", type=int, default=40000)
    args = p.parse_args(argv)
    print(write_slide(Path(args.output), args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
