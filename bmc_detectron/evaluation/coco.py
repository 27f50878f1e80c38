"""COCO evaluation that also reports per-class AP50 and writes the metrics as JSON."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Dict, Optional

import numpy as np
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from bmc_detectron.utils.io import write_json_atomic


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
        # precision: (iou thresholds, recall points, classes, area ranges, max dets); IoU 0.5 is 0.
        precisions = coco_eval.eval["precision"]
        rows = []
        for idx, name in enumerate(class_names):
            p = precisions[0, :, idx, 0, -1]
            p = p[p > -1]
            ap50 = float(np.mean(p) * 100) if p.size else float("nan")
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
