"""Evaluation: COCO box metrics with per-class AP and AP50; cell-classifier metrics; counted cells
against expert boxes and labels (:mod:`.count`)."""

from bmc_detectron.evaluation.classification import ClassificationEvaluator, classification_metrics
from bmc_detectron.evaluation.coco import BMCCOCOEvaluator, save_metrics

__all__ = ["BMCCOCOEvaluator", "ClassificationEvaluator", "classification_metrics", "save_metrics"]
