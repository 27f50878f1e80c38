"""What a robustness sweep's detections look like under one condition: per-class AP and the size
and placement of one class's boxes against its gts, read from what the sweep kept.

A sweep (:mod:`studies.robustness.robustness`) keeps, for every condition, the copy's COCO json
(``copies/<label>/<tag>/annotations.json``) and the evaluator's output (``eval/coco_metrics.json``,
``eval/coco_instances_results.json``); the images themselves are deleted. This module turns those
into rows: AP per class, and for detections of one class above a score threshold, the ratio of
their size (square root of the area) to the nearest gt of that class in the same image (nearest
by centre distance) and the centre offset in units of that gt's size. A box regressor that has
lost its sense of an object's extent shows as a size ratio far from 1 with a small offset.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from bmc_detectron.reporting.tables import markdown_table


@dataclass(frozen=True)
class BoxStats:
    """Size ratios and centre offsets of the detections of one class matched to their nearest gt.

    ``n``: detections with a gt of their class in the image; ratios are det/gt sizes (sqrt of
    area); offsets are centre distances divided by the gt's size."""

    n: int
    size_ratio_median: float
    size_ratio_p10: float
    size_ratio_p90: float
    offset_median: float


def _centre_size(xywh: Sequence[float]) -> tuple:
    x, y, w, h = (float(v) for v in xywh)
    return np.array([x + w / 2, y + h / 2]), float(np.sqrt(max(w, 0.0) * max(h, 0.0)))


def box_stats(
    gts: List[dict], detections: List[dict], category_id: int, score_thresh: float = 0.3
) -> Optional[BoxStats]:
    """:class:`BoxStats` of the detections of ``category_id`` scoring at least ``score_thresh``.

    Args:
        gts: COCO annotations (``image_id``, ``category_id``, ``bbox`` as XYWH).
        detections: COCO results (the same keys and ``score``).
    Returns None when no such detection lies in an image with a gt of that class.
    """
    by_image: Dict[int, list] = defaultdict(list)
    for a in gts:
        if a["category_id"] == category_id and not a.get("iscrowd", 0):
            by_image[a["image_id"]].append(_centre_size(a["bbox"]))
    ratios, offsets = [], []
    for d in detections:
        if d["category_id"] != category_id or d["score"] < score_thresh:
            continue
        candidates = by_image.get(d["image_id"])
        if not candidates:
            continue
        centre, size = _centre_size(d["bbox"])
        dist = [float(np.linalg.norm(centre - c)) for c, _ in candidates]
        j = int(np.argmin(dist))
        gt_size = candidates[j][1]
        if gt_size <= 0:
            continue
        ratios.append(size / gt_size)
        offsets.append(dist[j] / gt_size)
    if not ratios:
        return None
    r = np.asarray(ratios)
    return BoxStats(
        n=len(r),
        size_ratio_median=float(np.median(r)),
        size_ratio_p10=float(np.percentile(r, 10)),
        size_ratio_p90=float(np.percentile(r, 90)),
        offset_median=float(np.median(offsets)),
    )


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} here (was the sweep run with this label?)")
    return json.loads(path.read_text())


def condition_summary(
    condition_dir: Path, class_name: str, score_thresh: float = 0.3
) -> Dict[str, object]:
    """Per-class AP and :class:`BoxStats` of ``class_name`` of one kept condition folder
    (``.../copies/<label>/<tag>``)."""
    coco = _read_json(condition_dir / "annotations.json", "copy annotations")
    names = {c["name"]: c["id"] for c in coco["categories"]}
    if class_name not in names:
        raise ValueError(f"{condition_dir}: class {class_name!r} not in {sorted(names)}")
    metrics = _read_json(condition_dir / "eval" / "coco_metrics.json", "evaluation")
    bbox = metrics.get("bbox", metrics)
    results = _read_json(condition_dir / "eval" / "coco_instances_results.json", "detections")
    stats = box_stats(coco["annotations"], results, names[class_name], score_thresh)
    per_class = {n: float(bbox.get(f"AP-{n}", float("nan"))) for n in names}
    return {"AP": float(bbox.get("AP", float("nan"))), "per_class": per_class, "boxes": stats}


def sweep_conditions(sweep_dir: Path) -> Dict[str, Path]:
    """``{label/tag: folder}`` of every kept condition of one sweep output folder."""
    copies = Path(sweep_dir) / "copies"
    if not copies.is_dir():
        raise FileNotFoundError(f"{copies}: not a robustness sweep's output (no copies/)")
    found = {}
    for label_dir in sorted(p for p in copies.iterdir() if p.is_dir()):
        for tag_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
            if (tag_dir / "eval" / "coco_metrics.json").is_file():
                found[f"{label_dir.name}/{tag_dir.name}"] = tag_dir
    return found


def boxes_table(rows: List[Dict[str, object]], class_name: str) -> str:
    """Markdown: one line per (model, condition) row made by :func:`condition_summary`, with the
    row's ``"model"`` and ``"condition"`` keys."""
    classes = list(rows[0]["per_class"]) if rows else []
    head = [
        "model",
        "condition",
        "AP",
        *[f"AP {c}" for c in classes],
        f"{class_name} boxes",
        f"{class_name} size ratio median [p10, p90]",
        "centre offset median",
    ]
    lines = []
    for row in rows:
        s: Optional[BoxStats] = row["boxes"]  # type: ignore[assignment]
        size = (
            f"{s.size_ratio_median:.2f} [{s.size_ratio_p10:.2f}, {s.size_ratio_p90:.2f}]"
            if s
            else "-"
        )
        lines.append(
            [
                str(row["model"]),
                str(row["condition"]),
                f"{row['AP']:.1f}",
                *[f"{row['per_class'][c]:.1f}" for c in classes],  # type: ignore[index]
                str(s.n) if s else "0",
                size,
                f"{s.offset_median:.2f}" if s else "-",
            ]
        )
    return markdown_table(head, lines) + "\n"
