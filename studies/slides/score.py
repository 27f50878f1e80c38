"""A slide count scored against the slide's known cells (the synthetic slide's generator cells).

    score = score_count(Path("output/slides/report"), Path("output/slides/slide8000_cells.csv"))

The count's cells (``cells.csv``, their boxes in slide pixels) are matched one to one to the
known cells (:func:`~studies.slides.synthetic_slide.known_cells`) by the project's matching
(:func:`~bmc_detectron.structures.matching.match_by_score`: the count's cells by decreasing
detector score, each to the free known cell of highest IoU >= 0.5, :func:`box_iou`). Only the
counted fields are scored: every known cell is cut to the counted fields (the bounding box of its
parts inside them); the *truth* is the known cells at least half inside, the others (cut by the
counted area's edge) may be matched without counting against recall or precision.

- recall: truth cells matched / truth cells;
- precision: the count's cells matched (to any known cell) / the count's cells;
- differential: the known cells' class percentages (the truth) against the count's
  (``summary.json``); with a class-agnostic detector (one class) the count has no differential
  to compare, and the truth's percentages are set against those of the truth cells it found (a
  detector missing one class more than another shifts the differential).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from bmc_detectron.evaluation.count import IOU_MATCH, percent_mae
from bmc_detectron.structures.boxes import box_iou
from bmc_detectron.structures.matching import match_by_score

HALF = 0.5  # a known cell is truth when at least this share of its box is in the counted area


def counted_fields(report: Path) -> np.ndarray:
    """(F, 4) XYXY rectangles of the counted fields in level-0 slide pixels."""
    summary = json.loads((report / "summary.json").read_text())
    rects = []
    for f in summary["fields"]:
        record = json.loads((report / "cells" / f"{f['name']}.json").read_text())
        d, x, y = record["slide"]["downsample"], record["slide"]["x"], record["slide"]["y"]
        rects.append([x, y, x + record["width"] * d, y + record["height"] * d])
    return np.array(rects, np.float64).reshape(-1, 4)


def _read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def cut_to_fields(boxes: np.ndarray, fields: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Each box cut to the fields (the bounding box of its parts inside them) and the share of
    its area inside them (0: none; overlapping fields' parts counted once per field, capped at
    1)."""
    lo = np.maximum(boxes[:, None, :2], fields[None, :, :2])
    hi = np.minimum(boxes[:, None, 2:], fields[None, :, 2:])
    inside = (hi > lo).all(axis=2)  # (N, F)
    big = np.where(inside[..., None], lo, np.inf).min(axis=1)
    small = np.where(inside[..., None], hi, -np.inf).max(axis=1)
    cut = np.concatenate([big, small], axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    part = np.prod(np.clip(small - big, 0, None), axis=1)
    share = np.where(inside.any(axis=1), np.minimum(part / np.maximum(area, 1e-9), 1.0), 0.0)
    return cut, share


def _percent(labels: Sequence[str], classes: Sequence[str]) -> Dict[str, float]:
    n = len(labels)
    return {c: round(100.0 * sum(x == c for x in labels) / n, 2) if n else 0.0 for c in classes}


def score_count(report: Path, known_csv: Path, min_iou: float = IOU_MATCH) -> Dict[str, Any]:
    """Recall, precision and the differential's difference of the count in ``report`` against
    the known cells in ``known_csv`` (module doc)."""
    fields = counted_fields(report)
    known = _read_csv(known_csv)
    boxes = np.array([[float(r[k]) for k in ("x0", "y0", "x1", "y1")] for r in known])
    cut, share = cut_to_fields(boxes.reshape(-1, 4), fields)
    near = np.nonzero(share > 0)[0]
    truth = share[near] >= HALF
    near_cls = [known[i]["class"] for i in near]
    cells = _read_csv(report / "cells.csv")
    pred = np.array([[float(r[f"slide_{k}"]) for k in ("x0", "y0", "x1", "y1")] for r in cells])
    scores = np.array([float(r["det_score"]) for r in cells])
    iou = box_iou(pred.reshape(-1, 4), cut[near].reshape(-1, 4))
    pairs = match_by_score(iou, scores, min_iou)
    found = np.zeros(len(near), bool)
    found[pairs[:, 1]] = True
    classes = sorted({r["class"] for r in known})
    truth_cls = [c for c, t in zip(near_cls, truth) if t]
    found_cls = [c for c, t, f in zip(near_cls, truth, found) if t and f]
    summary = json.loads((report / "summary.json").read_text())
    counted = {row["class"]: row["percent"] for row in summary["classes"]}
    true_pct, found_pct = _percent(truth_cls, classes), _percent(found_cls, classes)
    common = [c for c in classes if c in counted]
    return {
        "fields": len(fields),
        "fields_in_zone": summary["slide"]["fields_in_zone"],
        "target_cells": summary["slide"]["target_cells"],
        "reached": summary["slide"]["reached"],
        "truth_cells": int(truth.sum()),
        "count_cells": len(cells),
        "matched": len(pairs),
        "truth_matched": int((found & truth).sum()),
        "recall": round(float((found & truth).sum() / max(1, truth.sum())), 4),
        "precision": round(len(pairs) / max(1, len(cells)), 4),
        "min_iou": min_iou,
        "true_differential": true_pct,
        "found_differential": found_pct,
        "count_differential": {c: counted[c] for c in counted},
        "count_vs_true_mae_pp": (
            round(percent_mae({c: counted[c] for c in common}, {c: true_pct[c] for c in common}), 2)
            if common
            else None
        ),
        "found_vs_true_mae_pp": round(percent_mae(found_pct, true_pct), 2),
        "recall_per_class": {
            c: round(found_cls.count(c) / truth_cls.count(c), 3) if truth_cls.count(c) else None
            for c in classes
        },
    }
