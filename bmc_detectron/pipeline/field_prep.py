"""Preparing one field for the detector: its colours normalised to the training data's and its
size brought to the scale the model saw (:class:`FieldPrep`), and detection on the resized field
with the boxes mapped back to the field's pixels.

**The scale the model saw.** A detector sees every image after its test resize
(``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``): a 640 x 480 training image at
``MIN_SIZE_TEST`` 320 is seen at half its size. That resize brings *any* image to the same short
side, so it would undo a rescale made before it. When a field's scale is known (given, or
estimated from its red cells) the field is therefore resized once, by ``factor = f * k``:

- ``f`` brings it to the training images' pixels: the input's micrometres per pixel over the
  training images', or the training images' red-cell diameter over the case's;
- ``k`` is the detector's test resize of a training-sized image
  (:meth:`~bmc_detectron.pipeline.model_scale.ModelScale.input_factor`);

and the detector's own resize is switched off for it (:func:`unresized`). Large fields are tiled
*after* the rescale (tiles in detector-input pixels), and the boxes come back in the original
field's pixels (:func:`detect_rescaled`), where the classifier cuts its crops. Without a scale
nothing changes: the detector resizes each field or tile by its own rule. The factor of a case
is chosen by :mod:`bmc_detectron.pipeline.scale_plan`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from bmc_detectron.pipeline.detector import Detections
from bmc_detectron.smear.ruler import rescaled
from bmc_detectron.smear.stain import ReinhardTarget, reinhard_normalize


@dataclass(frozen=True)
class FieldPrep:
    """What is done to a field before detection.

    Attributes:
        factor: the field is resized by it before detection (rounded to 4 decimals).
        fixed_scale: the detector's own test resize is switched off (the factor is the scale).
        stain: Reinhard target the field's colours are normalised to (None: unchanged); the
            classifier's crops are cut from the normalised field too.
    """

    factor: float = 1.0
    fixed_scale: bool = False
    stain: Optional[ReinhardTarget] = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"field rescale factor must be positive, got {self.factor}")
        object.__setattr__(self, "factor", round(float(self.factor), 4))

    @property
    def identity(self) -> bool:
        """True when the field is detected as it is."""
        return self.factor == 1.0 and not self.fixed_scale and self.stain is None

    def settings(self) -> Dict[str, Any]:
        """What decides the cells (for a run's fingerprint)."""
        stain = None
        if self.stain is not None:
            stain = {k: [round(v, 3) for v in vs] for k, vs in self.stain.to_dict().items()}
        return {"factor": self.factor, "fixed_scale": self.fixed_scale, "stain": stain}

    def normalise(self, image_bgr: np.ndarray) -> np.ndarray:
        """The field with its colours normalised (itself without a stain target)."""
        if self.stain is None:
            return image_bgr
        return reinhard_normalize(image_bgr, self.stain, "BGR")


def unresized(detector: Any) -> Any:
    """A shallow copy of ``detector`` with its test resize off (``min_size`` 0; the detectors
    of :mod:`.detector` and :mod:`bmc_detectron.deploy.runtime` keep the size then); the
    detector itself when it does not resize."""
    if int(getattr(detector, "min_size", 0) or 0) <= 0:
        return detector
    out = copy.copy(detector)
    out.min_size = 0
    return out


def map_boxes_back(dets: Detections, fx: float, fy: float, height: int, width: int) -> Detections:
    """Detections of a field resized by (fx, fy) in the original ``height x width`` pixels."""
    boxes = dets.boxes.astype(np.float64) / np.array([fx, fy, fx, fy])
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return Detections(boxes, dets.scores, dets.classes)


def detect_rescaled(
    detect: Callable[[np.ndarray], Tuple[Detections, int]], image: np.ndarray, factor: float
) -> Tuple[Detections, int]:
    """``detect`` (whole field or tiles: returns detections and tiles) on ``image`` resized by
    ``factor``; boxes mapped back to ``image``'s pixels."""
    if factor == 1.0:
        return detect(image)
    height, width = image.shape[:2]
    resized, (fx, fy) = rescaled(image, factor)
    dets, tiles = detect(resized)
    return map_boxes_back(dets, fx, fy, height, width), tiles
