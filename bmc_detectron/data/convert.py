"""Convert Pascal VOC XML, YOLO txt and LabelMe json annotations to COCO json.

Library: :func:`voc_to_coco`, :func:`yolo_to_coco`, :func:`labelme_to_coco` (each returns a COCO
dict) and :func:`write_json_atomic`. Command line: ``bmc convert``
(:mod:`bmc_detectron.tools.convert`).

Category ids are ``1..K`` in ``classes`` order (given, else the sorted names found); ``bbox`` is
``[x, y, w, h]`` in float pixels; ``file_name`` is relative to the image folder (the image root
to register the json with). VOC boxes are 1-based inclusive, converted as detectron2 does
(``xmin - 1, ymin - 1, xmax, ymax``). ``coco["info"]["report"]`` holds the
:class:`~bmc_detectron.data.checks.DefectReport` lists (dropped / clipped boxes by file and
coordinates, notes, images left empty) and ``counts`` (``images``, ``annotations``, ``dropped``,
``clipped``, ``images_without_annotations``, ``per_class``).
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from bmc_detectron.data.checks import DefectReport, clean_box, inspect_image
from bmc_detectron.data.classes import KNOWN_ABBRS, KNOWN_NAMES
from bmc_detectron.utils.io import atomic_write_bytes, write_json_atomic  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# One parsed object: (label, absolute xyxy box or None if already known degenerate, raw box).
_Obj = Tuple[str, Optional[Tuple[float, float, float, float]], List[float]]


class _Image:
    """One parsed image: file name relative to the image root, size, source file, objects."""

    def __init__(self, file_name: str, width: int, height: int, source: str):
        self.file_name, self.width, self.height, self.source = file_name, width, height, source
        self.objects: List[_Obj] = []


def read_image_list(path: PathLike) -> List[str]:
    """Image ids (file stems) from a list file such as VOC ``ImageSets/Main/train.txt``.

    One id per line (the first token; VOC per-class lists add a flag after it); blank lines and
    ``#`` comments are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: image list not found")
    ids = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line.split()[0])
    return ids


def _find_image(image_dir: Path, stem: str, preferred: str | None = None) -> Path | None:
    if preferred and (image_dir / preferred).is_file():
        return image_dir / preferred
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        if (image_dir / (stem + ext)).is_file():
            return image_dir / (stem + ext)
    return None


def _require_dirs(*dirs: Path | None) -> None:
    for d in dirs:
        if d is not None and not d.is_dir():
            raise ValueError(f"{d}: folder not found")


def _select(files: List[Path], image_ids: Iterable[str] | None) -> List[Path]:
    """Keep the files whose stem is in ``image_ids`` (all when None)."""
    if image_ids is None:
        return files
    wanted = set(image_ids)
    return [p for p in files if p.stem in wanted]


def _image_size(path: Path, source: PathLike) -> Tuple[int, int]:
    size, problem = inspect_image(str(path))
    if problem:
        raise ValueError(f"{path}: {problem} (image of {source})")
    return size


def _note_size(report: DefectReport, source: Path, recorded, width: int, height: int) -> None:
    """Note a recorded (w, h) that differs from the real image size (which is used)."""
    w, h = (str(v) for v in recorded)
    if w not in ("None", "0") and (w, h) != (str(width), str(height)):
        report.note(
            f"{source}: records {w}x{h} but the image is {width}x{height}; using the latter"
        )


def _resolve_classes(
    images: List[_Image], classes: Sequence[str] | None
) -> Tuple[List[str], Dict[str, int]]:
    """Category names and ``name -> id``; unknown names are an error when classes were given."""
    if classes is None:
        names = sorted({obj[0] for im in images for obj in im.objects})
    else:
        names = list(classes)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate class names in {names}")
        for im in images:
            for label, _, _ in im.objects:
                if label not in names:
                    raise ValueError(f"{im.source}: unknown class '{label}' (classes: {names})")
    return names, {n: i + 1 for i, n in enumerate(names)}


def _categories(names: List[str]) -> List[Dict]:
    cats = []
    for i, name in enumerate(names):
        cat = {"id": i + 1, "name": name, "supercategory": "cell"}
        if name in KNOWN_ABBRS:
            cat["full_name"] = KNOWN_NAMES[KNOWN_ABBRS.index(name)]
        cats.append(cat)
    return cats


