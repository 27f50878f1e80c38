"""Before counting: each field's red cells and colour, the case's scale, out-of-distribution flags.

1. :func:`measure_field` (cached per field in ``checks/<field>.json`` of the report folder, by
   the image's SHA-256 and how it was measured): the field's red-cell diameter (the classical
   estimate, :func:`~.scale.measure_rbc`), the detected red cells' box diameter when the detector
   has a red-cell class and the profile has the training boxes', and its L*a*b* statistics;
2. :func:`plan_scale`: the factor every field of the case is resized by before detection, from
   the given micrometres per pixel or from the red cells (the case's median size relative to the
   training images'), with the per-field spread and the fields that disagree;
3. :func:`field_flags`: why a field lies outside the training data (colour, scale after the
   rescale, disagreement with the case). Flagged fields are still counted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from bmc_detectron.pipeline.scale import FieldPrep, ModelScale, measure_rbc, rbc_from_detections
from bmc_detectron.smear.profile import NOMINAL_RBC_MICRONS, DataProfile, red_cell_class
from bmc_detectron.smear.ranges import colour_reasons, scale_reason
from bmc_detectron.smear.ruler import case_scale
from bmc_detectron.smear.stain import lab_stats
from bmc_detectron.utils.io import write_json_atomic

CHECKS_DIR = "checks"
STAIN_METHODS = ("reinhard",)
MAKE_PROFILE = (
    "make one with `python -m bmc_detectron.tools.estimate_scale --dataset TRAIN_SET "
    "--output DIR/training_profile.json` or give --training-profile"
)


@dataclass(frozen=True)
class ScaleOptions:
    """The count's scale and stain options.

    Attributes:
        microns_per_pixel: the input's pixel size, when known.
        auto: estimate the scale from the red cells (used unless ``microns_per_pixel``).
        stain: ``"reinhard"`` to normalise the fields' colours to the training data's, or None.
        tolerance: relative red-cell size difference from the case median that is warned.
    """

    microns_per_pixel: Optional[float] = None
    auto: bool = False
    stain: Optional[str] = None
    tolerance: float = 0.15


@dataclass
class ScaleSetup:
    """The options with what they need: the model's scale and the training profile."""

    options: ScaleOptions = field(default_factory=ScaleOptions)
    model: Optional[ModelScale] = None
    profile: Optional[DataProfile] = None
    profile_source: Optional[str] = None

    @property
    def survey_needed(self) -> bool:
        """Fields are measured before counting (OOD check, estimate or cross-check)."""
        return self.options.auto or self.profile is not None


def make_setup(
    options: ScaleOptions,
    profile: Optional[DataProfile] = None,
    profile_source: Optional[str] = None,
    config_scale: Optional[ModelScale] = None,
) -> ScaleSetup:
    """Check that the options have what they need; ValueError (one line) otherwise. The model's
    scale is the profile's, its unknown values filled from ``config_scale``."""
    model = config_scale
    if profile is not None:
        model = ModelScale.from_profile(profile, profile_source or "").filled(config_scale)
    mpp = options.microns_per_pixel
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"the input's microns per pixel must be positive, got {mpp}")
    if mpp is not None and (model is None or model.microns_per_pixel is None):
        raise ValueError(
            "the input's microns per pixel was given but the model's is unknown: no "
            "microns_per_pixel in its training profile nor BMC.DATA.MICRONS_PER_PIXEL in its "
            f"config ({MAKE_PROFILE} --microns-per-pixel X)"
        )
    if options.auto and (model is None or not model.rbc_diameter_px):
        raise ValueError(
            "--auto-scale: the training images' red-cell diameter is unknown: none in a "
            f"training profile nor BMC.DATA.RBC_DIAMETER_PX in the config ({MAKE_PROFILE})"
        )
    if options.stain is not None:
        if options.stain not in STAIN_METHODS:
            raise ValueError(f"unknown stain normalisation {options.stain!r}: {STAIN_METHODS}")
        if profile is None:
            raise ValueError(f"--stain-normalize needs the training profile ({MAKE_PROFILE})")
    if not 0 < options.tolerance < 1:
        raise ValueError(f"scale tolerance must be in (0, 1), got {options.tolerance}")
    return ScaleSetup(options, model, profile, profile_source)


def with_options(setup: ScaleSetup, options: ScaleOptions) -> ScaleSetup:
    """``setup``'s model scale and profile with other options (checked as by make_setup)."""
    make_setup(options, setup.profile, setup.profile_source, setup.model)  # raises if unusable
    return ScaleSetup(options, setup.model, setup.profile, setup.profile_source)


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


def measure_field(
    image: np.ndarray,
    sha: str,
    key: str,
    counter: Any,
    setup: ScaleSetup,
    detector_ruler: bool = True,
) -> FieldSurvey:
    """Measure one BGR field (with ``detector_ruler``, the detector's red cells too, on the
    stain-normalised field)."""
    est = measure_rbc(image, "BGR")
    mean, std = lab_stats(image, "BGR")
    box = None
    red = detector_red_class(counter, setup) if detector_ruler else None
    if red is not None:
        stain = setup.profile.reinhard if setup.options.stain and setup.profile else None
        dets, _ = counter.detect(FieldPrep(stain=stain).normalise(image))
        box = rbc_from_detections(dets, red, image.shape[0], image.shape[1])
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


def relative_size(survey: FieldSurvey, model: ModelScale) -> float:
    """The field's red cells over the training images' (detector boxes first), ``nan`` if
    unmeasured."""
    box, ref_box = survey.rbc_box_px, model.rbc_box_diameter_px
    if box is not None and math.isfinite(box) and ref_box:
        return box / ref_box
    if math.isfinite(survey.rbc_px) and model.rbc_diameter_px:
        return survey.rbc_px / model.rbc_diameter_px
    return float("nan")


