"""Synthetic May-Grünwald-Giemsa bone-marrow smears: the project's embedded default dataset.

Each image is a pale pinkish smear crowded with *unlabelled* mature red cells (pale discs with a
lighter centre) and a few platelets, on which nucleated cells of the 11 classes of
:mod:`bmc_detectron.data.classes` are drawn with their distinguishing traits (see
:mod:`bmc_detectron.data.synthetic_cells`). Every image gets its own stain and illumination
(hue / saturation / brightness shift, vignette or gradient, mild blur and noise).

Annotation rules:

* the box of a cell is the tight box of its drawn pixels (cytoplasm included), in XYXY pixel-edge
  coordinates (a cell covering pixel columns 3..7 has ``x0 = 3, x1 = 8``);
* cells may be cut by the image border: their box is the box of their *visible* pixels, and a cell
  with less than half of its pixels visible is not drawn at all (no unlabelled partial cells);
* nucleated cells may touch and overlap: box IoU up to ``max_iou`` (0.3) and at most half of the
  smaller box covered; the cell placed later is drawn on top;
* mature red cells and platelets are distractors and are never annotated.

Cell sizes scale with ``scale``: the mean nucleated-cell diameter is about
``MEAN_CELL_DIAMETER * scale`` pixels (29 px at scale 1, i.e. 18-48 px over the classes).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np

from bmc_detectron.data.classes import MARROW_ABBRS, MARROW_COLORS, coco_categories
from bmc_detectron.data.synthetic_cells import (
    CELL_STYLES,
    MEAN_DIAMETERS,
    RenderedCell,
    coverage,
    paste_patch,
    rbc_sprite,
    render_cell,
    rgb_to_od,
    smooth_noise,
)
from bmc_detectron.utils.io import atomic_write_bytes

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
RBC_DIAMETER = (14.0, 18.0)  # mature red cells at scale 1
_BACKGROUND_RGB = (246, 236, 240)
_RBC_RGB = (236, 168, 174)
_PLATELET_RGB = (150, 95, 165)


def default_scale(height: int, width: int) -> float:
    """Cell scale for an image size: 1 at 256 px, growing as the square root of the short side."""
    return float(np.sqrt(min(height, width) / 256.0))


def default_cells_per_image(height: int, width: int, scale: float) -> Tuple[int, int]:
    """6-14 cells at 256x256 and scale 1, proportional to the image area in cell areas."""
    f = height * width / (256.0 * 256.0) / (scale * scale)
    return max(1, int(round(6 * f))), max(1, int(round(14 * f)))


def _platelet(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Coverage of a platelet: a small granular purple dot."""
    d = rng.uniform(2.5, 4.5) * scale
    size = int(np.ceil(d)) + 2
    yy, xx = np.mgrid[-size : size + 1, -size : size + 1].astype(np.float32)
    return coverage(np.hypot(xx, yy) - 0.5 * d) * (0.6 + 0.4 * rng.random(xx.shape))


def _smear_background(rng: np.random.Generator, height: int, width: int, scale: float):
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


def _visible_box(cell: RenderedCell, cx: int, cy: int, height: int, width: int):
    """Tight XYXY box of the cell's visible pixels and the visible share of its pixels."""
    h, w = cell.mask.shape
    y0, x0 = cy - h // 2, cx - w // 2
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(h, height - y0), min(w, width - x0)
    if ye <= ys or xe <= xs:
        return None, 0.0
    vis = cell.mask[ys:ye, xs:xe]
    rows, cols = np.flatnonzero(vis.any(axis=1)), np.flatnonzero(vis.any(axis=0))
    if rows.size == 0:
        return None, 0.0
    box = np.array(
        [x0 + xs + cols[0], y0 + ys + rows[0], x0 + xs + cols[-1] + 1, y0 + ys + rows[-1] + 1],
        np.float32,
    )
    return box, float(vis.sum()) / float(cell.mask.sum())


def _overlap_ok(box: np.ndarray, boxes: List[np.ndarray], max_iou: float) -> bool:
    """IoU with every placed box <= ``max_iou`` and at most half of the smaller box shared."""
    if not boxes:
        return True
    others = np.stack(boxes)
    iw = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    iou = inter / (area + areas - inter)
    return bool(np.all(iou <= max_iou) and np.all(inter <= 0.5 * np.minimum(area, areas)))


