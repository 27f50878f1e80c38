"""Boxes that hold no whole white cell, labelled Other: what false detector boxes in marrow hold.

A detector on real marrow boxes red cells, platelets, background and parts of cells as well as
the nucleated cells. The classifier calls every box one of its types unless it is told about
these; ``marrow_non_cells_{train,val}`` (registered by :mod:`bmc_detectron.data.datasets`) are
such boxes, cut from real images and labelled ``Other`` (``data.classes.OTHER``, id 12), so a
classifier with an Other class (the marrow classifier,
``configs/recognition/cell_classifier_R_18_marrow_real_cpu.yaml``) learns them, and the count
lists them as Other, apart from the differential:

- ``background (PBC)``: a window of 0.45 times the image's white-cell box in a PBC image (red
  cells, platelets, plasma), whose crop touches that box nowhere;
- ``cell fragment``: one corner quadrant of a PBC white cell's box (a box on part of a cell);
- ``red cell (BCCD)``, ``platelet (BCCD)``: BCCD boxes of those classes (another microscope);
- ``background (BCCD)``: a BCCD window of a white-cell box's median size touching no white cell.

``train`` draws from PBC ``train`` + ``train_extra`` and BCCD ``train``; ``val`` from PBC ``val``
and BCCD ``val`` only. File names are relative to the shared datasets folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog

from bmc_detectron.data.classes import KNOWN_CLASSES, OTHER
from bmc_detectron.data.crops import crop_square
from bmc_detectron.data.paths import shared_datasets_root
from bmc_detectron.structures.boxes import intersection, record_boxes
from bmc_detectron.utils.io import write_json_atomic

logger = logging.getLogger(__name__)

#: split -> (the PBC marrow dataset, the BCCD dataset) its boxes are drawn from
NON_CELL_SOURCES: Dict[str, Sequence[str]] = {
    "train": ("pbc_marrow_train", "bccd_train"),
    "val": ("pbc_marrow_val", "bccd_val"),
}
#: side of a PBC background window, as a fraction of the image's white-cell box
PBC_BACKGROUND_SIDE = 0.45
#: context margin the background windows keep clear of cells (``CLASSIFIER.CROP_MARGIN``)
MARGIN = 0.15
#: BCCD red cells kept per image (they outnumber every other kind)
RED_CELLS_PER_IMAGE = 3
#: share of the PBC images that give a non-cell box (background or fragment, half each)
PBC_SHARE = 0.5


def touches(region: np.ndarray, boxes: np.ndarray) -> bool:
    """Whether the (4,) XYXY ``region`` overlaps any of the (M, 4) ``boxes`` (edges may meet)."""
    return bool((intersection(region, boxes) > 0).any())


def background_box(
    width: int,
    height: int,
    cells: np.ndarray,
    side: float,
    margin: float,
    rng: np.random.Generator,
    tries: int = 50,
) -> Optional[np.ndarray]:
    """A (4,) XYXY box of ``side`` px whose crop square (with ``margin``) lies inside the image
    and touches none of the (M, 4) ``cells`` boxes; None when ``tries`` draws find none."""
    reach = side * (1.0 + 2.0 * margin)
    pad = (reach - side) / 2.0
    if reach >= min(width, height):
        return None
    for _ in range(tries):
        x0 = rng.uniform(pad, width - side - pad)
        y0 = rng.uniform(pad, height - side - pad)
        box = np.array([x0, y0, x0 + side, y0 + side])
        if not touches(crop_square(box, margin), cells):
            return box
    return None


def fragment_box(box: np.ndarray, quadrant: int) -> np.ndarray:
    """The (4,) XYXY corner quadrant ``quadrant`` (0..3: top-left, top-right, bottom-left,
    bottom-right) of a (4,) XYXY box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left, top = quadrant % 2 == 0, quadrant < 2
    return np.array([x0 if left else cx, y0 if top else cy, cx if left else x1, cy if top else y1])


def pbc_non_cells(records: Sequence[dict], rng: np.random.Generator, share: float = 1.0) -> list:
    """(record, box, kind) of PBC dicts: for ``share`` of the images (drawn), a background
    window or a quarter of the cell, half each."""
    out = []
    for rec in records:
        cells = record_boxes(rec)[0]
        if not len(cells) or rng.random() >= share:
            continue
        if rng.random() < 0.5:
            out.append((rec, fragment_box(cells[0], int(rng.integers(4))), "cell fragment"))
            continue
        side = PBC_BACKGROUND_SIDE * float(np.max(cells[:, 2:] - cells[:, :2]))
        box = background_box(rec["width"], rec["height"], cells, side, MARGIN, rng)
        if box is not None:
            out.append((rec, box, "background (PBC)"))
    return out


def bccd_non_cells(records: Sequence[dict], rng: np.random.Generator, red_per_image: int) -> list:
    """(record, box, kind) of BCCD dicts (classes RBC 0, WBC 1, Platelets 2): red cells (at most
    ``red_per_image`` per image, drawn), every platelet, one background window per image."""
    out = []
    sides = [max(b[2] - b[0], b[3] - b[1]) for r in records for b in record_boxes(r, 1)[0]]
    side = float(np.median(sides)) if sides else 0.0
    for rec in records:
        red = record_boxes(rec, 0)[0]
        if len(red) > red_per_image:
            red = red[np.sort(rng.choice(len(red), red_per_image, replace=False))]
        out += [(rec, b, "red cell (BCCD)") for b in red]
        out += [(rec, b, "platelet (BCCD)") for b in record_boxes(rec, 2)[0]]
        box = background_box(
            rec["width"], rec["height"], record_boxes(rec, 1)[0], side, MARGIN, rng
        )
        if side > 0 and box is not None:
            out.append((rec, box, "background (BCCD)"))
    return out


def non_cells_coco(items: Sequence[tuple], root: Path) -> dict:
    """COCO of (record, box, kind) items: category ``Other`` of the known classes, the kind in
    each annotation's ``kind``, file names relative to ``root``."""
    categories = [{"id": i + 1, "name": c.abbr} for i, c in enumerate(KNOWN_CLASSES)]
    other_id = KNOWN_CLASSES.index(OTHER) + 1
    images: Dict[str, dict] = {}
    annotations: List[dict] = []
    for rec, box, kind in items:
        name = str(Path(rec["file_name"]).resolve().relative_to(root.resolve()))
        size = {"width": rec["width"], "height": rec["height"]}
        image = images.setdefault(name, {"id": len(images) + 1, "file_name": name, **size})
        x0, y0, x1, y1 = (float(v) for v in box)
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image["id"],
                "category_id": other_id,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
                "kind": kind,
            }
        )
    return {"images": list(images.values()), "annotations": annotations, "categories": categories}


def convert_non_cells(split: str, json_file: Path, seed: int = 0) -> None:
    """Converter of the built-in ``marrow_non_cells_<split>`` (see :data:`NON_CELL_SOURCES`)."""
    pbc_name, bccd_name = NON_CELL_SOURCES[split]
    rng = np.random.default_rng(seed)
    items = pbc_non_cells(DatasetCatalog.get(pbc_name), rng, PBC_SHARE)
    items += bccd_non_cells(DatasetCatalog.get(bccd_name), rng, RED_CELLS_PER_IMAGE)
    coco = non_cells_coco(items, shared_datasets_root())
    write_json_atomic(coco, json_file)
    logger.info(
        "marrow_non_cells_%s: %d boxes in %d images -> %s",
        split,
        len(coco["annotations"]),
        len(coco["images"]),
        json_file,
    )
