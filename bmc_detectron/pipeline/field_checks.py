"""Before counting: each field's measurements and checks.

1. :func:`measure_field` (cached per field in ``checks/<field>.json`` of the report folder, by
   the image's SHA-256 and how it was measured): the field's red cells (:func:`red_cell_ruler`:
   the classical estimate, :func:`measure_rbc`, and the detected red cells' box diameter when
   the detector has a red-cell class and the profile has the training boxes') and its L*a*b*
   statistics;
2. :func:`field_flags`: why a field lies outside the training data (colour, scale after the
   rescale of the case's :class:`~bmc_detectron.pipeline.scale_plan.ScalePlan`, disagreement
   with the case). Flagged fields are still counted.
3. After counting, :func:`few_cells_warning`: fields where the stain says nucleated cells are
   plainly present (:func:`nucleus_fraction`: dark haematoxylin pixels) but the detected cells'
   boxes cover much less than those pixels (e.g. none at all).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bmc_detectron.pipeline.count_warnings import FEW_CELLS_FOUND, CountWarning
from bmc_detectron.pipeline.detector import Detections
from bmc_detectron.pipeline.field_prep import FieldPrep
from bmc_detectron.pipeline.scale_plan import ScalePlan, ScaleSetup
from bmc_detectron.smear.profile import box_diameters, red_cell_class
from bmc_detectron.smear.ranges import colour_reasons, scale_reason
from bmc_detectron.smear.ruler import RBCEstimate, estimate_rbc_diameter, rescaled
from bmc_detectron.smear.stain import lab_stats, nucleus_mask
from bmc_detectron.utils.io import write_json_atomic

CHECKS_DIR = "checks"
# Nucleated cells are plainly present above this fraction of nucleus-stained pixels ...
NUCLEUS_MIN_FRACTION = 0.005
# ... and (almost) none were found when the cells' boxes cover less than this share of them.
NUCLEUS_COVERED = 0.5


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


@dataclass
class FieldSurvey:
    """A field's measurements: red-cell diameter (px, ``nan``: none), spread and number, the
    detected red cells' box diameter (None: not measured), L*a*b* mean and std."""

    image_sha256: str
    key: str
    rbc_px: float
    rbc_spread: float
    rbc_n: int
    rbc_box_px: Optional[float]
    lab_mean: List[float]
    lab_std: List[float]

    def to_json(self) -> Dict[str, Any]:
        out = asdict(self)
        for k in ("rbc_px", "rbc_spread", "rbc_box_px"):
            v = out[k]
            out[k] = None if v is None or not math.isfinite(v) else round(float(v), 4)
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> FieldSurvey:
        nan = float("nan")
        return cls(
            str(data["image_sha256"]),
            str(data["key"]),
            nan if data["rbc_px"] is None else float(data["rbc_px"]),
            nan if data["rbc_spread"] is None else float(data["rbc_spread"]),
            int(data["rbc_n"]),
            None if data.get("rbc_box_px") is None else float(data["rbc_box_px"]),
            [float(v) for v in data["lab_mean"]],
            [float(v) for v in data["lab_std"]],
        )


def detector_red_class(counter: Any, setup: ScaleSetup) -> Optional[int]:
    """The detector's red-cell class when its red cells' boxes are the ruler (``--auto-scale``
    and the profile has the training boxes' diameter), else None."""
    if not setup.options.auto or setup.model is None or not setup.model.rbc_box_diameter_px:
        return None
    return red_cell_class(counter.detector.class_names)


