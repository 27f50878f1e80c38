"""Validation of annotations and detectron2 dataset dicts before training.

Two layers share one box policy (:func:`clean_box`):

* the converters in :mod:`bmc_detectron.data.convert` use it on every box they read;
* :func:`check_dataset_dicts` applies it (plus image and class checks) to the dataset dicts that
  a registered dataset returns, right before a data loader is built.

Policy: a box that leaves the image by at most ``tol`` pixels (default 1 px, typical for
1-based / inclusive annotation tools) is clipped to the image; a box further outside, or with zero
or negative width/height (before or after clipping), is dropped with a logged warning and counted.
Problems that make training wrong rather than slightly noisy (missing or corrupt image, size
mismatch, unknown class, empty dataset) raise :class:`DatasetError`, naming the file.
"""

from __future__ import annotations

import copy
import logging
import numbers
import os
from typing import Dict, List, Sequence, Tuple

from PIL import Image

logger = logging.getLogger(__name__)

BOX_TOLERANCE_PX = 1.0
# Problems listed in one DatasetError message; the rest are only counted.
MAX_LISTED_ERRORS = 20

Box = Tuple[float, float, float, float]


class DatasetError(ValueError):
    """A dataset (file, annotation or whole split) cannot be used for training as it is."""


def fmt_box(box: Sequence[float]) -> str:
    """``[x0, y0, x1, y1]`` with at most 2 decimals, for messages."""
    return "[" + ", ".join(f"{round(float(v), 2):g}" for v in box) + "]"


