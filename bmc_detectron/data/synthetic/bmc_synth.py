"""Synthetic May-Grünwald-Giemsa bone-marrow smears (``bmc_synth``): the embedded default dataset.

Each image is a pale pinkish smear crowded with *unlabelled* mature red cells (pale discs with a
lighter centre) and a few platelets, on which nucleated cells of the 11 marrow classes of
:mod:`bmc_detectron.data.classes` are drawn with their distinguishing traits (see
:mod:`bmc_detectron.data.synthetic.procedural`). Every image gets its own stain and illumination
(hue / saturation / brightness shift, vignette or gradient, mild blur and noise). The cells are
placed, boxed and written by :mod:`bmc_detectron.data.synthetic.composer` (its docstring gives
the annotation rules).

Cell sizes scale with ``scale``: the mean nucleated-cell diameter is about
``MEAN_CELL_DIAMETER * scale`` pixels (29 px at scale 1, i.e. 18-48 px over the classes).

**Pixel size.** Red cells are drawn ``RBC_DIAMETER`` = 14-18 px across at scale 1, 16 px on
average, and a mature red cell is 7.5 um: so scale 1 means :data:`MICRONS_PER_PIXEL_AT_SCALE_1`
= 7.5 / 16 = 0.46875 um/px, and scale ``s`` means ``0.46875 / s`` (:func:`microns_per_pixel`;
256 px images have scale 1, 512 px ones scale 1.41, 0.33 um/px). Each field is further zoomed by
a factor drawn from :data:`FIELD_ZOOM` (0.93-1.07), so a field's own pixel size is that of its
split divided by its zoom. :func:`generate_dataset` writes the split's pixel size (zoom 1), its
red-cell diameter and the distribution of the nucleated-cell diameters (equivalent-circle
diameter of each placed cell's mask, px) to the COCO ``info["profile"]`` (the schema of
:mod:`bmc_detectron.smear.known_scale`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Sequence, Tuple, Union

import numpy as np

from bmc_detectron.data.synthetic.composer import (
    clean_photo,
    draw_boxes,
    image_rng,
    place_cell,
    stain_and_optics,
    write_coco_split,
    write_mosaic,
)
from bmc_detectron.data.synthetic.procedural import (
    CELL_STYLES,
    MEAN_DIAMETERS,
    RBC_DIAMETER,
    render_cell,
    smear_background,
)
from bmc_detectron.smear.known_scale import generator_profile, mask_diameter
from bmc_detectron.smear.profile import NOMINAL_RBC_MICRONS

#: Share of each class among nucleated cells, in ``MARROW_CLASSES`` order. The idea: a normal
#: adult marrow differential (erythroid precursors ~20-25 %, the neutrophil lineage from
#: promyelocyte to segmented cell ~40-45 %, lymphocytes ~10-15 %, eosinophils 2-4 %, monocytes
#: and plasma cells rare) with blasts enriched to ~12 % as in a leukaemia work-up.
CLASS_FREQUENCIES: Tuple[float, ...] = (
    0.12,
    0.14,
    0.03,
    0.02,
    0.22,
    0.05,
    0.10,
    0.09,
    0.10,
    0.09,
    0.04,
)
MEAN_CELL_DIAMETER = float(
    np.dot(CLASS_FREQUENCIES, [MEAN_DIAMETERS[i] for i in range(len(CELL_STYLES))])
)

#: um per pixel at scale 1: a mean red cell (``RBC_DIAMETER``, px) is 7.5 um (module doc)
MICRONS_PER_PIXEL_AT_SCALE_1 = NOMINAL_RBC_MICRONS / float(np.mean(RBC_DIAMETER))
#: range of the per-field zoom drawn on top of ``scale`` (smear images only, not ``clean``)
FIELD_ZOOM: Tuple[float, float] = (0.93, 1.07)


def microns_per_pixel(scale: float, zoom: float = 1.0) -> float:
    """The pixel size (um/px) that cell scale ``scale`` (and a field's ``zoom``) means."""
    return MICRONS_PER_PIXEL_AT_SCALE_1 / (float(scale) * float(zoom))


class SmearField(NamedTuple):
    """One drawn smear: RGB uint8 image, (N, 4) float32 XYXY boxes, (N,) int64 classes, the
    field's zoom (its red cells are ``RBC_DIAMETER * scale * zoom`` px) and the placed cells'
    equivalent-circle diameters (px)."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    zoom: float
    cell_diameters: List[float]


def default_scale(height: int, width: int) -> float:
    """Cell scale for an image size: 1 at 256 px, growing as the square root of the short side."""
    return float(np.sqrt(min(height, width) / 256.0))


def default_cells_per_image(height: int, width: int, scale: float) -> Tuple[int, int]:
    """6-14 cells at 256x256 and scale 1, proportional to the image area in cell areas."""
    f = height * width / (256.0 * 256.0) / (scale * scale)
    return max(1, int(round(6 * f))), max(1, int(round(14 * f)))


def draw_smear(
    rng: np.random.Generator,
    height: int,
    width: int,
    cells_per_image: Tuple[int, int] = (6, 14),
    scale: float = 1.0,
    *,
    class_probs: Sequence[float] | None = None,
    max_iou: float = 0.3,
    clean: bool = False,
) -> SmearField:
    """Draw one smear (:class:`SmearField`); :func:`generate_image` gives its first three items.

    ``cells_per_image`` is the inclusive range of the number of nucleated cells (fewer only when
    the image is too crowded to place them); ``class_probs`` overrides
    :data:`CLASS_FREQUENCIES`. ``clean=True`` draws the cells alone on a white canvas, without
    smear background, stain variation, blur or noise (for tests and illustrations).
    """
    probs = np.asarray(CLASS_FREQUENCIES if class_probs is None else class_probs, np.float64)
    probs = probs / probs.sum()
    zoom = 1.0 if clean else float(rng.uniform(*FIELD_ZOOM))
    od = (
        np.zeros((height, width, 3), np.float32)
        if clean
        else smear_background(rng, height, width, scale * zoom)
    )
    n = int(rng.integers(cells_per_image[0], cells_per_image[1] + 1))
    boxes: List[np.ndarray] = []
    classes: List[int] = []
    diameters: List[float] = []
    for cls in rng.choice(len(probs), size=n, p=probs):
        lo, hi = CELL_STYLES[cls].diameter
        cell = render_cell(rng, int(cls), rng.uniform(lo, hi) * scale * zoom)
        box = place_cell(rng, od, cell, boxes, max_iou)
        if box is not None:
            boxes.append(box)
            classes.append(int(cls))
            diameters.append(mask_diameter(cell.mask))
    image = clean_photo(od) if clean else stain_and_optics(rng, od)
    box_arr = np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)
    return SmearField(image, box_arr, np.asarray(classes, np.int64), zoom, diameters)


def generate_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    cells_per_image: Tuple[int, int] = (6, 14),
    scale: float = 1.0,
    *,
    class_probs: Sequence[float] | None = None,
    max_iou: float = 0.3,
    clean: bool = False,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one smear; return (HxWx3 uint8 RGB image, Nx4 float32 XYXY boxes, N int64 classes).
    The arguments are those of :func:`draw_smear`."""
    field = draw_smear(
        rng,
        height,
        width,
        cells_per_image,
        scale,
        class_probs=class_probs,
        max_iou=max_iou,
        clean=clean,
    )
    return field.image, field.boxes, field.classes


def generate_dataset(
    out_dir: Union[str, Path],
    split: str,
    num_images: int,
    seed: int,
    height: int = 256,
    width: int = 256,
    cells_per_image: Tuple[int, int] | None = None,
    scale: float | None = None,
) -> Path:
    """Write ``out_dir/<split>/NNNNNN.png`` and the COCO json ``out_dir/annotations/<split>.json``.

    ``scale`` defaults to :func:`default_scale` and ``cells_per_image`` to
    :func:`default_cells_per_image`. Same arguments give byte-identical files. Returns the json
    path. ``info["profile"]`` holds the pixel size, red-cell and nucleated-cell diameters.
    Category ids are class index + 1 (``classes.coco_categories()``).
    """
    scale = default_scale(height, width) if scale is None else float(scale)
    if cells_per_image is None:
        cells_per_image = default_cells_per_image(height, width, scale)
    diameters: List[float] = []
    info = {
        "description": "bmc-detectron synthetic MGG bone-marrow smears",
        "split": split,
        "seed": int(seed),
        "height": height,
        "width": width,
        "scale": scale,
        "cells_per_image": list(cells_per_image),
        "class_frequencies": list(CLASS_FREQUENCIES),
    }

    def samples():
        for i in range(num_images):
            field = draw_smear(image_rng(seed, split, i), height, width, cells_per_image, scale)
            diameters.extend(field.cell_diameters)
            yield field.image, field.boxes, field.classes
        # write_coco_split serialises info after the last sample: complete it here
        info["profile"] = generator_profile(
            microns_per_pixel(scale),
            float(np.mean(RBC_DIAMETER)) * scale,
            diameters,
            field_zoom=list(FIELD_ZOOM),
        )

    return write_coco_split(out_dir, split, samples(), info)


def preview_mosaic(
    path: Union[str, Path],
    seed: int = 0,
    rows: int = 2,
    cols: int = 4,
    height: int = 256,
    width: int = 256,
    boxes: bool = True,
) -> Path:
    """Write a PNG grid of generated images (boxes and class names drawn on the lower row)."""
    scale = default_scale(height, width)
    cells = default_cells_per_image(height, width, scale)
    tiles = []
    for i in range(rows * cols):
        image, b, c = generate_image(image_rng(seed, "preview", i), height, width, cells, scale)
        tiles.append(draw_boxes(image, b, c) if boxes and i >= cols * (rows // 2) else image)
    return write_mosaic(path, tiles, cols)
