"""A field's scale and colour before detection: the model's scale, what is done to a field
(:class:`FieldPrep`), and detection on a rescaled field with the boxes mapped back.

**The scale the model saw.** A detector sees every image after its test resize
(``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``): a 640 x 480 training image at
``MIN_SIZE_TEST`` 320 is seen at half its size. That resize brings *any* image to the same short
side, so it would undo a rescale made before it. When a field's scale is known (given, or
estimated from its red cells) the field is therefore resized once, by ``factor = f * k``:

- ``f`` brings it to the training images' pixels: the input's micrometres per pixel over the
  training images', or the training images' red-cell diameter over the case's;
- ``k`` is the detector's test resize of a training-sized image (:meth:`ModelScale.input_factor`);

and the detector's own resize is switched off for it (:func:`unresized`). Large fields are tiled
*after* the rescale (tiles in detector-input pixels), and the boxes come back in the original
field's pixels (:func:`detect_rescaled`), where the classifier cuts its crops. Without a scale
nothing changes: the detector resizes each field or tile by its own rule.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from detectron2.data import transforms as T

from bmc_detectron.pipeline.detector import Detections
from bmc_detectron.smear.profile import PROFILE_FILE, DataProfile, box_diameters
from bmc_detectron.smear.ruler import RBCEstimate, estimate_rbc_diameter, rescaled
from bmc_detectron.smear.stain import ReinhardTarget, reinhard_normalize


@dataclass(frozen=True)
class ModelScale:
    """The training images' scale (each None when unknown) and where it was read.

    Attributes:
        microns_per_pixel: pixel size of the training images.
        rbc_diameter_px: their median red-cell diameter, classical estimate.
        rbc_box_diameter_px: median longer side of their red-cell boxes (annotations).
        image_size: their median (height, width).
        source: the profile's path, ``"ONNX sidecar"`` or ``"config"``.
    """

    microns_per_pixel: Optional[float] = None
    rbc_diameter_px: Optional[float] = None
    rbc_box_diameter_px: Optional[float] = None
    image_size: Optional[Tuple[int, int]] = None
    source: str = ""

    @classmethod
    def from_profile(cls, profile: DataProfile, source: str) -> ModelScale:
        """The scale recorded in a training profile."""
        return cls(
            profile.microns_per_pixel,
            profile.rbc_diameter_px,
            profile.rbc_box_diameter_px,
            profile.image_size,
            source,
        )

    @classmethod
    def from_config(cls, cfg: Any) -> Optional[ModelScale]:
        """``BMC.DATA.MICRONS_PER_PIXEL`` / ``RBC_DIAMETER_PX`` of a config (None if both 0)."""
        data = cfg.BMC.DATA
        mpp, rbc = float(data.MICRONS_PER_PIXEL), float(data.RBC_DIAMETER_PX)
        if mpp <= 0 and rbc <= 0:
            return None
        return cls(mpp if mpp > 0 else None, rbc if rbc > 0 else None, source="config")

    def filled(self, other: Optional[ModelScale]) -> ModelScale:
        """This scale with its unknown values taken from ``other`` (e.g. the config's)."""
        if other is None:
            return self
        values = {k: getattr(self, k) for k in ("microns_per_pixel", "rbc_diameter_px")}
        missing = {k: getattr(other, k) for k, v in values.items() if v is None}
        missing = {k: v for k, v in missing.items() if v is not None}
        if not missing:
            return self
        return replace(self, **missing, source=f"{self.source} + {other.source}")

    def input_factor(self, detector: Any) -> Optional[float]:
        """``k``: the detector's test resize of a training-sized image; 1 for a detector that
        does not resize; None when it does and the training image size is unknown."""
        min_size = int(getattr(detector, "min_size", 0) or 0)
        if min_size <= 0:
            return 1.0
        if self.image_size is None:
            return None
        h, w = self.image_size
        max_size = int(getattr(detector, "max_size", 0) or 0)
        nh, _ = T.ResizeShortestEdge.get_output_shape(h, w, min_size, max_size)
        return nh / h

    def to_json(self) -> Dict[str, Any]:
        """A JSON-ready dict."""
        size = None if self.image_size is None else list(self.image_size)
        return {
            "microns_per_pixel": self.microns_per_pixel,
            "rbc_diameter_px": _round(self.rbc_diameter_px),
            "rbc_box_diameter_px": _round(self.rbc_box_diameter_px),
            "image_size": size,
            "source": self.source,
        }


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


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


def measure_rbc(
    image: np.ndarray, channel_order: str = "BGR", max_side: int = 1024, min_px: float = 24.0
) -> RBCEstimate:
    """:func:`~bmc_detectron.smear.ruler.estimate_rbc_diameter` of a field, on a copy
    shrunk to ``max_side`` when the red cells stay at least ``min_px`` wide there (the estimate
    costs about a second per megapixel); the diameter in the field's pixels."""
    h, w = image.shape[:2]
    shrink = max_side / max(h, w)
    if shrink < 1.0:
        small, (fx, fy) = rescaled(image, shrink)
        est = estimate_rbc_diameter(small, channel_order)
        if np.isfinite(est.median_px) and est.median_px >= min_px:
            s = 0.5 * (fx + fy)
            # a disc of radius R measures 2R + 1 px: scale the 2R part only
            return RBCEstimate((est.median_px - 1.0) / s + 1.0, est.spread, est.n)
    return estimate_rbc_diameter(image, channel_order)


def rbc_from_detections(
    dets: Detections, red_class: int, height: int, width: int, min_cells: int = 5
) -> float:
    """Median longer box side of the detected red cells not cut by the field's border (``nan``
    with fewer than ``min_cells``)."""
    sides = box_diameters(dets.boxes[dets.classes == red_class], height, width)
    return float(np.median(sides)) if sides.size >= min_cells else float("nan")


def locate_profile(
    explicit: Optional[str],
    detector_weights: Optional[str] = None,
    detector_onnx: Optional[str] = None,
    detector: Any = None,
) -> Tuple[Optional[DataProfile], Optional[str]]:
    """The training profile and where it was read: ``explicit`` (must exist), else the ONNX
    sidecar's copy, else ``training_profile.json`` beside the detector's weights or ``.onnx``;
    (None, None) when there is none. ValueError for a file that is not a profile."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: training profile not found")
        return DataProfile.load(path), str(path)
    meta = getattr(detector, "meta", None)
    if detector_onnx and isinstance(meta, dict) and meta.get("training_profile"):
        where = f"{detector_onnx}.json (ONNX sidecar)"
        try:
            return DataProfile.from_dict(meta["training_profile"]), where
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad training profile ({e})") from None
    model_file = detector_onnx or detector_weights
    if model_file:
        beside = Path(model_file).parent / PROFILE_FILE
        if beside.is_file():
            return DataProfile.load(beside), str(beside)
    return None, None


def sidecar_scale(detector: Any) -> Optional[ModelScale]:
    """The config's scale recorded in an ONNX detector's sidecar (None if not recorded)."""
    meta = getattr(detector, "meta", None)
    scale = meta.get("scale") if isinstance(meta, dict) else None
    if not scale:
        return None
    mpp, rbc = scale.get("microns_per_pixel"), scale.get("rbc_diameter_px")
    if not mpp and not rbc:
        return None
    return ModelScale(mpp or None, rbc or None, source="ONNX sidecar (config)")
