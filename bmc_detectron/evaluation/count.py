"""Counted cells against expert boxes and labels: how right is a count?

The cells of every image (anything with ``box``, ``det_score``, ``label``, ``prob`` and
``is_uncertain``: a :class:`bmc_detectron.pipeline.Cell`) are measured against a COCO json, the
ground truth. :func:`evaluate_cells` gives:

- ``detection``: COCO AP / AP50 (pycocotools) per class and their mean, with a prediction's class
  the counter's label and its score the detector score (``score="detector"``) or the detector
  score x the label's class probability (``score="product"``);
- ``agnostic``: AP / AP50 with every class merged into one, scored by the detector score;
- ``matching``: cells kept for counting (detector score >= ``count_threshold``) matched
  greedily, highest score first, to the unmatched ground-truth box of highest IoU >= 0.5 whatever
  its class; accuracy = share of matched cells whose label is the true class (all matched cells,
  and the certain ones);
- ``counts``: the differential of the counted cells against the true one (ground-truth classes),
  ``certain`` (uncertain cells excluded, as the count report does) and ``all`` (uncertain cells in
  their label): mean absolute difference of the class percentages (percentage points) of the
  pooled differential and per image (averaged), M:E ratio true vs predicted and its error.

AP wants every detection, so count with a low score threshold (0.05, detectron2's test
threshold); the counts then keep the cells scoring ``count_threshold`` or more, as a count run
with that ``--score-threshold`` would (the greedy class-agnostic NMS gives the same boxes above a
threshold whether it runs before or after the threshold).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from bmc_detectron.evaluation.coco import coco_ap
from bmc_detectron.evaluation.crowding import (
    case_errors,
    crowding_recall,
    has_crowding,
    image_crowding,
    touching_pairs,
)
from bmc_detectron.structures.boxes import box_iou
from bmc_detectron.structures.differential import Lineage, differential
from bmc_detectron.structures.matching import match_by_score
from bmc_detectron.utils.numbers import nanmean

IOU_MATCH = 0.5


class CellLike(Protocol):
    """What the evaluation reads of a counted cell (:class:`bmc_detectron.pipeline.Cell`)."""

    box: Sequence[float]
    det_score: float
    label: str
    prob: float

    def is_uncertain(self, threshold: float) -> bool: ...


def _is_other(cell: CellLike) -> bool:
    """A cell the classifier called Other (no known type; ``Cell.is_other``)."""
    return bool(getattr(cell, "is_other", False))


def dataset_images(name: str) -> Tuple[Dict[str, Any], List[Tuple[int, str]]]:
    """The COCO json of a registered dataset (converted first where it is a built-in one not
    yet converted) and its (image_id, file path) pairs."""
    import json

    from detectron2.data import DatasetCatalog

    from bmc_detectron.data.datasets import prepare_dataset

    with open(prepare_dataset(name)) as fh:
        gt = json.load(fh)
    images = [(int(d["image_id"]), str(d["file_name"])) for d in DatasetCatalog.get(name)]
    return gt, images


def coco_predictions(
    cells: Mapping[int, Sequence[CellLike]], cat_ids: Mapping[str, int], score: str
) -> List[Dict[str, Any]]:
    """COCO result dicts (XYWH boxes); ``score`` ``"product"`` scores det_score x prob. A cell
    called Other gets category id 0, no class of the dataset: the class-aware AP ignores it, the
    class-agnostic AP (:func:`merge_classes`) counts it as the cell it is."""
    out = []
    for image_id, image_cells in cells.items():
        for c in image_cells:
            if c.label not in cat_ids and not _is_other(c):
                raise ValueError(f"label {c.label!r} is not a class of the dataset")
            x0, y0, x1, y1 = (float(v) for v in c.box)
            s = c.det_score * c.prob if score == "product" else c.det_score
            out.append(
                {
                    "image_id": int(image_id),
                    "category_id": cat_ids.get(c.label, 0),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(s),
                }
            )
    return out


def merge_classes(gt: Mapping[str, Any], preds: Sequence[Dict[str, Any]]) -> Tuple[dict, list]:
    """Ground truth and predictions with every class merged into one, ``cell`` (id 1)."""
    merged = copy.deepcopy(dict(gt))
    merged["categories"] = [{"id": 1, "name": "cell"}]
    for ann in merged["annotations"]:
        ann["category_id"] = 1
    return merged, [{**p, "category_id": 1} for p in preds]


def image_truth(gt: Mapping[str, Any]) -> Dict[int, Tuple[np.ndarray, List[str]]]:
    """Per image id: the ground-truth XYXY boxes and class names (crowd boxes left out)."""
    names = {c["id"]: c["name"] for c in gt["categories"]}
    out: Dict[int, Tuple[list, list]] = {int(im["id"]): ([], []) for im in gt["images"]}
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        boxes, labels = out.setdefault(int(ann["image_id"]), ([], []))
        boxes.append([x, y, x + w, y + h])
        labels.append(names[ann["category_id"]])
    return {k: (np.array(b, dtype=np.float64).reshape(-1, 4), lab) for k, (b, lab) in out.items()}


def matched_accuracy(
    cells: Mapping[int, Sequence[CellLike]],
    truth: Mapping[int, Tuple[np.ndarray, List[str]]],
    uncertain_below: float,
) -> Dict[str, Any]:
    """Accuracy of the labels of the cells matched to a ground-truth box (all / certain ones;
    a cell called Other is wrong in ``accuracy``, in no certain one, and counted in
    ``matched_other``)."""
    n_pred = n_matched = correct = n_certain = correct_certain = n_other = 0
    for image_id, (gt_boxes, gt_labels) in truth.items():
        image_cells = list(cells.get(image_id, []))
        n_pred += len(image_cells)
        boxes = np.array([c.box for c in image_cells], dtype=np.float64).reshape(-1, 4)
        scores = np.array([c.det_score for c in image_cells], dtype=np.float64)
        iou = box_iou(boxes, gt_boxes, np.float32)  # float32, as detectron2's pairwise_iou
        for i, j in match_by_score(iou, scores, IOU_MATCH):
            hit = image_cells[i].label == gt_labels[j]
            n_matched += 1
            correct += hit
            if _is_other(image_cells[i]):
                n_other += 1
            elif not image_cells[i].is_uncertain(uncertain_below):
                n_certain += 1
                correct_certain += hit
    n_gt = sum(len(lab) for _, lab in truth.values())
    return {
        "predicted": n_pred,
        "ground_truth": n_gt,
        "matched": n_matched,
        "recall": n_matched / n_gt if n_gt else math.nan,
        "precision": n_matched / n_pred if n_pred else math.nan,
        "accuracy": correct / n_matched if n_matched else math.nan,
        "matched_certain": n_certain,
        "accuracy_certain": correct_certain / n_certain if n_certain else math.nan,
        "matched_other": n_other,
    }


def percentages(diff: Mapping[str, Any]) -> Dict[str, float]:
    """Class -> percent of counted cells, from
    :func:`bmc_detectron.structures.differential.differential`."""
    return {row["class"]: row["percent"] for row in diff["classes"]}


def percent_mae(pred: Mapping[str, float], true: Mapping[str, float]) -> float:
    """Mean absolute difference (percentage points) over the classes; NaN if either is empty."""
    diffs = [abs(pred[c] - true[c]) for c in true]
    return float(np.mean(diffs)) if diffs else math.nan


def _differential(cells: Sequence[CellLike], names: Sequence[str], lineage: Lineage, below: float):
    return differential(
        [c.label for c in cells],
        [c.is_uncertain(below) for c in cells],
        names,
        lineage,
        [_is_other(c) for c in cells],
    )


def _me_error(pred: Optional[float], true: Optional[float]) -> float:
    return abs(pred - true) if pred is not None and true is not None else math.nan


def count_errors(
    cells: Mapping[int, Sequence[CellLike]],
    truth: Mapping[int, Tuple[np.ndarray, List[str]]],
    class_names: Sequence[str],
    lineage: Lineage,
    uncertain_below: float,
) -> Dict[str, Any]:
    """Predicted vs true differential: pooled over the images and averaged per image."""
    pooled_pred: List[CellLike] = []
    pooled_true: List[str] = []
    mae_images, me_images = [], []
    for image_id, (_, gt_labels) in truth.items():
        image_cells = list(cells.get(image_id, []))
        pooled_pred += image_cells
        pooled_true += gt_labels
        pred = _differential(image_cells, class_names, lineage, uncertain_below)
        true = differential(gt_labels, [False] * len(gt_labels), class_names, lineage)
        if pred["counted"] and true["counted"]:
            mae_images.append(percent_mae(percentages(pred), percentages(true)))
        me_images.append(_me_error(pred["me"]["ratio"], true["me"]["ratio"]))
    pred = _differential(pooled_pred, class_names, lineage, uncertain_below)
    true = differential(pooled_true, [False] * len(pooled_true), class_names, lineage)
    me_defined = [e for e in me_images if not math.isnan(e)]
    return {
        "counted": pred["counted"],
        "uncertain": pred["uncertain"]["total"],
        "other": pred["other"],
        "true_counted": true["counted"],
        "percent": percentages(pred),
        "true_percent": percentages(true),
        "mae_pooled": percent_mae(percentages(pred), percentages(true)),
        "mae_per_image": nanmean(mae_images),
        "images_with_mae": len(mae_images),
        "me": pred["me"],
        "true_me": true["me"],
        "me_abs_error": _me_error(pred["me"]["ratio"], true["me"]["ratio"]),
        "me_abs_error_per_image": nanmean(me_defined),
        "images_with_me": len(me_defined),
    }


def evaluate_cells(
    cells: Mapping[int, Sequence[CellLike]],
    gt: Mapping[str, Any],
    score: str,
    *,
    count_threshold: float = 0.5,
    uncertain_below: float = 0.5,
    lineage: Optional[Lineage] = None,
    fields_per_case: int = 0,
) -> Dict[str, Any]:
    """Every measure of one counter's cells (by image id) against the COCO ground truth ``gt``
    (module docstring); where the truth marks each cell's crowding, also ``crowding`` (recall per
    kind, touching pairs counted as two: :mod:`bmc_detectron.evaluation.crowding`); with
    ``fields_per_case`` >= 1, ``cases``: the certain differential's error per case of that many
    fields."""
    lineage = lineage or Lineage()
    cat_ids = {c["name"]: int(c["id"]) for c in gt["categories"]}
    class_names = list(cat_ids)
    preds = coco_predictions(cells, cat_ids, score)
    counted = {k: [c for c in v if c.det_score >= count_threshold] for k, v in cells.items()}
    truth = image_truth(gt)
    result = {
        "score": score,
        "detection": coco_ap(gt, preds),
        "agnostic": coco_ap(*merge_classes(gt, coco_predictions(cells, cat_ids, "detector"))),
        "matching": matched_accuracy(counted, truth, uncertain_below),
        "counts": {
            "certain": count_errors(counted, truth, class_names, lineage, uncertain_below),
            "all": count_errors(counted, truth, class_names, lineage, -math.inf),
        },
    }
    crowding = image_crowding(gt)
    if has_crowding(crowding):
        result["crowding"] = {
            "recall": crowding_recall(counted, truth, crowding),
            "pairs": touching_pairs(counted, truth, crowding),
        }
    if fields_per_case >= 1:

        def errors(c: Mapping[int, Sequence[CellLike]], t: Mapping[int, Any]) -> Dict[str, Any]:
            return count_errors(c, t, class_names, lineage, uncertain_below)

        result["cases"] = case_errors(counted, truth, fields_per_case, errors)
    return result