def clean_box(
    box: Sequence[float], width: float, height: float, tol: float = BOX_TOLERANCE_PX
) -> Tuple[Box | None, str]:
    """Apply the box policy to an absolute ``(x0, y0, x1, y1)`` box in a ``width x height`` image.

    Returns ``(box, status)``: status ``"ok"`` (box unchanged), ``"clipped"`` (it was at most
    ``tol`` px outside and is now clipped to the image), ``"zero_area"`` or ``"outside"`` (box is
    ``None``: drop it).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not x1 > x0 or not y1 > y0:  # also catches NaN
        return None, "zero_area"
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        return None, "outside"
    cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
    cx1, cy1 = min(x1, float(width)), min(y1, float(height))
    if not cx1 > cx0 or not cy1 > cy0:
        return None, "zero_area"
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        return (cx0, cy0, cx1, cy1), "clipped"
    return (x0, y0, x1, y1), "ok"


def box_problem(status: str, width: float, height: float) -> str:
    """Human-readable reason for a box status from :func:`clean_box`."""
    return {
        "zero_area": "zero or negative area",
        "outside": f"lies outside the {width:g}x{height:g} image",
        "clipped": f"clipped to the {width:g}x{height:g} image",
    }.get(status, "ok")


class DefectReport:
    """Dropped / clipped boxes and notes found in one dataset; logs each as it is added.

    ``dropped`` / ``clipped`` entries: ``file``, ``label``, ``box`` (as written in the file),
    ``reason`` (``zero_area``, ``outside`` or ``clipped``) and ``message``; ``notes`` are strings;
    ``empty_images`` lists the images left without annotations (they are kept).
    """

    def __init__(self) -> None:
        self.dropped: List[Dict] = []
        self.clipped: List[Dict] = []
        self.notes: List[str] = []
        self.empty_images: List[str] = []

    def note(self, msg: str) -> None:
        """Record and log (warning) a remark about the data that is not a box defect."""
        logger.warning(msg)
        self.notes.append(msg)

    def box(
        self, status: str, file: str, label: str, box: Sequence[float], width: float, height: float
    ) -> None:
        """Record a box that :func:`clean_box` clipped or rejected (``status`` is its status)."""
        verb = "kept" if status == "clipped" else "dropped"
        msg = f"{file}: {verb} {label} box {fmt_box(box)}: {box_problem(status, width, height)}"
        entry = {"file": file, "label": label, "box": [float(v) for v in box]}
        entry.update(reason=status, message=msg)
        (self.clipped if status == "clipped" else self.dropped).append(entry)
        (logger.info if status == "clipped" else logger.warning)(msg)

    def count(self, reason: str) -> int:
        """Number of boxes recorded with this reason."""
        return sum(e["reason"] == reason for e in self.dropped + self.clipped)

    def as_dict(self) -> Dict[str, list]:
        """The four lists as a json-serialisable dict."""
        keys = ("dropped", "clipped", "notes", "empty_images")
        return {k: getattr(self, k) for k in keys}


def inspect_image(path: str) -> Tuple[Tuple[int, int] | None, str]:
    """Cheaply check an image file: exists, is an image PIL can identify, is not truncated.

    Returns ``((width, height), "")`` or ``(None, problem)``. Does not decode the pixels: PIL's
    ``verify()`` checks the structure, and JPEGs must end with an end-of-image marker (a
    truncated upload or copy loses it).
    """
    if not os.path.isfile(path):
        return None, "image file not found"
    try:
        with Image.open(path) as im:
            size = im.size
            fmt = im.format
            im.verify()
    except Exception as e:  # PIL raises many types for bad files
        return None, f"unreadable or corrupt image ({type(e).__name__}: {e})"
    if fmt == "JPEG":
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 1024))
            if b"\xff\xd9" not in fh.read():
                return None, "truncated JPEG (no end-of-image marker)"
    return size, ""


def _check_record(
    rec: Dict, num_classes: int, check_images: bool, errors: List[str], report: DefectReport
) -> Dict:
    """Validate one dataset dict; append fatal problems to ``errors``; return the cleaned copy."""
    from detectron2.structures import BoxMode

    fname = rec.get("file_name", "<no file_name>")
    out = copy.copy(rec)
    height, width = rec.get("height"), rec.get("width")
    if check_images:
        size, problem = inspect_image(fname)
        if problem:
            errors.append(f"{fname}: {problem}")
            return out
        if width is None or height is None:
            (width, height), out["width"], out["height"] = size, size[0], size[1]
        elif (width, height) != size:
            errors.append(
                f"{fname}: image is {size[0]}x{size[1]} but the annotation records "
                f"{width}x{height} (width x height)"
            )
            return out
    elif width is None or height is None:
        errors.append(f"{fname}: no height/width recorded (and check_images=False)")
        return out
    kept = []
    for ann in rec.get("annotations", []):
        cat = ann.get("category_id")
        if not isinstance(cat, numbers.Integral) or not 0 <= cat < num_classes:
            errors.append(
                f"{fname}: unknown class: category_id {cat!r} is outside [0, {num_classes})"
            )
            continue
        mode = ann.get("bbox_mode", BoxMode.XYWH_ABS)
        xyxy = BoxMode.convert(list(ann["bbox"]), mode, BoxMode.XYXY_ABS)
        box, status = clean_box(xyxy, width, height)
        if status != "ok":
            report.box(status, fname, f"class {cat}", xyxy, width, height)
        if box is None:
            continue
        new = dict(ann)
        if status == "clipped":
            new["bbox"] = BoxMode.convert(list(box), BoxMode.XYXY_ABS, mode)
        kept.append(new)
    out["annotations"] = kept
    if not kept:
        report.empty_images.append(fname)
    return out


def check_dataset_dicts(
    dicts: List[Dict],
    dataset_name: str,
    num_classes: int,
    check_images: bool = True,
    stats: Dict[str, int] | None = None,
) -> List[Dict]:
    """Validate detectron2 dataset dicts before training and return a cleaned copy.

    Raises :class:`DatasetError` (listing every fatal problem, each naming its file) for: an
    empty dataset, a missing / unreadable / corrupt / truncated image (only with
    ``check_images``), an image whose real size differs from the recorded height/width, and a
    ``category_id`` outside ``[0, num_classes)`` (unknown class). Boxes are cleaned with
    :func:`clean_box`: clipped when at most 1 px outside, else dropped with a warning naming the
    file and box. Images without annotations are kept and counted. A summary is logged; the
    input is not modified. If ``stats`` (a dict) is given it receives the counts ``images``,
    ``boxes`` (kept), ``zero_area``, ``outside``, ``clipped`` and ``no_annotations``.
    """
    if not dicts:
        raise DatasetError(f"{dataset_name}: dataset is empty (0 images)")
    errors: List[str] = []
    report = DefectReport()
    cleaned = [_check_record(rec, num_classes, check_images, errors, report) for rec in dicts]
    if errors:
        listed = "\n  ".join(errors[:MAX_LISTED_ERRORS])
        more = len(errors) - MAX_LISTED_ERRORS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise DatasetError(f"{dataset_name}: {len(errors)} problem(s):\n  {listed}{tail}")
    counts = {k: report.count(k) for k in ("zero_area", "outside", "clipped")}
    counts.update(no_annotations=len(report.empty_images), images=len(cleaned))
    counts["boxes"] = sum(len(r["annotations"]) for r in cleaned)
    if stats is not None:
        stats.update(counts)
    if counts["zero_area"] + counts["outside"]:
        logger.warning(
            "%s: dropped %d box(es) with zero or negative area and %d outside the image",
            dataset_name,
            counts["zero_area"],
            counts["outside"],
        )
    if counts["clipped"]:
        logger.info("%s: clipped %d box(es) lying <= 1 px outside", dataset_name, counts["clipped"])
    if counts["no_annotations"]:
        logger.warning(
            "%s: %d of %d image(s) have no annotations (kept)",
            dataset_name,
            counts["no_annotations"],
            len(cleaned),
        )
    return cleaned
