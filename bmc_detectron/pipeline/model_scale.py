"""The scale the model saw: its training images' pixel size, red-cell and image sizes
(:class:`ModelScale`), read from the training profile (:func:`locate_profile`), an ONNX
detector's sidecar (:func:`sidecar_scale`) or the config.

**The red-cell reference.** A field's red-cell ruler reading is divided by the training images'
red-cell diameter. When the training data was generated, two values are known: the generator's
exact diameter and the ruler's reading on those images. The reading is used when the ruler read
the training images well (within :data:`RULER_BIAS_TOLERANCE` of the truth): its own bias then
cancels. When it misread them (crowded composite fields: +65 %, ``studies/scale/ruler_bias.py``)
the truth is used, so that a field the ruler reads well is not resized by the ruler's error on
the training data; ``rbc_reference`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
from detectron2.data import transforms as T

from bmc_detectron.smear.profile import PROFILE_FILE, TrainingProfile

#: the ruler's reading on the training images is the red-cell reference only within this
#: relative distance of the generator's exact diameter (module doc)
RULER_BIAS_TOLERANCE = 0.15

MAKE_PROFILE = (
    "make one with `python -m bmc_detectron.tools.estimate_scale --dataset TRAIN_SET "
    "--output DIR/training_profile.json` or give --training-profile"
)


@dataclass(frozen=True)
class ModelScale:
    """The training images' scale (each None when unknown) and where it was read.

    Attributes:
        microns_per_pixel: pixel size of the training images.
        rbc_diameter_px: their median red-cell diameter, the reference of the field's ruler
            reading (module doc: the ruler's reading or the generator's exact diameter).
        rbc_box_diameter_px: median longer side of their red-cell boxes (annotations).
        image_size: their median (height, width).
        source: the profile's path, ``"ONNX sidecar"`` or ``"config"``.
        rbc_reference: what ``rbc_diameter_px`` is: ``"ruler"``, ``"generator"`` or ``""``
            (given by a config or sidecar, or unknown).
    """

    microns_per_pixel: Optional[float] = None
    rbc_diameter_px: Optional[float] = None
    rbc_box_diameter_px: Optional[float] = None
    image_size: Optional[Tuple[int, int]] = None
    source: str = ""
    rbc_reference: str = ""

    @classmethod
    def from_profile(cls, profile: TrainingProfile, source: str) -> ModelScale:
        """The scale recorded in a training profile."""
        rbc, reference = red_cell_reference(profile)
        return cls(
            profile.microns_per_pixel,
            rbc,
            profile.rbc_box_diameter_px,
            profile.image_size,
            source,
            reference,
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
            "rbc_reference": self.rbc_reference,
        }


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def red_cell_reference(profile: TrainingProfile) -> Tuple[Optional[float], str]:
    """The training images' red-cell diameter a field's ruler reading is divided by, and what it
    is (module doc): the ruler's reading when it is within :data:`RULER_BIAS_TOLERANCE` of the
    generator's exact diameter or no exact one is known, else the exact one."""
    ruler, known = profile.rbc_ruler_px, profile.known_rbc_diameter_px
    if ruler and known and abs(ruler / known - 1.0) > RULER_BIAS_TOLERANCE:
        return known, "generator"
    if ruler:
        return ruler, "ruler"
    return (known, "generator") if known else (None, "")


def locate_profile(
    explicit: Optional[str],
    detector_weights: Optional[str] = None,
    detector_onnx: Optional[str] = None,
    detector: Any = None,
) -> Tuple[Optional[TrainingProfile], Optional[str]]:
    """The training profile and where it was read: ``explicit`` (must exist), else the ONNX
    sidecar's copy, else ``training_profile.json`` beside the detector's weights or ``.onnx``;
    (None, None) when there is none. ValueError for a file that is not a profile."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: training profile not found")
        return TrainingProfile.load(path), str(path)
    meta = getattr(detector, "meta", None)
    if detector_onnx and isinstance(meta, dict) and meta.get("training_profile"):
        where = f"{detector_onnx}.json (ONNX sidecar)"
        try:
            return TrainingProfile.from_dict(meta["training_profile"]), where
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad training profile ({e})") from None
    model_file = detector_onnx or detector_weights
    if model_file:
        beside = Path(model_file).parent / PROFILE_FILE
        if beside.is_file():
            return TrainingProfile.load(beside), str(beside)
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