@dataclass
class ScalePlan:
    """How the case's fields are prepared, and what the report says about it.

    Attributes:
        prep: the rescale and stain normalisation of every field.
        to_training: the factor that brings a field to the training images' pixels (1: none).
        summary: ``summary.json``'s ``scale`` entry.
        warnings: case-level warnings.
        relative: per field, its red cells' size over the training images' (``nan``: unknown).
        median: the case's median of ``relative`` (``nan``: unknown).
        spread: its relative spread (median absolute deviation / median).
        outliers: the fields whose red cells disagree with the case median.
    """

    prep: FieldPrep
    to_training: float = 1.0
    summary: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    relative: Dict[str, float] = field(default_factory=dict)
    median: float = float("nan")
    spread: float = float("nan")
    outliers: List[str] = field(default_factory=list)


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _ruler_summary(
    plan: ScalePlan, surveys: Dict[str, FieldSurvey], tolerance: float
) -> Optional[Dict[str, Any]]:
    measured = [n for n, r in plan.relative.items() if math.isfinite(r)]
    if not measured:
        return None
    boxes = sum(_finite(surveys[n].rbc_box_px) for n in measured)
    method = "detected red cells" if boxes == len(measured) else "classical (OpenCV)"
    if 0 < boxes < len(measured):
        method = "detected red cells where found, else classical"
    px = [surveys[n].rbc_px for n in measured if math.isfinite(surveys[n].rbc_px)]
    return {
        "method": method,
        "median_px": round(float(np.median(px)), 2) if px else None,
        "relative_to_training": round(plan.median, 4),
        "spread": round(plan.spread, 4),
        "fields_measured": len(measured),
        "fields": len(plan.relative),
        "outliers": list(plan.outliers),
        "tolerance": tolerance,
    }


def _measure_case(plan: ScalePlan, setup: ScaleSetup, surveys: Dict[str, FieldSurvey]) -> None:
    if setup.model is None or not surveys:
        return
    names = list(surveys)
    plan.relative = {n: relative_size(surveys[n], setup.model) for n in names}
    case = case_scale([plan.relative[n] for n in names], setup.options.tolerance)
    plan.median = case.median_px
    plan.outliers = [names[i] for i in case.outliers]
    plan.spread = case.spread


def _choose_factor(plan: ScalePlan, setup: ScaleSetup) -> Optional[float]:
    """The factor to the training scale (None: none) and its source in ``plan.summary``."""
    opts, model = setup.options, setup.model
    estimated = 1.0 / plan.median if _finite(plan.median) else None
    plan.summary["source"] = "none"
    if opts.microns_per_pixel is not None and model is not None and model.microns_per_pixel:
        factor = opts.microns_per_pixel / model.microns_per_pixel
        plan.summary.update(source="given", microns_per_pixel=opts.microns_per_pixel)
        if estimated and abs(estimated / factor - 1.0) > opts.tolerance:
            plan.warnings.append(
                f"the red cells suggest resizing the fields by {estimated:.2f} but the given "
                f"scale resizes them by {factor:.2f}: check the microns per pixel given"
            )
        return factor
    if not opts.auto:
        return None
    if estimated is None:
        plan.warnings.append(
            "no red cells measured in any field: the scale could not be estimated, the fields "
            "were counted at their own size"
        )
        return None
    plan.summary["source"] = "estimated"
    if model is not None and model.microns_per_pixel:
        plan.summary["microns_per_pixel"] = round(model.microns_per_pixel * estimated, 5)
    return estimated


def plan_scale(setup: ScaleSetup, surveys: Dict[str, FieldSurvey], detector: Any) -> ScalePlan:
    """The case's rescale factor and stain normalisation from the options and measurements."""
    opts = setup.options
    stain = setup.profile.reinhard if opts.stain and setup.profile is not None else None
    plan = ScalePlan(FieldPrep(stain=stain))
    plan.summary["microns_per_pixel"] = None
    _measure_case(plan, setup, surveys)
    factor = _choose_factor(plan, setup)
    if factor is not None:
        k = setup.model.input_factor(detector)
        if k is None:
            plan.warnings.append(
                "the training images' size is unknown (no training profile): assumed that the "
                "detector saw them at their own size"
            )
            k = 1.0
        plan.prep, plan.to_training = FieldPrep(factor * k, True, stain), factor
    if plan.outliers:
        plan.warnings.append(
            f"{len(plan.outliers)} field(s) whose red cells differ from the case median by more "
            f"than {opts.tolerance:.0%}: {', '.join(plan.outliers)}"
        )
    px = [s.rbc_px for s in surveys.values() if math.isfinite(s.rbc_px)]
    ruler = _ruler_summary(plan, surveys, opts.tolerance)
    plan.summary.update(
        microns_per_pixel_nominal=round(NOMINAL_RBC_MICRONS / float(np.median(px)), 5)
        if px
        else None,
        to_training_scale=None if factor is None else round(factor, 4),
        factor=plan.prep.factor,
        detector_resize="off (fixed scale)" if plan.prep.fixed_scale else "the model's own",
        model=None if setup.model is None else setup.model.to_json(),
        red_cells=ruler,
        stain_normalize=opts.stain,
        profile=setup.profile_source,
        ood_checked=setup.profile is not None,
    )
    return plan


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
        if why and plan.to_training != 1.0:
            why = f"after the rescale by {plan.to_training:.2f}: {why}"
        out += [why] if why else []
    if name in plan.outliers:
        ratio = plan.relative[name] / plan.median
        out.append(
            f"red cells {ratio:.2f}x the case median (tolerance {setup.options.tolerance:.0%})"
        )
    return out
