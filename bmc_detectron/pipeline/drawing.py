"""Fields drawn with detectron2's Visualizer in the classes' colours, and report thumbnails."""

from __future__ import annotations

import base64
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import Visualizer

from bmc_detectron.data.classes import KNOWN_CLASSES, OTHER

Color = Tuple[int, int, int]

# Uncertain cells are drawn in grey, their label marked with "?".
UNCERTAIN_COLOR: Color = (150, 150, 150)
_EXTRA_CLASSES: Dict[str, Tuple[str, Color]] = {
    "cell": ("nucleated cell", (40, 110, 200)),
}
# Colours of classes the project does not know (another detector's classes).
_FALLBACK: Sequence[Color] = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def class_info(class_names: Sequence[str]) -> Dict[str, Tuple[str, Color]]:
    """``class -> (full name, RGB colour)``: the known classes' own, else fixed fallbacks."""
    known = {c.abbr: (c.name, tuple(c.color)) for c in KNOWN_CLASSES}
    known.update(_EXTRA_CLASSES)
    out = {}
    for i, name in enumerate(class_names):
        out[name] = known.get(name, (name, _FALLBACK[i % len(_FALLBACK)]))
    return out


def field_metadata(class_names: Sequence[str]) -> Metadata:
    """Visualizer metadata: ``thing_classes`` and ``thing_colors`` of ``class_names``."""
    info = class_info(class_names)
    return Metadata(
        name="bmc_count",
        thing_classes=list(class_names),
        thing_colors=[info[c][1] for c in class_names],
    )


def draw_field(
    image_bgr: np.ndarray, cells: Sequence, class_names: Sequence[str], uncertain_below: float
) -> np.ndarray:
    """The field (RGB) with each cell's box and label; uncertain cells grey and marked "?", cells
    of no known type labelled Other in its colour."""
    meta = field_metadata(class_names)
    colors = dict(zip(meta.thing_classes, meta.thing_colors))
    colors.setdefault(OTHER.abbr, OTHER.color)
    vis = Visualizer(image_bgr[:, :, ::-1], meta, scale=1.0)
    if not cells:
        return vis.output.get_image()
    labels: List[str] = []
    assigned: List[np.ndarray] = []
    for cell in cells:
        unsure = cell.is_uncertain(uncertain_below)
        labels.append(f"{cell.label}{'?' if unsure else ''} {cell.prob:.0%}")
        color = UNCERTAIN_COLOR if unsure else colors.get(cell.label, _FALLBACK[0])
        assigned.append(np.asarray(color, dtype=np.float64) / 255.0)
    boxes = np.array([cell.box for cell in cells], dtype=np.float64)
    return vis.overlay_instances(boxes=boxes, labels=labels, assigned_colors=assigned).get_image()


def thumbnail_data_uri(image_rgb: np.ndarray, max_side: int = 480, quality: int = 85) -> str:
    """A JPEG ``data:`` URI of the image scaled down to at most ``max_side`` pixels."""
    h, w = image_rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image_rgb = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(image_rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("cannot encode the thumbnail as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
