"""COCO evaluation: the trainer's evaluator (per-class AP50 too, metrics written as JSON), and
the AP of predictions held in memory (:func:`coco_ap`)."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from bmc_detectron.utils.io import write_json_atomic
from bmc_detectron.utils.numbers import nanmean


def class_ap(precision: np.ndarray, k: int) -> Dict[str, float]:
    """AP (mean over the IoU thresholds 0.5:0.95) and AP50 (%) of class index ``k`` from
    COCOeval's ``eval["precision"]`` (IoU thresholds, recall points, classes, area ranges, max
    dets), at area "all" and the largest max dets; NaN for a class without ground truth."""
    p = precision[:, :, k, 0, -1]
    ap = float(np.mean(p[p > -1])) * 100 if (p > -1).any() else math.nan
    p50 = p[0][p[0] > -1]
    ap50 = float(np.mean(p50)) * 100 if p50.size else math.nan
    return {"AP": ap, "AP50": ap50}


def coco_ap(gt: Mapping[str, Any], preds: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """AP and AP50 (%) of COCO result dicts ``preds`` against the COCO json ``gt`` (in memory):
    the mean over the classes, and ``per_class`` (NaN for a class without ground truth)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = {c["id"]: c["name"] for c in gt["categories"]}
    if not preds:  # loadRes refuses an empty list: AP 0 where there is ground truth
        present = {a["category_id"] for a in gt["annotations"] if not a.get("iscrowd", 0)}
        zero = {n: 0.0 if i in present else math.nan for i, n in names.items()}
        return _ap_summary({n: {"AP": v, "AP50": v} for n, v in zero.items()})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(dict(gt))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(preds)))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]
    per_class = {names[cat_id]: class_ap(precision, k) for k, cat_id in enumerate(ev.params.catIds)}
    return _ap_summary(per_class)


def _ap_summary(per_class: Dict[str, Dict[str, float]]) -> Dict[str, Any]:
    means = {k: nanmean([v[k] for v in per_class.values()]) for k in ("AP", "AP50")}
    return {**means, "per_class": per_class}


class BMCCOCOEvaluator(COCOEvaluator):
    """detectron2's :class:`COCOEvaluator` for boxes, adding ``AP50-<class>`` for every class and
    saving the results to ``<output_dir>/<metrics_file>``."""

    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: Optional[str] = None,
        metrics_file: str = "coco_metrics.json",
        max_dets_per_image: Optional[int] = None,
    ):
        """
        Args:
            dataset_name: a registered dataset with COCO-style annotations.
            output_dir: where predictions and ``metrics_file`` go (nothing written if None).
            metrics_file: file name of the metrics JSON inside ``output_dir``.
            max_dets_per_image: detections per image considered by COCOeval (default 100).
        """
        super().__init__(
            dataset_name,
            tasks=("bbox",),
            distributed=True,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
        )
        self._metrics_file = metrics_file
        self._dataset_name = dataset_name

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if coco_eval is None or not class_names:
            return results
        precisions = coco_eval.eval["precision"]
        rows = []
        for idx, name in enumerate(class_names):
            ap50 = class_ap(precisions, idx)["AP50"]
            results["AP50-" + name] = ap50
            rows.append((name, ap50))
        self._logger.info(
            f"Per-category {iou_type} AP50:\n"
            + tabulate(rows, headers=["category", "AP50"], tablefmt="pipe", floatfmt=".3f")
        )
        return results

    def evaluate(self, img_ids=None) -> Dict[str, Dict[str, float]]:
        results = super().evaluate(img_ids)
        if self._output_dir and comm.is_main_process() and results:
            save_metrics(
                results,
                os.path.join(self._output_dir, self._metrics_file),
                dataset=self._dataset_name,
            )
        return results


def save_metrics(results: Dict, path: str, **extra) -> None:
    """Write ``results`` (NaN as null) plus ``extra`` fields to ``path`` atomically."""
    payload = OrderedDict(extra)
    payload.update(dict(results))
    write_json_atomic(payload, path, indent=2)
