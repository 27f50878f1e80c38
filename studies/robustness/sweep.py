"""AP of a detector while the test images are rescaled or their stain is shifted.

Each condition writes a transformed copy of the test set (PNG images + COCO json, boxes
transformed alike) to a work folder, registers it, and evaluates it with the trainer's
evaluator (detectron2's COCOEvaluator on the copy's ground truth).

**Scale.** detectron2's test-time ``ResizeShortestEdge`` would undo a plain rescale (a copy at 2x
is shrunk back to ``MIN_SIZE_TEST``). So the copies at factor ``s`` are read through
:class:`KeepScaleResize`: it resizes an image of size ``(s h, s w)`` by the factor the model's
own test resize gives the original ``(h, w)``; the model therefore sees the cells ``s`` times as
large (or small) as at training, on a canvas ``s`` times as large. Detections are mapped back to
the copy's pixels by detectron2 (``height`` / ``width`` of the record), where the copy's
ground truth is: AP is measured exactly as for the original set.

**Stain.** ``hue:DEG`` (HSV hue rotation), ``sat:F`` (HSV saturation factor), ``h:D`` / ``e:D``
(haematoxylin / eosin optical-density shift, :func:`~.stain.stain_shift`); copies read with the
model's usual test resize.

**Measures.** Optionally the images are read with the inference-time measures of
:mod:`.measures` (red-cell auto-scale instead of :class:`KeepScaleResize`, Reinhard
stain normalisation); the tables and curves of several sweeps are in :mod:`.report`.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
)
from detectron2.data import transforms as T
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset
from detectron2.structures import BoxMode

from bmc_detectron.analysis.inference import dataset_records
from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.engine.trainer import BMCTrainer
from bmc_detectron.smear.ruler import rescaled
from bmc_detectron.smear.stain import hue_shift, saturation_scale, stain_shift
from bmc_detectron.utils.io import write_json_atomic
from studies.robustness.measures import (
    MeasuredMapper,
    Measures,
    RulerRecorder,
    case_ruler,
    model_counter,
    summarise_ruler,
)

logger = logging.getLogger(__name__)

STAIN_KINDS = ("hue", "sat", "h", "e")
STAIN_NEUTRAL = {"hue": 0.0, "sat": 1.0, "h": 0.0, "e": 0.0}  # the unshifted value of each kind
ImageOp = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Condition:
    """One test condition: ``kind`` "scale" (value = factor) or a stain kind (value = amount)."""

    kind: str
    value: float

    @property
    def tag(self) -> str:
        return f"{self.kind}_{self.value:g}".replace("-", "m").replace(".", "p")

    @property
    def scale(self) -> float:
        return self.value if self.kind == "scale" else 1.0


def parse_stain_shift(text: str) -> Condition:
    """``"hue:10"``, ``"sat:0.7"``, ``"h:0.1"``, ``"e:-0.1"`` → :class:`Condition`."""
    kind, _, value = text.partition(":")
    if kind not in STAIN_KINDS or not value:
        raise ValueError(f"stain shift {text!r}: expected KIND:VALUE with KIND in {STAIN_KINDS}")
    return Condition(kind, float(value))


def stain_op(cond: Condition) -> ImageOp:
    """The RGB uint8 image operation of a stain condition."""
    v = cond.value
    ops: Dict[str, ImageOp] = {
        "hue": lambda im: hue_shift(im, v),
        "sat": lambda im: saturation_scale(im, v),
        "h": lambda im: stain_shift(im, h_shift=v),
        "e": lambda im: stain_shift(im, e_shift=v),
    }
    return ops[cond.kind]


def rescale_boxes(boxes_xyxy: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """(N, 4) XYXY boxes of an image resized by (fx, fy) (``fx = new_w / w``)."""
    return np.asarray(boxes_xyxy, np.float64) * np.array([fx, fy, fx, fy])


class KeepScaleResize(T.Augmentation):
    """The test ``ResizeShortestEdge`` of the original size, on a copy rescaled by ``factor``:
    the resize factor is the one the original image would get, so the rescale survives."""

    def __init__(self, min_size: int, max_size: int, factor: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        oh, ow = round(h / self.factor), round(w / self.factor)
        nh, nw = T.ResizeShortestEdge.get_output_shape(oh, ow, self.min_size, self.max_size)
        k = nh / oh
        return T.ResizeTransform(h, w, max(1, int(round(h * k))), max(1, int(round(w * k))))


def _record_annotations(rec: dict, fx: float, fy: float, start: int) -> List[dict]:
    out = []
    for ann in rec.get("annotations", []):
        box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
        x0, y0, x1, y1 = rescale_boxes(np.asarray([box]), fx, fy)[0].tolist()
        out.append(
            {
                "id": start + len(out) + 1,
                "image_id": rec["image_id"],
                "category_id": int(ann["category_id"]) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
        )
    return out


def write_copy(
    records: Sequence[dict],
    classes: Sequence[str],
    cond: Condition,
    out_dir: Path,
) -> Path:
    """Write the images of ``records`` transformed by ``cond`` (PNG) and their COCO json (boxes
    rescaled by the exact factors of the rounded sizes) under ``out_dir``; returns the json."""
    images, annotations = [], []
    op = None if cond.kind == "scale" else stain_op(cond)
    for i, rec in enumerate(records):
        bgr = cv2.imread(rec["file_name"], cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(rec["file_name"])
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        rgb, (fx, fy) = rescaled(rgb, cond.scale) if cond.kind == "scale" else (op(rgb), (1, 1))
        name = f"{i:06d}.png"
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out_dir / "images" / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        h, w = rgb.shape[:2]
        images.append({"id": rec["image_id"], "file_name": name, "height": h, "width": w})
        annotations += _record_annotations(rec, fx, fy, len(annotations))
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(classes)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    return write_json_atomic(coco, out_dir / "annotations.json")


def evaluate_condition(
    cfg: CfgNode,
    model: torch.nn.Module,
    name: str,
    cond: Condition,
    work: Path,
    measures: Optional[Measures] = None,
) -> Dict[str, Any]:
    """AP / AP50 of ``model`` on the copy of dataset ``name`` under ``cond``, read with the
    inference-time ``measures`` (:mod:`.measures`; the red-cell ruler reads the model's red-cell
    boxes as the count does, :func:`~.measures.model_counter`); with auto-scale also ``"ruler"``
    (the estimated rescale factors, :func:`~.measures.summarise_ruler`)."""
    measures = measures or Measures()
    records = dataset_records(cfg, name)
    classes = MetadataCatalog.get(name).get("thing_classes") or [
        str(i) for i in range(cfg.MODEL.RETINANET.NUM_CLASSES)
    ]
    folder = work / cond.tag
    json_file = write_copy(records, classes, cond, folder)
    copy_name = f"{name}__robust_{cond.tag}"
    if copy_name in DatasetCatalog.list():
        unregister_dataset(copy_name)
    register_coco_dataset(copy_name, json_file, folder / "images", {"thing_classes": classes})
    try:
        copy_records = dataset_records(cfg, copy_name)
        case_relative, ruler = None, None
        counter = model_counter(cfg, model) if measures.auto_scale else None
        if measures.auto_scale and measures.per_case:
            files = [r["file_name"] for r in copy_records]
            case_relative, entries = case_ruler(files, measures.ruler(counter))
            ruler = summarise_ruler(entries, cond.scale)
            ruler["case_estimate"] = round(case_relative, 4)
        plain = KeepScaleResize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cond.scale)
        augs = measures.augmentations(cfg, plain, case_relative, counter)
        mapper = MeasuredMapper(cfg, augs)
        loader = build_detection_test_loader(copy_records, mapper=mapper)
        evaluator = BMCTrainer.build_evaluator(cfg, copy_name, str(folder / "eval"))
        if measures.auto_scale and not measures.per_case:
            evaluator = DatasetEvaluators([evaluator, RulerRecorder(cond.scale)])
        out = {"ruler": ruler, **inference_on_dataset(model, loader, evaluator)}
    finally:
        unregister_dataset(copy_name)
    result = out.get("bbox", {})
    metrics: Dict[str, Any] = {
        "AP": float(result.get("AP", float("nan"))),
        "AP50": float(result.get("AP50", float("nan"))),
    }
    if out["ruler"] is not None:
        metrics["ruler"] = out["ruler"]
    return metrics


def run_sweep(
    cfg: CfgNode,
    model: torch.nn.Module,
    name: str,
    conditions: Sequence[Condition],
    work: Path,
    keep_copies: bool = False,
    measures: Optional[Measures] = None,
) -> List[dict]:
    """Evaluate every condition; rows ``{"kind", "value", "AP", "AP50"}`` (+ ``"ruler"`` with
    auto-scale, + ``"seconds"``)."""
    rows = []
    for cond in conditions:
        logger.info("robustness: %s %g on %s", cond.kind, cond.value, name)
        start = time.perf_counter()
        metrics = evaluate_condition(cfg, model, name, cond, work, measures)
        seconds = round(time.perf_counter() - start, 1)
        rows.append({"kind": cond.kind, "value": cond.value, **metrics, "seconds": seconds})
        if not keep_copies:
            shutil.rmtree(work / cond.tag / "images", ignore_errors=True)
    return rows