def survey_key(counter: Any, setup: ScaleSetup) -> str:
    """How fields are measured: the classical estimate, plus the detector's red cells."""
    if detector_red_class(counter, setup) is None:
        return "classical"
    ident = json.dumps([counter.settings(), setup.options.stain], sort_keys=True, default=str)
    return "classical+detector:" + hashlib.sha256(ident.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RedCellReading:
    """What the red-cell ruler read on a field: the classical estimate (:func:`measure_rbc`) and
    the detected red cells' box diameter (None: not measured; ``nan``: too few red cells)."""

    estimate: RBCEstimate
    rbc_box_px: Optional[float] = None

    @property
    def rbc_px(self) -> float:
        """The classical red-cell diameter (px, ``nan``: none)."""
        return self.estimate.median_px


def red_cell_ruler(image: np.ndarray, counter: Any, setup: ScaleSetup) -> RedCellReading:
    """The red cells of one BGR field as the ruler of the case's scale: the classical estimate
    and, when the detector's red cells are the ruler (:func:`detector_red_class`; ``counter``
    None: never), their box diameter, detected on the stain-normalised field. What a field's
    size is relative to the training images' follows from it by
    :func:`~bmc_detectron.pipeline.scale_plan.relative_size`."""
    est = measure_rbc(image, "BGR")
    box = None
    red = None if counter is None else detector_red_class(counter, setup)
    if red is not None:
        stain = setup.profile.reinhard if setup.options.stain and setup.profile else None
        dets, _ = counter.detect(FieldPrep(stain=stain).normalise(image))
        box = rbc_from_detections(dets, red, image.shape[0], image.shape[1])
    return RedCellReading(est, box)


def measure_field(
    image: np.ndarray,
    sha: str,
    key: str,
    counter: Any,
    setup: ScaleSetup,
    detector_ruler: bool = True,
) -> FieldSurvey:
    """Measure one BGR field: its red cells (:func:`red_cell_ruler`; with ``detector_ruler``,
    the detector's red cells too) and its L*a*b* statistics."""
    ruler = red_cell_ruler(image, counter if detector_ruler else None, setup)
    mean, std = lab_stats(image, "BGR")
    est, box = ruler.estimate, ruler.rbc_box_px
    return FieldSurvey(sha, key, est.median_px, est.spread, est.n, box, mean.tolist(), std.tolist())


def load_survey(path: Path, sha: str, key: str) -> Optional[FieldSurvey]:
    """The cached measurements of a field when still valid (same image, same method)."""
    try:
        saved = FieldSurvey.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return saved if saved.image_sha256 == sha and saved.key == key else None


def save_survey(path: Path, survey: FieldSurvey) -> None:
    write_json_atomic(survey.to_json(), path)


def field_flags(
    name: str, survey: Optional[FieldSurvey], plan: ScalePlan, setup: ScaleSetup
) -> List[str]:
    """Why a field lies outside the training data ([]: it does not, or it was not checked)."""
    if survey is None:
        return []
    out: List[str] = []
    if setup.profile is not None:
        colour = colour_reasons(survey.lab_mean, survey.lab_std, setup.profile.ood)
        if setup.options.stain:
            colour = [f"{r} (before stain normalisation)" for r in colour]
        out += colour
        why = scale_reason(survey.rbc_px * plan.to_training, setup.profile.ood)
        why = why if plan.ruler_agrees else None  # the ruler cannot read this case
        if why and plan.to_training != 1.0:
            why = f"after the rescale by {plan.to_training:.2f}: {why}"
        out += [why] if why else []
    if name in plan.outliers and plan.ruler_agrees:
        ratio = plan.relative[name] / plan.median
        out.append(
            f"red cells {ratio:.2f}x the case median (tolerance {setup.options.tolerance:.0%})"
        )
    return out


def nucleus_fraction(image: np.ndarray, channel_order: str = "BGR", max_side: int = 512) -> float:
    """The fraction of a field's pixels stained like nuclei (haematoxylin above
    :data:`~bmc_detectron.smear.stain.NUCLEUS_HAEMATOXYLIN`), on a copy shrunk to ``max_side``
    (cheap)."""
    shrink = max_side / max(image.shape[:2])
    small = rescaled(image, shrink)[0] if shrink < 1.0 else image
    return float(nucleus_mask(small, channel_order).mean())


def boxes_fraction(boxes: Sequence[Sequence[float]], height: int, width: int) -> float:
    """The fraction of a ``height x width`` field covered by ``boxes`` (their union)."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, int(y0)) : int(math.ceil(y1)), max(0, int(x0)) : int(math.ceil(x1))] = True
    return float(mask.mean())


def few_cells_warning(
    fields: Sequence[Tuple[str, Optional[float], float]],
) -> List[CountWarning]:
    """A warning naming the fields (name, nucleus fraction or None, cells' box fraction) whose
    stain says nucleated cells are present but whose detected cells cover less than
    :data:`NUCLEUS_COVERED` of the nucleus-stained pixels."""
    few = [
        (name, nuclei, boxes)
        for name, nuclei, boxes in fields
        if nuclei is not None
        and nuclei >= NUCLEUS_MIN_FRACTION
        and boxes < NUCLEUS_COVERED * nuclei
    ]
    if not few:
        return []
    listed = ", ".join(
        f"{n} ({100 * nuc:.1f} % nucleus-stained pixels, cells cover {100 * b:.1f} %)"
        for n, nuc, b in few
    )
    return [
        CountWarning(
            FEW_CELLS_FOUND,
            f"{len(few)} field(s) where the stain shows nucleated cells but (almost) none were "
            f"found; check the scale and the model: {listed}",
        )
    ]
