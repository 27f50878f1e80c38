"""Data plumbing of the analyses: turn dataset records into model inputs with their gts, and run
a model (:func:`bmc_detectron.engine.loading.load_model`) over a registered dataset.
"""

from __future__ import annotations

import logging
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset
from detectron2.structures import Boxes, Instances

from bmc_detectron.analysis.tide import ImageDetections
from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.engine.trainer import BMCTrainer, load_checked_dicts
from bmc_detectron.structures.boxes import record_boxes

logger = logging.getLogger(__name__)


def dataset_records(cfg: CfgNode, name: str) -> List[dict]:
    """The records of a registered dataset as the trainer's test loader sees them: json prepared
    first, then checked (invalid boxes dropped, class count against the config)."""
    prepare_dataset(name)
    return load_checked_dicts(cfg, [name], filter_empty=False)


def class_names(name: str, num_classes: int) -> List[str]:
    """``thing_classes`` of a dataset, or "0", "1", ... when it has none."""
    names = MetadataCatalog.get(name).get("thing_classes")
    return list(names) if names else [str(i) for i in range(num_classes)]


class ModelInput(NamedTuple):
    """One image at the model's test resolution.

    Attributes:
        inputs: the detectron2 input dict (``image`` (3, H, W) uint8 in ``cfg.INPUT.FORMAT``,
            ``instances`` with ``gt_boxes`` / ``gt_classes`` in those pixels, original size).
        image_rgb: (H, W, 3) uint8 RGB of the resized image, for drawing.
    """

    inputs: dict
    image_rgb: np.ndarray


def make_input(
    cfg: CfgNode, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray
) -> ModelInput:
    """Resize an image (H, W, 3) in ``cfg.INPUT.FORMAT`` as at test time, with its (G, 4) gt
    boxes and (G,) classes."""
    aug_input = T.AugInput(image)
    transform = T.AugmentationList(utils.build_augmentation(cfg, False))(aug_input)
    resized = aug_input.image
    boxes = transform.apply_box(np.asarray(boxes, np.float64).reshape(-1, 4))
    h, w = resized.shape[:2]
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.as_tensor(np.asarray(classes), dtype=torch.int64).reshape(-1)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    inputs = {"image": tensor, "instances": inst, "height": image.shape[0], "width": image.shape[1]}
    rgb = utils.convert_image_to_rgb(resized, cfg.INPUT.FORMAT)
    return ModelInput(inputs, np.ascontiguousarray(rgb).astype(np.uint8))


def record_input(cfg: CfgNode, record: dict) -> ModelInput:
    """The :class:`ModelInput` of a dataset record (image read from ``file_name``)."""
    image = utils.read_image(record["file_name"], format=cfg.INPUT.FORMAT)
    boxes, classes = record_boxes(record)
    out = make_input(cfg, image, boxes, classes)
    out.inputs.update(file_name=record["file_name"], image_id=record.get("image_id"))
    return out


class _Collector(DatasetEvaluator):
    """Keeps every image's detections (boxes in the original image's pixels)."""

    def reset(self) -> None:
        self.outputs: dict = {}

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            self.outputs[inp["image_id"]] = (
                inst.pred_boxes.tensor.numpy().astype(np.float64),
                inst.pred_classes.numpy().astype(np.int64),
                inst.scores.numpy().astype(np.float64),
            )

    def evaluate(self) -> dict:
        return {}


def predict_dataset(
    cfg: CfgNode, model: torch.nn.Module, name: str
) -> Tuple[List[ImageDetections], List[dict]]:
    """Run ``model`` over dataset ``name`` through the trainer's test loader and detectron2's
    ``inference_on_dataset``; returns per-image gts + detections and the records, in order."""
    records = dataset_records(cfg, name)
    collector = _Collector()
    inference_on_dataset(model, BMCTrainer.build_test_loader(cfg, name), collector)
    images = []
    for rec in records:
        boxes, classes = record_boxes(rec)
        pb, pc, ps = collector.outputs.get(rec["image_id"], (np.zeros((0, 4)), [], []))
        images.append(ImageDetections(rec["image_id"], boxes, classes, pb, np.asarray(pc), ps))
    return images, records


def select_records(records: Sequence[dict], images: Sequence[str]) -> List[dict]:
    """Records chosen on the command line: ``["N"]`` = the first N, else file names (matched on
    the full path or the base name); raises ValueError naming an unknown file."""
    if len(images) == 1 and images[0].isdigit():
        return list(records[: int(images[0])])
    out = []
    for want in images:
        hits = [r for r in records if r["file_name"] == want or r["file_name"].endswith("/" + want)]
        if not hits:
            raise ValueError(f"{want}: no such image in the dataset")
        out += hits
    return out
