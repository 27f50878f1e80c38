"""Counted cells in crowds: recall by crowding, touching pairs counted as two, errors per case.

Real marrow is crowded: cells touch and overlap. Where the ground truth says how crowded each cell
is (the real-cell composites mark every annotation ``crowding``: ``isolated``, ``touching`` or
``overlapping``, :mod:`bmc_detectron.data.synthetic.marrow`), the counted cells are matched to
the truth as in :func:`bmc_detectron.evaluation.count.matched_accuracy` (greedy by score, IoU
>= 0.5, whatever the class) and measured:

- :func:`crowding_recall`: recall of the true cells of each crowding kind;
- :func:`touching_pairs`: of the pairs of true cells that touch or overlap (both not isolated,
  boxes intersecting), the share whose two cells are both found, i.e. counted as two;
- :func:`case_errors`: the differential's error per *case* of ``fields_per_case`` fields (a lab
  counts a case, a few hundred cells, not a field of thirty).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from bmc_detectron.structures.boxes import box_iou
from bmc_detectron.structures.matching import match_by_score

CROWDING_KINDS = ("isolated", "touching", "overlapping")
Truth = Mapping[int, Tuple[np.ndarray, List[str]]]


def image_crowding(gt: Mapping[str, Any]) -> Dict[int, List[Optional[str]]]:
    """Per image id, the ``crowding`` of each non-crowd annotation (None where not marked), in
    the order of :func:`bmc_detectron.evaluation.count.image_truth`."""
    out: Dict[int, List[Optional[str]]] = {int(im["id"]): [] for im in gt["images"]}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            out.setdefault(int(ann["image_id"]), []).append(ann.get("crowding"))
    return out


def has_crowding(crowding: Mapping[int, Sequence[Optional[str]]]) -> bool:
    """Whether any annotation is marked."""
    return any(c is not None for marks in crowding.values() for c in marks)


def found_truth(cells: Sequence[Any], gt_boxes: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """(M,) bool: which of the true boxes ``gt_boxes`` (M, 4) XYXY a counted cell (``box``,
    ``det_score``) is matched to."""
    found = np.zeros(len(gt_boxes), dtype=bool)
    boxes = np.array([c.box for c in cells], dtype=np.float64).reshape(-1, 4)
    scores = np.array([c.det_score for c in cells], dtype=np.float64)
    iou = box_iou(boxes, np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4), np.float32)
    for _, j in match_by_score(iou, scores, min_iou):
        found[j] = True
    return found


def _found_by_image(cells: Mapping[int, Sequence[Any]], truth: Truth) -> Dict[int, np.ndarray]:
    return {k: found_truth(list(cells.get(k, [])), boxes) for k, (boxes, _) in truth.items()}


def crowding_recall(
    cells: Mapping[int, Sequence[Any]],
    truth: Truth,
    crowding: Mapping[int, Sequence[Optional[str]]],
) -> Dict[str, Dict[str, float]]:
    """Kind -> ``{"cells", "found", "recall"}`` over the marked true cells of every image."""
    found = _found_by_image(cells, truth)
    tally = {kind: [0, 0] for kind in CROWDING_KINDS}
    for image_id, marks in crowding.items():
        for mark, hit in zip(marks, found.get(image_id, [])):
            if mark is not None:
                row = tally.setdefault(mark, [0, 0])
                row[0] += 1
                row[1] += int(hit)
    return {
        kind: {"cells": n, "found": k, "recall": k / n if n else math.nan}
        for kind, (n, k) in tally.items()
    }


def _intersect(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))


def touching_pairs(
    cells: Mapping[int, Sequence[Any]],
    truth: Truth,
    crowding: Mapping[int, Sequence[Optional[str]]],
) -> Dict[str, float]:
    """Pairs of true cells that touch or overlap (both marked touching / overlapping, boxes
    intersecting): how many, how many have both cells found, and that share."""
    found = _found_by_image(cells, truth)
    pairs = both = 0
    for image_id, (boxes, _) in truth.items():
        marks = list(crowding.get(image_id, []))
        crowded = [i for i, m in enumerate(marks) if m in ("touching", "overlapping")]
        for x, i in enumerate(crowded):
            for j in crowded[x + 1 :]:
                if _intersect(boxes[i], boxes[j]):
                    pairs += 1
                    both += int(found[image_id][i] and found[image_id][j])
    return {"pairs": pairs, "both_found": both, "share": both / pairs if pairs else math.nan}


def case_errors(
    cells: Mapping[int, Sequence[Any]],
    truth: Truth,
    fields_per_case: int,
    errors: Callable[[Mapping[int, Sequence[Any]], Truth], Dict[str, Any]],
) -> Dict[str, Any]:
    """The differential's error per case: the images, by id, in consecutive groups of
    ``fields_per_case`` (the last one may be smaller), each group's cells and truth pooled and
    measured by ``errors`` (``count_errors`` with its settings bound): the MAE of each case
    (percentage points), their mean and worst."""
    if fields_per_case < 1:
        raise ValueError(f"fields_per_case {fields_per_case}: must be >= 1")
    ids = sorted(truth)
    case_cells: Dict[int, List[Any]] = {}
    case_truth: Dict[int, Tuple[np.ndarray, List[str]]] = {}
    for case, start in enumerate(range(0, len(ids), fields_per_case)):
        group = ids[start : start + fields_per_case]
        case_cells[case] = [c for k in group for c in cells.get(k, [])]
        boxes = np.concatenate([truth[k][0] for k in group]).reshape(-1, 4)
        case_truth[case] = (boxes, [lab for k in group for lab in truth[k][1]])
    maes = [errors({0: case_cells[c]}, {0: case_truth[c]})["mae_per_image"] for c in case_truth]
    defined = [m for m in maes if not math.isnan(m)]
    return {
        "fields_per_case": fields_per_case,
        "cases": len(case_truth),
        "mae_per_case": maes,
        "mae_mean": float(np.mean(defined)) if defined else math.nan,
        "mae_max": float(np.max(defined)) if defined else math.nan,
        "cells_per_case": float(np.mean([len(t[1]) for t in case_truth.values()]))
        if case_truth
        else math.nan,
    }
