"""The recognition stage: crop each detected cell and classify the crops in batches.

The pipeline does not depend on how the classifier runs. :class:`CellClassifier` holds any object
with ``predict_crops(crops) -> probs`` (the ``BMCCellClassifier`` meta-architecture, an ONNX Runtime
session wrapper, a test stand-in) together with what the crops need: class names, crop size and
margin, and the channel order the classifier expects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from bmc_detectron.data.crops import crop_boxes
from bmc_detectron.utils.io import file_sha256


@dataclass
class CellClassifier:
    """A crop classifier and its crop settings.

    Attributes:
        model: has ``predict_crops(crops: (N, 3, S, S) uint8 tensor in input_format) -> (N, K)``
            class probabilities (rows sum to 1); N may be 0.
        class_names: the K class names, in the order of the probabilities.
        crop_size: S, the side of the square crops.
        crop_margin: context around a box, as a fraction of its longer side, on every side.
        input_format: ``"BGR"`` or ``"RGB"``, the channel order of the crops.
        device: where crop tensors go.
        identity: what identifies the model in a run's fingerprint (config and weights hashes).
        source: where the model came from (config and weights paths), for the report only.
    """

    model: Any
    class_names: List[str]
    crop_size: int
    crop_margin: float
    input_format: str = "BGR"
    device: str = "cpu"
    identity: Dict[str, str] = field(default_factory=dict)
    source: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls, config_file: str, weights: str, opts: Sequence[str] = ()
    ) -> CellClassifier:
        """Build ``BMCCellClassifier`` (any META_ARCH with ``predict_crops``), load its weights."""
        from bmc_detectron.config import build_cfg
        from bmc_detectron.engine.loading import load_model
        from bmc_detectron.modeling.classifier import (
            classifier_class_names,  # registers the META_ARCH
        )

        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: classifier weights not found")
        cfg = build_cfg(config_file, opts)
        model = load_model(cfg, weights)  # the config's BMC.PRECISION
        crop = cfg.MODEL.BMC.CLASSIFIER
        identity = {
            "config_sha256": hashlib.sha256(cfg.dump().encode()).hexdigest(),
            "weights_sha256": file_sha256(weights),
        }
        return cls(
            model=model,
            class_names=list(classifier_class_names(cfg)),
            crop_size=int(crop.CROP_SIZE),
            crop_margin=float(crop.CROP_MARGIN),
            input_format=cfg.INPUT.FORMAT,
            device=cfg.MODEL.DEVICE,
            identity=identity,
            source={"config": str(config_file), "weights": str(weights)},
        )

    def classify(self, image: np.ndarray, boxes: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, K) float32 of the cells at ``boxes`` in a BGR ``image``."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        k = len(self.class_names)
        if len(boxes) == 0:
            return np.zeros((0, k), dtype=np.float32)
        if self.input_format == "RGB":
            image = np.ascontiguousarray(image[:, :, ::-1])
        out = []
        for start in range(0, len(boxes), max(1, batch_size)):
            crops = crop_boxes(
                image, boxes[start : start + batch_size], self.crop_size, self.crop_margin
            )
            tensor = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous().to(self.device)
            with torch.inference_mode():
                probs = self.model.predict_crops(tensor)
            probs = torch.as_tensor(probs).detach().to("cpu", torch.float32).numpy()
            if probs.shape != (len(crops), k):
                raise ValueError(
                    f"predict_crops returned shape {tuple(probs.shape)} for {len(crops)} crops; "
                    f"expected ({len(crops)}, {k}) for classes {self.class_names}"
                )
            out.append(probs)
        return np.concatenate(out)
