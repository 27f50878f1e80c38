"""Pre-annotations out (Label Studio tasks, LabelMe files) and corrections back in.

Boxes travel as :class:`Labelled`: an image name, its size and ``(label, xyxy, score)`` boxes in
pixels. Label Studio stores a rectangle in percent of the image (``x``, ``y``, ``width``,
``height``, 0..100, top-left corner) next to ``original_width`` / ``original_height``; LabelMe
stores the two corners in pixels. LabelMe and COCO files are read back by the converters of
:mod:`bmc_detectron.data.convert` (see :mod:`bmc_detectron.active.merge`); Label Studio exports
are parsed here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, unquote, urlparse

Box = Tuple[float, float, float, float]
# Label Studio prefixes uploaded files with 8 hex digits and a dash.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


@dataclass
class Labelled:
    """One image's boxes: ``(label, (x0, y0, x1, y1) pixels, score or None)`` each."""

    image: str
    width: Optional[int]
    height: Optional[int]
    boxes: List[Tuple[str, Box, Optional[float]]] = field(default_factory=list)
    source: str = ""


def _pct(value: float, size: int) -> float:
    return round(100.0 * float(value) / float(size), 4)


def label_studio_task(
    item: Labelled, image_ref: str, model_version: str, image_score: float | None = None
) -> Dict[str, object]:
    """A Label Studio task with the boxes as a prediction (``rectanglelabels``, percent)."""
    width, height = int(item.width), int(item.height)
    result = []
    for n, (label, (x0, y0, x1, y1), score) in enumerate(item.boxes):
        value = {"x": _pct(x0, width), "y": _pct(y0, height)}
        value.update(width=_pct(x1 - x0, width), height=_pct(y1 - y0, height), rotation=0)
        value["rectanglelabels"] = [label]
        region = {"id": f"bmc{n}", "type": "rectanglelabels", "from_name": "label"}
        region.update(to_name="image", original_width=width, original_height=height)
        region.update(image_rotation=0, value=value)
        if score is not None:
            region["score"] = round(float(score), 6)
        result.append(region)
    prediction: Dict[str, object] = {"model_version": model_version, "result": result}
    if image_score is not None:
        prediction["score"] = float(image_score)
    return {"data": {"image": image_ref}, "predictions": [prediction]}


def labelme_file(item: Labelled, image_path: str) -> Dict[str, object]:
    """A LabelMe document (``rectangle`` shapes) for one image; ``image_path`` as LabelMe keeps
    it (relative to the json file)."""
    shapes = []
    for label, (x0, y0, x1, y1), score in item.boxes:
        shape = {"label": label, "points": [[float(x0), float(y0)], [float(x1), float(y1)]]}
        shape.update(group_id=None, shape_type="rectangle", flags={})
        shape["description"] = "" if score is None else f"score={float(score):.4f}"
        shapes.append(shape)
    doc = {"version": "5.2.1", "flags": {}, "shapes": shapes, "imagePath": image_path}
    doc.update(imageData=None, imageHeight=int(item.height), imageWidth=int(item.width))
    return doc


def image_name_candidates(ref: str) -> List[str]:
    """File names a Label Studio image reference may stand for, most likely first.

    Handles plain paths, URLs, ``/data/local-files/?d=dir/x.png`` and uploads
    (``/data/upload/3/8f1e2a3b-x.png`` -> ``8f1e2a3b-x.png``, then ``x.png``).
    """
    parsed = urlparse(str(ref))
    path = parse_qs(parsed.query).get("d", [parsed.path or str(ref)])[0]
    name = os.path.basename(unquote(path).replace("\\", "/"))
    names = [name]
    if _UPLOAD_PREFIX.match(name):
        names.append(_UPLOAD_PREFIX.sub("", name, count=1))
    return names


def _chosen_annotation(task: Dict) -> Optional[Dict]:
    """The last annotation of a task that was not cancelled (None without one)."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    return done[-1] if done else None


def _region_box(region: Dict, where: str) -> Tuple[str, Box, int, int]:
    value = region.get("value") or {}
    labels = value.get("rectanglelabels") or []
    if len(labels) != 1:
        raise ValueError(f"{where}: a rectangle needs exactly one label, has {labels}")
    try:
        width, height = int(region["original_width"]), int(region["original_height"])
        x, y = float(value["x"]) * width / 100.0, float(value["y"]) * height / 100.0
        w, h = float(value["width"]) * width / 100.0, float(value["height"]) * height / 100.0
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: rectangle without x/y/width/height/original size") from None
    if float(value.get("rotation") or 0.0) != 0.0:
        raise ValueError(f"{where}: rotated rectangles are not supported")
    return str(labels[0]), (x, y, x + w, y + h), width, height


def read_label_studio(tasks: Sequence[Dict], source: str) -> Tuple[List[Labelled], List[str]]:
    """Corrected boxes from a Label Studio JSON export: (one Labelled per task, notes).

    Uses each task's last non-cancelled annotation (a task without one is noted and left out:
    a prediction nobody looked at is not a label). Non-rectangle regions are noted and skipped.
    ``Labelled.image`` is the first of :func:`image_name_candidates`.
    """
    out, notes = [], []
    for t, task in enumerate(tasks):
        data = task.get("data") or {}
        ref = data.get("image") or next(iter(data.values()), None)
        if not ref:
            raise ValueError(f"{source}: task {t} has no image in 'data'")
        where = f"{source}: task {task.get('id', t)} ({ref})"
        ann = _chosen_annotation(task)
        if ann is None:
            notes.append(f"{where}: no finished annotation; left out")
            continue
        item = Labelled(image_name_candidates(ref)[0], None, None, source=str(source))
        for region in ann.get("result") or []:
            if region.get("type") != "rectanglelabels":
                notes.append(f"{where}: region of type {region.get('type')!r} skipped")
                continue
            label, box, width, height = _region_box(region, where)
            item.width, item.height = width, height
            item.boxes.append((label, box, None))
        out.append(item)
    return out, notes
