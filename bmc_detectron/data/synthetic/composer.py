"""The composer shared by the synthetic generators: cells placed on a smear, boxes, photo, COCO.

A generator draws each cell as a :class:`RenderedCell` (a patch in optical density with its
coverage and pixel mask: :mod:`bmc_detectron.data.synthetic.procedural` draws them procedurally,
:mod:`bmc_detectron.data.synthetic.marrow` takes cells cut out of photos) and a background in
optical density; the composer places the cells, gives their boxes, turns the density into a photo
and writes the COCO split. It imports nothing of the generators.

Annotation rules:

* the box of a cell is the tight box of its drawn pixels (cytoplasm included), in XYXY pixel-edge
  coordinates (a cell covering pixel columns 3..7 has ``x0 = 3, x1 = 8``);
* cells may be cut by the image border: their box is the box of their *visible* pixels, and a cell
  with less than half of its pixels visible is not drawn at all (no unlabelled partial cells);
* nucleated cells may touch and overlap: box IoU up to ``max_iou`` (0.3 by default) and at most
  half of the smaller box covered; the cell placed later is drawn on top;
* whatever the background holds (mature red cells, platelets) is never annotated;
* dense generators (real-cell composites) bound overlaps by pixel masks instead
  (:class:`CellLayer`: a share of each cell's pixels; a cell's box is then the whole cell in the
  field, parts hidden under a later cell included).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import cv2
import numpy as np

from bmc_detectron.data.classes import MARROW_ABBRS, MARROW_COLORS, coco_categories
from bmc_detectron.utils.io import atomic_write_bytes

#: share of the density under a placed cell that the cell hides
CELL_OCCLUSION = 0.85
#: random positions tried for a cell before it is left out
PLACEMENT_TRIES = 40

Sample = Tuple[np.ndarray, ...]  # (RGB image, XYXY boxes, classes[, per-box extra keys])


@dataclass
class RenderedCell:
    """One cell drawn in a patch centred on the cell: density, coverage and pixel mask."""

    od: np.ndarray  # (h, w, 3) float32 optical density, zero outside ``mask``
    alpha: np.ndarray  # (h, w) float32 coverage in [0, 1], zero outside ``mask``
    mask: np.ndarray  # (h, w) bool: the drawn pixels (what the box is tight around)
    cls: int


def paste_patch(
    canvas: np.ndarray, patch: np.ndarray, alpha: np.ndarray, cx: int, cy: int, occlusion: float
) -> None:
    """Composite a density patch centred at (cx, cy): existing density is partly hidden."""
    h, w = alpha.shape
    y0, x0 = cy - h // 2, cx - w // 2
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(h, canvas.shape[0] - y0), min(w, canvas.shape[1] - x0)
    if ye <= ys or xe <= xs:
        return
    region = canvas[y0 + ys : y0 + ye, x0 + xs : x0 + xe]
    a = alpha[ys:ye, xs:xe, None]
    region *= 1.0 - occlusion * a
    region += patch[ys:ye, xs:xe]


def visible_box(cell: RenderedCell, cx: int, cy: int, height: int, width: int):
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


def overlap_ok(box: np.ndarray, boxes: List[np.ndarray], max_iou: float) -> bool:
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


def place_cell(
    rng: np.random.Generator,
    od: np.ndarray,
    cell: RenderedCell,
    boxes: List[np.ndarray],
    max_iou: float,
) -> np.ndarray | None:
    """Paste ``cell`` into ``od`` at a random free position; its box, or None if none was found.

    A position is free when at least half of the cell is visible and its box overlaps the
    already placed ``boxes`` no more than :func:`overlap_ok` allows.
    """
    height, width = od.shape[:2]
    for _ in range(PLACEMENT_TRIES):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        box, visible = visible_box(cell, cx, cy, height, width)
        if box is not None and visible >= 0.5 and overlap_ok(box, boxes, max_iou):
            paste_patch(od, cell.od, cell.alpha, cx, cy, CELL_OCCLUSION)
            return box
    return None


class CellLayer:
    """The nucleated cells placed on one field so far, with a bound on how much they overlap.

    For generators of dense fields (real-cell composites), by pixel masks rather than boxes:

    * a cell may share at most ``max_overlap`` of its pixels in the field with other cells
      (shared pixels: covered by two or more cells, whichever is on top); touching is free;
    * a cell with less than ``min_visible`` of its pixels inside the field is not placed;
    * :meth:`place` returns the cell's box: the tight XYXY box (pixel edges) of all its pixels
      inside the field, hidden under a later cell or not (the whole cell, clipped by the
      field border), as :func:`visible_box` gives it.
    """

    def __init__(self, height: int, width: int, max_overlap: float, min_visible: float = 0.5):
        self.height, self.width = height, width
        self.max_overlap, self.min_visible = float(max_overlap), float(min_visible)
        self.count = np.zeros((height, width), np.uint8)  # cells covering each pixel
        self.windows: List[Tuple[slice, slice]] = []  # each cell's pixels: field window ...
        self.masks: List[np.ndarray] = []  # ... and its mask there
        self.shared: List[int] = []  # pixels of each cell shared with another cell
        self.boxes: List[np.ndarray] = []

    def _window(self, cell: RenderedCell, cx: int, cy: int):
        h, w = cell.mask.shape
        y0, x0 = cy - h // 2, cx - w // 2
        ys, xs = max(0, -y0), max(0, -x0)
        ye, xe = min(h, self.height - y0), min(w, self.width - x0)
        if ye <= ys or xe <= xs:
            return None, None
        window = (slice(y0 + ys, y0 + ye), slice(x0 + xs, x0 + xe))
        return window, cell.mask[ys:ye, xs:xe]

    def _new_shared(self, k: int, window: Tuple[slice, slice], mask: np.ndarray) -> int:
        """Pixels of cell ``k`` that a new cell (``mask`` at ``window``) would newly share."""
        (ay, ax), (by, bx) = window, self.windows[k]
        y0, y1 = max(ay.start, by.start), min(ay.stop, by.stop)
        x0, x1 = max(ax.start, bx.start), min(ax.stop, bx.stop)
        if y1 <= y0 or x1 <= x0:
            return 0
        new = mask[y0 - ay.start : y1 - ay.start, x0 - ax.start : x1 - ax.start]
        old = self.masks[k][y0 - by.start : y1 - by.start, x0 - bx.start : x1 - bx.start]
        alone = self.count[y0:y1, x0:x1] == 1  # covered by cell k only, not yet shared
        return int(np.count_nonzero(new & old & alone))

    def fits(self, cell: RenderedCell, cx: int, cy: int) -> bool:
        """Whether ``cell`` centred at (cx, cy) keeps every cell within the rules."""
        window, mask = self._window(cell, cx, cy)
        if window is None:
            return False
        inside = int(np.count_nonzero(mask))
        if inside == 0 or inside < self.min_visible * np.count_nonzero(cell.mask):
            return False
        if np.count_nonzero(mask & (self.count[window] > 0)) > self.max_overlap * inside:
            return False
        for k in range(len(self.masks)):
            limit = self.max_overlap * np.count_nonzero(self.masks[k])
            if self.shared[k] + self._new_shared(k, window, mask) > limit:
                return False
        return True

    def place(self, cell: RenderedCell, cx: int, cy: int) -> np.ndarray | None:
        """Record ``cell`` at (cx, cy) if it :meth:`fits`; its box, or None."""
        if not self.fits(cell, cx, cy):
            return None
        window, mask = self._window(cell, cx, cy)
        for k in range(len(self.masks)):
            self.shared[k] += self._new_shared(k, window, mask)
        self.shared.append(int(np.count_nonzero(mask & (self.count[window] > 0))))
        self.count[window] += mask.astype(np.uint8)
        self.windows.append(window)
        self.masks.append(mask)
        box, _ = visible_box(cell, cx, cy, self.height, self.width)
        self.boxes.append(box)
        return box

    def overlap_shares(self) -> List[float]:
        """Per placed cell, the share of its pixels in the field shared with other cells."""
        return [s / max(1, int(np.count_nonzero(m))) for s, m in zip(self.shared, self.masks)]

    def crowding(self) -> List[str]:
        """Per placed cell: ``"overlapping"`` (shares pixels with another cell), ``"touching"``
        (a pixel of another cell is among its 8 neighbours) or ``"isolated"``."""
        out = []
        for k, (window, mask) in enumerate(zip(self.windows, self.masks)):
            if self.shared[k] > 0:
                out.append("overlapping")
                continue
            ys, xs = window
            y0, x0 = max(0, ys.start - 1), max(0, xs.start - 1)
            y1, x1 = min(self.height, ys.stop + 1), min(self.width, xs.stop + 1)
            own = np.zeros((y1 - y0, x1 - x0), np.uint8)
            own[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = mask
            ring = (cv2.dilate(own, np.ones((3, 3), np.uint8)) > 0) & (own == 0)
            out.append("touching" if (ring & (self.count[y0:y1, x0:x1] > 0)).any() else "isolated")
        return out


def clean_photo(od: np.ndarray) -> np.ndarray:
    """Optical density seen on plain white light: no stain variation, blur or noise."""
    return np.clip(255.0 * np.exp(-od) + 0.5, 0, 255).astype(np.uint8)


def stain_and_optics(rng: np.random.Generator, od: np.ndarray) -> np.ndarray:
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


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: images are independent of each other."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index)])


def coco_annotations(
    boxes: np.ndarray,
    classes: np.ndarray,
    image_id: int,
    first_id: int,
    extras: Sequence[Dict[str, object]] | None = None,
) -> List[Dict[str, object]]:
    """COCO annotations, ids from ``first_id``, of XYXY ``boxes`` (N, 4) and ``classes`` (N,);
    ``extras[k]`` (optional) adds its keys to annotation ``k``."""
    out: List[Dict[str, object]] = []
    for k, (box, cls) in enumerate(zip(boxes.tolist(), classes.tolist())):
        w, h = box[2] - box[0], box[3] - box[1]
        ann = {
            "id": first_id + k,
            "image_id": image_id,
            "category_id": cls + 1,
            "bbox": [box[0], box[1], w, h],
            "area": w * h,
            "iscrowd": 0,
        }
        if extras is not None:
            ann.update(extras[k])
        out.append(ann)
    return out


def _png_bytes(image: np.ndarray, name: str) -> bytes:
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {name}")
    return png.tobytes()


def write_coco_split(
    out_dir: Union[str, Path], split: str, samples: Iterable[Sample], info: Dict[str, object]
) -> Path:
    """Write ``out_dir/<split>/NNNNNN.png`` and the COCO json ``out_dir/annotations/<split>.json``.

    ``samples`` yields (RGB image, XYXY boxes, class indices), optionally with a fourth item:
    per-box dicts of extra annotation keys; each image is written as it comes. ``info`` is
    serialised after the last sample, so a generator may complete it with statistics of its
    samples. Category ids are class index + 1 (``classes.coco_categories()``). Returns the json
    path.
    """
    out_dir = Path(out_dir)
    images: List[Dict[str, object]] = []
    annotations: List[Dict[str, object]] = []
    for i, sample in enumerate(samples):
        image, boxes, classes = sample[:3]
        extras = sample[3] if len(sample) > 3 else None
        name = f"{i:06d}.png"
        atomic_write_bytes(out_dir / split / name, _png_bytes(image, name))
        height, width = image.shape[:2]
        images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        first = len(annotations) + 1
        annotations.extend(coco_annotations(boxes, classes, i + 1, first, extras))
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


def write_mosaic(path: Union[str, Path], tiles: Sequence[np.ndarray], cols: int) -> Path:
    """Write equal-sized RGB ``tiles`` as a PNG grid of ``cols`` columns, 4 px white gaps."""
    height = tiles[0].shape[0]
    pad = np.full((height, 4, 3), 255, np.uint8)
    rows = len(tiles) // cols
    lines = [
        np.hstack([t for k in range(cols) for t in (tiles[r * cols + k], pad)]) for r in range(rows)
    ]
    grid = np.vstack([np.vstack([ln, np.full((4, ln.shape[1], 3), 255, np.uint8)]) for ln in lines])
    atomic_write_bytes(Path(path), _png_bytes(grid, str(path)))
    return Path(path)