def _stain_and_optics(rng: np.random.Generator, od: np.ndarray) -> np.ndarray:
    """Turn optical density into an RGB photo with this image's stain, light and camera."""
    height, width = od.shape[:2]
    gain = rng.uniform(0.85, 1.15) * (1.0 + 0.05 * rng.standard_normal(3))
    side = float(max(height, width))
    yy = (np.arange(height, dtype=np.float32) - 0.5 * height)[:, None] / side
    xx = (np.arange(width, dtype=np.float32) - 0.5 * width)[None, :] / side
    if rng.random() < 0.5:  # vignette around an off-centre point
        cx, cy = rng.uniform(-0.2, 0.2, 2)
        light = 1.0 - rng.uniform(0.0, 0.35) * ((xx - cx) ** 2 + (yy - cy) ** 2)
    else:  # linear gradient
        ang = rng.uniform(0, 2 * np.pi)
        light = 1.0 + rng.uniform(0.0, 0.12) * (xx * np.cos(ang) + yy * np.sin(ang))
    lamp = rng.uniform(0.92, 1.0) * (1.0 + 0.02 * rng.standard_normal(3))
    rgb = np.exp(-od * gain.astype(np.float32))
    rgb *= (255.0 * light)[..., None] * lamp.astype(np.float32)
    img = np.clip(rgb, 0, 255).astype(np.uint8)

    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-5, 6))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.85, 1.2), 0, 255)
    img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)

    out = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.35, 0.9))
    out += rng.standard_normal(out.shape, dtype=np.float32) * rng.uniform(1.0, 3.5)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


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

    ``cells_per_image`` is the inclusive range of the number of nucleated cells (fewer only when
    the image is too crowded to place them); ``class_probs`` overrides
    :data:`CLASS_FREQUENCIES`. ``clean=True`` draws the cells alone on a white canvas, without
    smear background, stain variation, blur or noise (for tests and illustrations).
    """
    probs = np.asarray(CLASS_FREQUENCIES if class_probs is None else class_probs, np.float64)
    probs = probs / probs.sum()
    zoom = 1.0 if clean else rng.uniform(0.93, 1.07)
    od = (
        np.zeros((height, width, 3), np.float32)
        if clean
        else _smear_background(rng, height, width, scale * zoom)
    )
    n = int(rng.integers(cells_per_image[0], cells_per_image[1] + 1))
    boxes: List[np.ndarray] = []
    classes: List[int] = []
    for cls in rng.choice(len(probs), size=n, p=probs):
        lo, hi = CELL_STYLES[cls].diameter
        cell = render_cell(rng, int(cls), rng.uniform(lo, hi) * scale * zoom)
        for _ in range(40):
            cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
            box, visible = _visible_box(cell, cx, cy, height, width)
            if box is not None and visible >= 0.5 and _overlap_ok(box, boxes, max_iou):
                paste_patch(od, cell.od, cell.alpha, cx, cy, 0.85)
                boxes.append(box)
                classes.append(int(cls))
                break
    if clean:
        image = np.clip(255.0 * np.exp(-od) + 0.5, 0, 255).astype(np.uint8)
    else:
        image = _stain_and_optics(rng, od)
    box_arr = np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)
    return image, box_arr, np.asarray(classes, np.int64)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: images are independent of each other."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index)])


def _coco_annotations(
    boxes: np.ndarray, classes: np.ndarray, image_id: int, first_id: int
) -> List[Dict[str, object]]:
    """COCO annotations, ids from ``first_id``, of XYXY ``boxes`` (N, 4) and ``classes`` (N,)."""
    out: List[Dict[str, object]] = []
    for k, (box, cls) in enumerate(zip(boxes.tolist(), classes.tolist())):
        w, h = box[2] - box[0], box[3] - box[1]
        out.append(
            {
                "id": first_id + k,
                "image_id": image_id,
                "category_id": cls + 1,
                "bbox": [box[0], box[1], w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    return out


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
    path. Category ids are class index + 1 (``classes.coco_categories()``).
    """
    out_dir = Path(out_dir)
    scale = default_scale(height, width) if scale is None else float(scale)
    if cells_per_image is None:
        cells_per_image = default_cells_per_image(height, width, scale)
    images: List[Dict[str, object]] = []
    annotations: List[Dict[str, object]] = []
    for i in range(num_images):
        image, boxes, classes = generate_image(
            image_rng(seed, split, i), height, width, cells_per_image, scale
        )
        name = f"{i:06d}.png"
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {name}")
        atomic_write_bytes(out_dir / split / name, png.tobytes())
        images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        annotations.extend(_coco_annotations(boxes, classes, i + 1, len(annotations) + 1))
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
    coco = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    json_path = out_dir / "annotations" / f"{split}.json"
    atomic_write_bytes(json_path, json.dumps(coco, indent=1).encode())
    return json_path


def draw_boxes(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with class-coloured boxes and abbreviations (for previews)."""
    out = image.copy()
    for (x0, y0, x1, y1), cls in zip(boxes.astype(int).tolist(), classes.tolist()):
        color = tuple(int(c) for c in MARROW_COLORS[cls])
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, 1)
        cv2.putText(
            out,
            MARROW_ABBRS[cls],
            (x0 + 1, max(y0 - 2, 8)),
            cv2.FONT_HERSHEY_PLAIN,
            0.7,
            color,
            1,
            cv2.LINE_AA,
        )
    return out


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
    pad = np.full((height, 4, 3), 255, np.uint8)
    lines = [
        np.hstack([t for k in range(cols) for t in (tiles[r * cols + k], pad)]) for r in range(rows)
    ]
    grid = np.vstack([np.vstack([ln, np.full((4, ln.shape[1], 3), 255, np.uint8)]) for ln in lines])
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    atomic_write_bytes(Path(path), png.tobytes())
    return Path(path)
