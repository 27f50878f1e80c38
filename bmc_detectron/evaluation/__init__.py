"""Evaluation: COCO box metrics with per-class AP and AP50."""

from .coco import BMCCOCOEvaluator, save_metrics

__all__ = ["BMCCOCOEvaluator", "save_metrics"]
