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
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
)
from detectron2.data import transforms as T
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import BoxMode

from ..data.datasets import register_coco_dataset, unregister_dataset
from ..engine.trainer import BMCTrainer
from ..robustness.scale import rescaled
from ..robustness.stain import hue_shift, saturation_scale, stain_shift
from ..utils.io import write_json_atomic
from .inference import dataset_records

logger = logging.getLogger(__name__)

STAIN_KINDS = ("hue", "sat", "h", "e")
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
    cfg: CfgNode, model: torch.nn.Module, name: str, cond: Condition, work: Path
) -> Dict[str, float]:
    """AP / AP50 of ``model`` on the copy of dataset ``name`` under ``cond``."""
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
        aug = KeepScaleResize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cond.scale)
        mapper = DatasetMapper(cfg, False, augmentations=[aug])
        loader = build_detection_test_loader(dataset_records(cfg, copy_name), mapper=mapper)
        evaluator = BMCTrainer.build_evaluator(cfg, copy_name, str(folder / "eval"))
        result = inference_on_dataset(model, loader, evaluator).get("bbox", {})
    finally:
        unregister_dataset(copy_name)
    return {"AP": float(result.get("AP", float("nan"))), "AP50": float(result.get("AP50", "nan"))}


def run_sweep(
    cfg: CfgNode,
    model: torch.nn.Module,
    name: str,
    conditions: Sequence[Condition],
    work: Path,
    keep_copies: bool = False,
) -> List[dict]:
    """Evaluate every condition; rows ``{"kind", "value", "AP", "AP50"}``."""
    rows = []
    for cond in conditions:
        logger.info("robustness: %s %g on %s", cond.kind, cond.value, name)
        metrics = evaluate_condition(cfg, model, name, cond, work)
        rows.append({"kind": cond.kind, "value": cond.value, **metrics})
        if not keep_copies:
            shutil.rmtree(work / cond.tag / "images", ignore_errors=True)
    return rows


def markdown_table(results: Dict[str, List[dict]]) -> str:
    """One table: a row per (model, condition) with AP and AP50."""
    lines = ["| model | condition | value | AP | AP50 |", "|---|---|---|---|---|"]
    for model, rows in results.items():
        for r in rows:
            lines.append(
                f"| {model} | {r['kind']} | {r['value']:g} | {r['AP']:.1f} | {r['AP50']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def plot_curves(results: Dict[str, List[dict]], out_dir: Path) -> Tuple[Path, Path]:
    """``ap_vs_scale.png`` (AP and AP50 vs factor, log x) and ``ap_vs_stain.png`` (AP vs the
    amount, one panel per stain kind) with a line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model, rows in results.items():
        pts = sorted((r["value"], r["AP"], r["AP50"]) for r in rows if r["kind"] == "scale")
        if pts:
            x, ap, ap50 = zip(*pts)
            ax.plot(x, ap, "o-", label=f"{model} AP")
            ax.plot(x, ap50, "s--", label=f"{model} AP50")
    ax.set(xscale="log", xlabel="rescale factor", ylabel="AP (%)", title="AP vs scale")
    ax.set_xticks([0.5, 0.75, 1, 1.5, 2, 3], ["0.5", "0.75", "1", "1.5", "2", "3"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    scale_png = out_dir / "ap_vs_scale.png"
    fig.tight_layout()
    fig.savefig(scale_png, dpi=110)
    plt.close(fig)
    kinds = [k for k in STAIN_KINDS if any(r["kind"] == k for v in results.values() for r in v)]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(3.2 * max(1, len(kinds)), 3.4))
    axes = np.atleast_1d(axes)
    labels = {"hue": "hue shift (deg)", "sat": "saturation factor", "h": "H shift", "e": "E shift"}
    for ax, kind in zip(axes, kinds):
        for model, rows in results.items():
            pts = sorted((r["value"], r["AP"]) for r in rows if r["kind"] == kind)
            ax.plot(*zip(*pts), "o-", label=model)
        ax.set(xlabel=labels[kind], ylabel="AP (%)")
        ax.locator_params(axis="x", nbins=4)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("AP vs stain shift")
    stain_png = out_dir / "ap_vs_stain.png"
    fig.tight_layout()
    fig.savefig(stain_png, dpi=110)
    plt.close(fig)
    return scale_png, stain_png


def load_results(path: Path) -> Dict[str, List[dict]]:
    """The ``results`` of a ``robustness.json``."""
    return json.loads(Path(path).read_text())["results"]