def _build_coco(
    images: List[_Image],
    classes: Sequence[str] | None,
    fmt: str,
    source: PathLike,
    image_root: PathLike,
    report: DefectReport,
) -> Dict:
    """Number images and boxes, apply the box policy, fill the report."""
    names, cat_ids = _resolve_classes(images, classes)
    coco_images, anns = [], []
    per_class = {n: 0 for n in names}
    for img_id, im in enumerate(sorted(images, key=lambda i: i.file_name), start=1):
        coco_images.append({"id": img_id, "file_name": im.file_name})
        coco_images[-1].update(width=im.width, height=im.height)
        n_before = len(anns)
        for label, xyxy, raw in im.objects:
            box, status = clean_box(xyxy, im.width, im.height) if xyxy else (None, "zero_area")
            if status != "ok":
                report.box(status, im.source, label, raw, im.width, im.height)
            if box is not None:
                x, y, w, h = (
                    round(v, 4) for v in (box[0], box[1], box[2] - box[0], box[3] - box[1])
                )
                ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": cat_ids[label]}
                anns.append(dict(ann, bbox=[x, y, w, h], area=round(w * h, 4), iscrowd=0))
                per_class[label] += 1
        if len(anns) == n_before:
            report.empty_images.append(im.file_name)
    counts = {"images": len(coco_images), "annotations": len(anns)}
    counts.update(dropped=len(report.dropped), clipped=len(report.clipped))
    counts.update(images_without_annotations=len(report.empty_images), per_class=per_class)
    info = {"description": f"converted from {fmt} by bmc_detectron.data.convert", "format": fmt}
    info.update(source=str(source), image_root=str(image_root))
    info["report"] = dict(report.as_dict(), counts=counts)
    return {
        "info": info,
        "images": coco_images,
        "annotations": anns,
        "categories": _categories(names),
    }


def _parse_voc(xml_path: Path, image_dir: Path, report: DefectReport) -> _Image:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{xml_path}: not valid XML ({e})") from None
    image_path = _find_image(image_dir, xml_path.stem, root.findtext("filename"))
    if image_path is None:
        raise ValueError(f"{xml_path}: image file not found in {image_dir}")
    width, height = _image_size(image_path, xml_path)
    recorded = (root.findtext("size/width"), root.findtext("size/height"))
    _note_size(report, xml_path, recorded, width, height)
    im = _Image(image_path.name, width, height, str(xml_path))
    for obj in root.findall("object"):
        label = (obj.findtext("name") or "").strip()
        if not label:
            raise ValueError(f"{xml_path}: an <object> has no <name>")
        try:
            raw = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise ValueError(f"{xml_path}: {label} object has no valid <bndbox>") from None
        # A box with xmax <= xmin (a click, not a drag) is degenerate in any pixel convention.
        ok = raw[2] > raw[0] and raw[3] > raw[1]
        xyxy = (raw[0] - 1.0, raw[1] - 1.0, raw[2], raw[3]) if ok else None
        im.objects.append((label, xyxy, raw))
    return im


def voc_to_coco(
    ann_dir: PathLike,
    image_dir: PathLike,
    classes: Sequence[str] | None = None,
    image_ids: Iterable[str] | None = None,
) -> Dict:
    """Convert a folder of Pascal VOC XML files (or only ``image_ids``, file stems) to COCO.

    Image sizes come from the image files (a different ``<size>`` is noted in the report).
    Raises ``ValueError`` naming the file for: invalid XML, missing image, missing XML for a
    listed id, an unknown class when ``classes`` is given.
    """
    ann_dir, image_dir = Path(ann_dir), Path(image_dir)
    _require_dirs(ann_dir, image_dir)
    if image_ids is None:
        xml_files = sorted(ann_dir.glob("*.xml"))
    else:
        xml_files = [ann_dir / f"{i}.xml" for i in image_ids]
        for f in xml_files:
            if not f.is_file():
                raise ValueError(f"{f}: annotation file not found (listed image id)")
    report = DefectReport()
    images = [_parse_voc(f, image_dir, report) for f in xml_files]
    return _build_coco(images, classes, "voc", ann_dir, image_dir, report)


def _parse_yolo_line(line: str, where: str, n_classes: int) -> Tuple[int, List[float]]:
    parts = line.split()
    try:
        cls, values = int(parts[0]), [float(v) for v in parts[1:]]
    except ValueError:
        raise ValueError(f"{where}: cannot parse '{line}'") from None
    if len(values) < 4 or (len(values) > 4 and len(values) % 2):
        raise ValueError(f"{where}: expected 'class cx cy w h' or a polygon, got '{line}'")
    if not 0 <= cls < n_classes:
        raise ValueError(f"{where}: unknown class id {cls} (class_names has {n_classes})")
    return cls, values


