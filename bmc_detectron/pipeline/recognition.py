"""The recognition stage: crop each detected cell and classify the crops in batches.

The pipeline does not depend on how the classifier runs. :class:`CellClassifier` holds any object
with ``predict_crops(crops) -> probs`` (the ``BMCCellClassifier`` meta-architecture, an ONNX Runtime
session wrapper, a test stand-in) together with what the crops need: class names, crop size and
margin, and the channel order the classifier expects.

With an open-set threshold (:class:`~bmc_detectron.evaluation.open_set.OpenSetThreshold`, stored
beside the weights) the model must also have ``predict_logits(crops) -> logits`` (for a
feature score, kNN or Mahalanobis: ``predict_logits_and_features(crops) -> (logits, features)``);
the probabilities are then the logits' softmax and a cell whose open-set score is below the
threshold is flagged (the count lists it as Other). Without one, nothing changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from bmc_detectron.data.crops import crop_boxes
from bmc_detectron.evaluation.open_set import OpenSetThreshold, read_threshold
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
        open_set: the open-set threshold (None: every cell is one of ``class_names``).
    """

    model: Any
    class_names: List[str]
    crop_size: int
    crop_margin: float
    input_format: str = "BGR"
    device: str = "cpu"
    identity: Dict[str, str] = field(default_factory=dict)
    source: Dict[str, str] = field(default_factory=dict)
    open_set: Optional[OpenSetThreshold] = None

    @classmethod
    def from_config(
        cls, config_file: str, weights: str, opts: Sequence[str] = ()
    ) -> CellClassifier:
        """Build ``BMCCellClassifier`` (any META_ARCH with ``predict_crops``), load its weights and
        the open-set threshold stored beside them (:func:`~bmc_detectron.evaluation.open_set.
        read_threshold`; none: no open-set outcome)."""
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
        open_set = read_threshold(weights, identity["weights_sha256"])
        return cls(
            model=model,
            class_names=list(classifier_class_names(cfg)),
            crop_size=int(crop.CROP_SIZE),
            crop_margin=float(crop.CROP_MARGIN),
            input_format=cfg.INPUT.FORMAT,
            device=cfg.MODEL.DEVICE,
            identity=identity,
            source={"config": str(config_file), "weights": str(weights)},
            open_set=open_set,
        )

    def with_open_set_threshold(self, value: Optional[float]) -> CellClassifier:
        """A copy whose open-set threshold is ``value`` (the stored score kind, else energy);
        None keeps the stored one, ``-inf`` switches the open-set outcome off."""
        if value is None:
            return self
        if value == float("-inf"):
            return replace(self, open_set=None)
        score = self.open_set.score if self.open_set is not None else "energy"
        base = self.open_set if self.open_set is not None else OpenSetThreshold(float(value))
        return replace(self, open_set=replace(base, threshold=float(value), score=score))

    def classify(self, image: np.ndarray, boxes: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, K) float32 of the cells at ``boxes`` in a BGR ``image``."""
        return self.recognise(image, boxes, batch_size)[0]

    def recognise(
        self, image: np.ndarray, boxes: np.ndarray, batch_size: int = 64
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, K) float32 and the open-set flags (N,) bool (True: Other;
        all False without a threshold) of the cells at ``boxes`` in a BGR ``image``."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        k = len(self.class_names)
        if len(boxes) == 0:
            return np.zeros((0, k), dtype=np.float32), np.zeros(0, dtype=bool)
        needs = None if self.open_set is None else "predict_logits"
        if self.open_set is not None and self.open_set.needs_features:
            needs = "predict_logits_and_features"
        if needs is not None and not hasattr(self.model, needs):
            raise ValueError(
                f"an open-set threshold ({self.open_set.score}) needs a classifier with {needs}; "
                f"{type(self.model).__name__} has none"
            )
        if self.input_format == "RGB":
            image = np.ascontiguousarray(image[:, :, ::-1])
        probs, flags = [], []
        for start in range(0, len(boxes), max(1, batch_size)):
            crops = crop_boxes(
                image, boxes[start : start + batch_size], self.crop_size, self.crop_margin
            )
            tensor = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous().to(self.device)
            with torch.inference_mode():
                if self.open_set is None:
                    out = self._checked(self.model.predict_crops(tensor), len(crops), k)
                    flags.append(np.zeros(len(crops), dtype=bool))
                    probs.append(out)
                    continue
                features = None
                if self.open_set.needs_features:
                    raw, features = self.model.predict_logits_and_features(tensor)
                    features = torch.as_tensor(features).detach().to("cpu", torch.float32)
                else:
                    raw = self.model.predict_logits(tensor)
                logits = self._checked(raw, len(crops), k)
                flags.append(self.open_set.flags(logits, features))
                out = torch.from_numpy(logits).softmax(dim=1).numpy()
            probs.append(out)
        return np.concatenate(probs), np.concatenate(flags)

    def _checked(self, out: Any, n: int, k: int) -> np.ndarray:
        out = torch.as_tensor(out).detach().to("cpu", torch.float32).numpy()
        if out.shape != (n, k):
            raise ValueError(
                f"the classifier returned shape {tuple(out.shape)} for {n} crops; "
                f"expected ({n}, {k}) for classes {self.class_names}"
            )
        return out
