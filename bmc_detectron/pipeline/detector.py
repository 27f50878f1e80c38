"""The detection stage: a detectron2 detector run the way ``DefaultPredictor`` runs it.

The image is resized by ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``, given to the model in
``INPUT.FORMAT`` and the boxes come back in the pixels of the image that went in. The resized
image is padded to the backbone's size divisibility by repeating its edge pixels
(:func:`pad_to_multiple`), not by the model's own flat padding: a model trained on images whose
size never needed padding (the demo's 256 x 256 fields) reads a wide flat strip as a row of
cells. Any detector of
the repository works: a class-agnostic one (one class, named ``"cell"``) that only finds nucleated
cells for a classifier to recognise, or a multi-class one whose own classes are counted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T

from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.utils.io import file_sha256

# Name of the single class of a class-agnostic detector.
CELL = "cell"


@dataclass
class Detections:
    """Detections of one image: (N, 4) XYXY boxes in pixels, (N,) scores, (N,) class indices."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (a boolean mask or integer indices)."""
        return Detections(self.boxes[index], self.scores[index], self.classes[index])


def detector_num_classes(cfg) -> int:
    """Number of classes of the detector a config builds (RetinaNet-style or R-CNN-style)."""
    if "RCNN" in cfg.MODEL.META_ARCHITECTURE:
        return int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    return int(cfg.MODEL.RETINANET.NUM_CLASSES)


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """``image`` (H, W, C) padded at the bottom and right to multiples of ``multiple`` by
    repeating its edge pixels (itself when ``multiple <= 1`` or no padding is needed)."""
    h, w = image.shape[:2]
    if multiple <= 1 or (h % multiple == 0 and w % multiple == 0):
        return image
    ph, pw = -h % multiple, -w % multiple
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")


def fit_to_image(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    input_size: Tuple[int, int],
    output_size: Tuple[int, int],
) -> Detections:
    """Boxes in the pixels of the resized ``input_size`` (H, W) image (its padding beyond)
    scaled to ``output_size`` (H, W), clipped to it, empty ones dropped (detectron2's
    ``detector_postprocess``)."""
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    boxes[:, 0::2] *= np.float32(output_size[1] / input_size[1])
    boxes[:, 1::2] *= np.float32(output_size[0] / input_size[0])
    np.clip(boxes[:, 0::2], 0, output_size[1], out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, output_size[0], out=boxes[:, 1::2])
    keep = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    return Detections(boxes[keep], np.asarray(scores)[keep], np.asarray(classes)[keep])


def detector_class_names(cfg) -> List[str]:
    """Class names of a detector: ``["cell"]`` for one class, else its test dataset's classes.

    Falls back to the 11 marrow classes for an 11-class detector, then to ``class0, class1, ...``.
    """
    n = detector_num_classes(cfg)
    if n == 1:
        return [CELL]
    for name in cfg.DATASETS.TEST:
        if name in MetadataCatalog.list():
            known = MetadataCatalog.get(name).get("thing_classes")
            if known and len(known) == n:
                return list(known)
    if n == len(MARROW_ABBRS):
        return list(MARROW_ABBRS)
    return [f"class{i}" for i in range(n)]


@dataclass
class Detector:
    """A detectron2 detector with its pre-processing; ``detector(image_bgr) -> Detections``.

    Attributes:
        model: a detectron2 meta-architecture in eval mode (takes a list of input dicts).
        class_names: names of the detector's classes, by class index.
        min_size, max_size: the test resize rule (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``);
            ``min_size <= 0`` keeps the image size.
        train_min_size, train_max_size: the training resize rule (``INPUT.MIN_SIZE_TRAIN`` /
            ``MAX_SIZE_TRAIN``; empty / 0: unknown), to compare the scales the model saw.
        input_format: ``"BGR"`` or ``"RGB"``, the channel order the model was trained on.
        device: where the model's inputs go.
        identity: what identifies the model in a run's fingerprint (config and weights hashes).
        source: where the model came from (config and weights paths), for the report only.
        size_divisibility: inputs are edge-padded to its multiples (0: none; None: the model's
            backbone's padding constraint, as the model pads, 0 without one).
    """

    model: torch.nn.Module
    class_names: List[str]
    min_size: int = 800
    max_size: int = 1333
    train_min_size: Tuple[int, ...] = ()
    train_max_size: int = 0
    input_format: str = "BGR"
    device: str = "cpu"
    identity: Dict[str, str] = field(default_factory=dict)
    source: Dict[str, str] = field(default_factory=dict)
    size_divisibility: Optional[int] = None

    def __post_init__(self) -> None:
        if self.size_divisibility is None:
            backbone = getattr(self.model, "backbone", None)
            padding = dict(getattr(backbone, "padding_constraints", None) or {})
            div = padding.get("size_divisibility") or getattr(backbone, "size_divisibility", 0)
            self.size_divisibility = int(div or 0)

    @classmethod
    def from_config(cls, config_file: str, weights: str, opts: Sequence[str] = ()) -> Detector:
        """Build the model of ``config_file`` and load ``weights`` (a local .pth / .pkl).

        Raises :class:`bmc_detectron.config.ConfigError` for a bad config or override and
        FileNotFoundError for missing weights.
        """
        from bmc_detectron.config import build_cfg
        from bmc_detectron.engine.loading import load_model

        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: detector weights not found")
        cfg = build_cfg(config_file, opts)
        model = load_model(cfg, weights)  # the config's BMC.PRECISION
        identity = {
            "config_sha256": hashlib.sha256(cfg.dump().encode()).hexdigest(),
            "weights_sha256": file_sha256(weights),
        }
        return cls(
            model=model,
            class_names=detector_class_names(cfg),
            min_size=int(cfg.INPUT.MIN_SIZE_TEST),
            max_size=int(cfg.INPUT.MAX_SIZE_TEST),
            train_min_size=tuple(int(v) for v in cfg.INPUT.MIN_SIZE_TRAIN),
            train_max_size=int(cfg.INPUT.MAX_SIZE_TRAIN),
            input_format=cfg.INPUT.FORMAT,
            device=cfg.MODEL.DEVICE,
            identity=identity,
            source={"config": str(config_file), "weights": str(weights)},
        )

    def _model_input(self, image: np.ndarray) -> Tuple[Dict[str, object], Tuple[int, int]]:
        """The model's input dict (boxes come back in its padded pixels) and the resized
        image's (H, W)."""
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        if self.min_size > 0:
            resize = T.ResizeShortestEdge([self.min_size, self.min_size], self.max_size)
            image = resize.get_transform(image).apply_image(image)
        size = image.shape[:2]
        image = pad_to_multiple(image, self.size_divisibility)
        tensor = torch.as_tensor(np.ascontiguousarray(image).astype("float32").transpose(2, 0, 1))
        height, width = image.shape[:2]
        return {"image": tensor.to(self.device), "height": height, "width": width}, size

    def __call__(self, image: np.ndarray) -> Detections:
        """Detect cells in an (H, W, 3) uint8 BGR image; boxes in its pixels."""
        inputs, size = self._model_input(image)
        with torch.inference_mode():
            instances = self.model([inputs])[0]["instances"].to("cpu")
        return fit_to_image(
            instances.pred_boxes.tensor.numpy(),
            instances.scores.numpy(),
            instances.pred_classes.numpy(),
            size,
            image.shape[:2],
        )