def yolo_to_coco(
    image_dir: PathLike,
    label_dir: PathLike,
    class_names: Sequence[str],
    image_ids: Iterable[str] | None = None,
) -> Dict:
    """Convert YOLO ``class cx cy w h`` (normalised) label files to COCO.

    Every image in ``image_dir`` is included (sizes read from the files); an image without a
    label file is kept without annotations and noted. YOLO polygon lines (``class x1 y1 x2 y2
    ...``) become their bounding box, with a note. A label file without an image is noted.
    """
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    _require_dirs(image_dir, label_dir)
    names = list(class_names)
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    files = _select(files, image_ids)
    report, images = DefectReport(), []
    for path in files:
        width, height = _image_size(path, path)
        label_file = label_dir / f"{path.stem}.txt"
        im = _Image(path.name, width, height, str(label_file))
        if not label_file.is_file():
            report.note(f"{path}: no label file {label_file.name}; kept without annotations")
            label_file = None
        lines = label_file.read_text().splitlines() if label_file else []
        for n, line in enumerate(lines, start=1):
            if line.strip():
                where = f"{label_file}:{n}"
                cls, v = _parse_yolo_line(line.strip(), where, len(names))
                if len(v) > 4:
                    report.note(f"{where}: polygon converted to its bounding box")
                    xs, ys = v[0::2], v[1::2]
                    v = [
                        (min(xs) + max(xs)) / 2,
                        (min(ys) + max(ys)) / 2,
                        max(xs) - min(xs),
                        max(ys) - min(ys),
                    ]
                cx, cy, w, h = v[0] * width, v[1] * height, v[2] * width, v[3] * height
                xyxy = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                im.objects.append((names[cls], xyxy, [round(x, 6) for x in v]))
        images.append(im)
    stems = {p.stem for p in files}
    if image_ids is None:
        for orphan in sorted(p for p in label_dir.glob("*.txt") if p.stem not in stems):
            report.note(f"{orphan}: label file without an image in {image_dir}; ignored")
    return _build_coco(images, names, "yolo", label_dir, image_dir, report)


def _labelme_image(data: Dict, json_path: Path, json_dir: Path, image_dir: Path | None):
    """Locate the image of a LabelMe file; return (file_name relative to the root, path)."""
    rel = str(data.get("imagePath") or "").replace("\\", "/")
    root = image_dir if image_dir is not None else json_dir
    if image_dir is not None:
        rel = Path(rel).name
    path = (root / rel) if rel else None
    if path is None or not path.is_file():
        path = _find_image(root, json_path.stem)
        if path is None:
            raise ValueError(
                f"{json_path}: image file '{rel or json_path.stem}' not found in {root}"
            )
        rel = path.name
    return rel, path


def _parse_labelme(json_path: Path, json_dir: Path, image_dir: Path | None, report: DefectReport):
    try:
        data = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise ValueError(f"{json_path}: not a LabelMe file (no 'shapes' list)")
    rel, path = _labelme_image(data, json_path, json_dir, image_dir)
    width, height = _image_size(path, json_path)
    recorded = (data.get("imageWidth"), data.get("imageHeight"))
    _note_size(report, json_path, recorded, width, height)
    im = _Image(rel, width, height, str(json_path))
    for k, shape in enumerate(data["shapes"]):
        label, kind = str(shape.get("label", "")), shape.get("shape_type") or "polygon"
        pts = shape.get("points") or []
        try:
            xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{json_path}: shape {k} ({label}) has invalid points") from None
        raw = [v for p in zip(xs, ys) for v in p]
        if kind == "rectangle" and len(pts) == 2 or kind == "polygon" and len(pts) >= 3:
            if kind == "polygon":
                report.note(f"{json_path}: polygon {k} ({label}) converted to its bounding box")
            im.objects.append((label, (min(xs), min(ys), max(xs), max(ys)), raw))
        elif kind in ("rectangle", "polygon"):
            report.note(f"{json_path}: {kind} {k} ({label}) has {len(pts)} points; skipped")
        else:
            report.note(f"{json_path}: shape {k} ({label}) of type '{kind}' skipped")
    return im


def labelme_to_coco(
    json_dir: PathLike,
    image_dir: PathLike | None = None,
    classes: Sequence[str] | None = None,
    image_ids: Iterable[str] | None = None,
) -> Dict:
    """Convert LabelMe json files to COCO.

    ``rectangle`` shapes (two points, any corner order) become boxes; ``polygon`` shapes become
    their bounding box (noted); other shapes (circle, point, line...) are skipped with a warning.
    Images are looked up in ``image_dir`` by the base name of ``imagePath`` or, without
    ``image_dir``, at ``imagePath`` relative to ``json_dir`` (which is then the image root).
    """
    json_dir = Path(json_dir)
    img_dir = None if image_dir is None else Path(image_dir)
    _require_dirs(json_dir, img_dir)
    files = _select(sorted(json_dir.glob("*.json")), image_ids)
    report = DefectReport()
    images = [_parse_labelme(f, json_dir, img_dir, report) for f in files]
    root = img_dir if img_dir is not None else json_dir
    return _build_coco(images, classes, "labelme", json_dir, root, report)
