"""A large synthetic smear slide for the benchmark: a pyramidal JPEG TIFF of any size, written
tile by tile (memory bounded) from a small pool of smear patches of the procedural generator.

Along x the smear runs thick -> monolayer -> tail, as a wedge smear does: the first
``THICK`` of the width is *thick* (three generated smears laid on each other: their
transmissions multiply, cells pile up and almost no glass is left), the next part up to
``TAIL`` is the *monolayer* (the generator's smears as they are), the rest is the *tail*
(a few cells on glass).
A band of glass runs along the top and bottom edges. Patches are ``PATCH`` px, drawn at the
generator's scale 2 (0.234 um/px), and repeat in a pseudo-random order.

    python -m studies.slides.synthetic_slide output/slides/slide40k.tif --size 40000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import cv2
import numpy as np
import tifffile

from bmc_detectron.data.synthetic.bmc_synth import draw_smear, microns_per_pixel

PATCH = 1024
SCALE = 2.0
TILE = 512
LEVELS = (1, 4, 16, 64)
THICK, TAIL = 0.3, 0.7
MARGIN = 0.06  # glass bands along the top and bottom, as a share of the height
GLASS = 238


def patch_pool(n: int = 6, seed: int = 0) -> Dict[str, List[np.ndarray]]:
    """RGB patches of each zone."""
    rng = np.random.default_rng(seed)
    mono = [draw_smear(rng, PATCH, PATCH, (24, 34), SCALE).image for _ in range(n)]
    thick = [
        (
            mono[i].astype(np.float32)
            * mono[(i + 1) % n][::-1]
            * mono[(i + 2) % n][:, ::-1]
            / 255.0**2
        ).astype(np.uint8)
        for i in range(n)
    ]
    tail = []
    for _ in range(n):
        cells = draw_smear(rng, PATCH, PATCH, (1, 3), SCALE, clean=True).image
        tail.append((cells.astype(np.float32) * (GLASS / 255.0)).astype(np.uint8))
    return {"thick": thick, "mono": mono, "tail": tail}


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


def tiles(pool, size: int, ds: int) -> Iterator[np.ndarray]:
    """The level's tiles, row by row (tifffile's order)."""
    n = -(-size // ds // TILE)
    for ty in range(n):
        for tx in range(n):
            yield region(pool, size, ds, tx * TILE, ty * TILE)


def write_slide(path: Path, size: int, seed: int = 0) -> Dict[str, float]:
    """Write the slide (``size`` px square at level 0); what it took."""
    start = time.perf_counter()
    base = patch_pool(seed=seed)
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
