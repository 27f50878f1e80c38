"""The case's scale plan: the scale the model saw, the count's scale and stain options, and the
factor every field of the case is resized by before detection.

1. :class:`~bmc_detectron.pipeline.model_scale.ModelScale`: the training images' scale
   (:mod:`bmc_detectron.pipeline.model_scale`);
2. :func:`make_setup`: the options (:class:`ScaleOptions`) checked against what they need, as a
   :class:`ScaleSetup`;
3. :func:`plan_scale`: from the given micrometres per pixel, the files' own pixel size, the
   detector probe or the red cells measured in each field
   (:mod:`bmc_detectron.pipeline.field_checks`; the case's median size relative to the training
   images'), as :mod:`bmc_detectron.pipeline.scale_decision` decides, the
   :class:`~bmc_detectron.pipeline.field_prep.FieldPrep` of every field, with the per-field spread
   and the fields that disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Protocol

import numpy as np

from bmc_detectron.pipeline.count_warnings import (
    RULER_OUTLIERS,
    RULER_SPREAD,
    TRAINING_SIZE_UNKNOWN,
    CountWarning,
    warning_code,
)
from bmc_detectron.pipeline.detector_view import DETECTOR_SCALE_TOLERANCE
from bmc_detectron.pipeline.field_prep import FieldPrep
from bmc_detectron.pipeline.model_scale import MAKE_PROFILE, ModelScale
from bmc_detectron.pipeline.scale_decision import (
    ScaleDecision,
    ScaleEvidence,
    decide_scale,
    outlier_share,
    ruler_agrees,
    ruler_spread_warning,
)
from bmc_detectron.smear.profile import NOMINAL_RBC_MICRONS, TrainingProfile
from bmc_detectron.smear.ruler import case_scale
from bmc_detectron.smear.stain import STAIN_METHODS


@dataclass(frozen=True)
class ScaleOptions:
    """The count's scale and stain options.

    Attributes:
        microns_per_pixel: the input's pixel size, when known.
        auto: find the scale (unless ``microns_per_pixel``): the files' own pixel size, the
            detector probe, the red cells (:mod:`.scale_decision`).
        stain: ``"reinhard"`` to normalise the fields' colours to the training data's, or None.
        tolerance: relative red-cell size difference from the case median that is warned; a
            case whose fields' spread exceeds it is not resized by the red cells.
        detector_scale_tolerance: a field seen by the detector more than this factor away
            from the training size is warned (:mod:`.detector_view`).
        strict_scale: refuse such a field instead of warning.
    """

    microns_per_pixel: Optional[float] = None
    auto: bool = False
    stain: Optional[str] = None
    tolerance: float = 0.15
    detector_scale_tolerance: float = DETECTOR_SCALE_TOLERANCE
    strict_scale: bool = False


@dataclass
class ScaleSetup:
    """The options with what they need: the model's scale and the training profile."""

    options: ScaleOptions = field(default_factory=ScaleOptions)
    model: Optional[ModelScale] = None
    profile: Optional[TrainingProfile] = None
    profile_source: Optional[str] = None

    @property
    def survey_needed(self) -> bool:
        """Fields are measured before counting (OOD check, estimate or cross-check)."""
        return self.options.auto or self.profile is not None


def make_setup(
    options: ScaleOptions,
    profile: Optional[TrainingProfile] = None,
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
    if options.stain is not None:
        if options.stain not in STAIN_METHODS:
            raise ValueError(f"unknown stain normalisation {options.stain!r}: {STAIN_METHODS}")
        if profile is None:
            raise ValueError(f"--stain-normalize needs the training profile ({MAKE_PROFILE})")
    if not 0 < options.tolerance < 1:
        raise ValueError(f"scale tolerance must be in (0, 1), got {options.tolerance}")
    if not options.detector_scale_tolerance > 1:
        raise ValueError(
            "the detector scale tolerance must be a factor > 1, got "
            f"{options.detector_scale_tolerance}"
        )
    return ScaleSetup(options, model, profile, profile_source)


def with_options(setup: ScaleSetup, options: ScaleOptions) -> ScaleSetup:
    """``setup``'s model scale and profile with other options (checked as by make_setup)."""
    make_setup(options, setup.profile, setup.profile_source, setup.model)  # raises if unusable
    return ScaleSetup(options, setup.model, setup.profile, setup.profile_source)


class RedCells(Protocol):
    """A field's red-cell sizes as the plan reads them (a
    :class:`~bmc_detectron.pipeline.field_checks.FieldSurvey` or
    :class:`~bmc_detectron.pipeline.field_checks.RedCellReading`)."""

    @property
    def rbc_px(self) -> float:
        """The classical red-cell diameter (px, ``nan``: none)."""

    @property
    def rbc_box_px(self) -> Optional[float]:
        """The detected red cells' box diameter (px; None: not measured)."""


def relative_size(survey: RedCells, model: ModelScale) -> float:
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
        outlier_share: their share of the fields measured (0 for fewer than three,
            :func:`~.scale_decision.outlier_share`).
        ruler_agrees: the red cells agree with themselves over the case
            (:func:`~.scale_decision.ruler_agrees`); when they do not, they neither choose the
            scale nor flag single fields.
    """

    prep: FieldPrep
    to_training: float = 1.0
    summary: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    relative: Dict[str, float] = field(default_factory=dict)
    median: float = float("nan")
    spread: float = float("nan")
    outliers: List[str] = field(default_factory=list)
    outlier_share: float = 0.0
    ruler_agrees: bool = True


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _ruler_summary(
    plan: ScalePlan, surveys: Mapping[str, RedCells], tolerance: float
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


def _measure_case(plan: ScalePlan, setup: ScaleSetup, surveys: Mapping[str, RedCells]) -> None:
    if setup.model is None or not surveys:
        return
    names = list(surveys)
    plan.relative = {n: relative_size(surveys[n], setup.model) for n in names}
    case = case_scale([plan.relative[n] for n in names], setup.options.tolerance)
    plan.median = case.median_px
    plan.outliers = [names[i] for i in case.outliers]
    plan.spread = case.spread
    measured = sum(math.isfinite(v) for v in plan.relative.values())
    plan.outlier_share = outlier_share(len(case.outliers), measured)
    plan.ruler_agrees = ruler_agrees(plan.spread, plan.outlier_share, setup.options.tolerance)


def _input_factor(
    plan: ScalePlan, setup: ScaleSetup, decision: ScaleDecision, detector: Any
) -> float:
    """Field to detector-input pixels: the probe's own, else ``to_training`` times the
    detector's test resize of a training-sized image (assumed 1, warned, when unknown)."""
    if decision.input_factor is not None:
        return decision.input_factor
    k = None if setup.model is None else setup.model.input_factor(detector)
    if k is None:
        plan.warnings.append(
            CountWarning(
                TRAINING_SIZE_UNKNOWN,
                "the training images' size is unknown (no training profile): assumed that "
                "the detector saw them at their own size",
            )
        )
        k = 1.0
    return float(decision.to_training) * k


def _decide(plan: ScalePlan, setup: ScaleSetup, evidence: Optional[ScaleEvidence]) -> ScaleDecision:
    opts, model = setup.options, setup.model
    evidence = evidence or ScaleEvidence()
    decision = decide_scale(
        given_mpp=opts.microns_per_pixel,
        auto=opts.auto,
        tolerance=opts.tolerance,
        model_mpp=None if model is None else model.microns_per_pixel,
        evidence=evidence,
        ruler_relative=plan.median,
        ruler_spread=plan.spread,
        ruler_outliers=plan.outlier_share,
    )
    mpp = decision.microns_per_pixel
    if mpp is None and decision.to_training and model is not None and model.microns_per_pixel:
        mpp = round(model.microns_per_pixel * decision.to_training, 5)
    plan.summary.update(
        source=decision.source,
        asked=opts.auto or opts.microns_per_pixel is not None,
        microns_per_pixel=mpp,
        settled=decision.settled,
        confidence=round(decision.confidence, 3),
        decision=decision.reason,
        evidence={
            "file": None if evidence.file is None else evidence.file.to_json(),
            "probe": None if evidence.probe is None else evidence.probe.to_json(),
        },
    )
    if opts.auto and not plan.ruler_agrees:
        plan.summary["ruler_rejected"] = True
    return decision


def plan_scale(
    setup: ScaleSetup,
    surveys: Mapping[str, RedCells],
    detector: Any,
    evidence: Optional[ScaleEvidence] = None,
) -> ScalePlan:
    """The case's rescale factor and stain normalisation from the options, the red cells
    measured in ``surveys`` and the other ``evidence`` (the files' pixel size, the detector
    probe: :func:`~.auto_scale.find_scale` gathers it), decided by
    :func:`~.scale_decision.decide_scale`."""
    opts = setup.options
    stain = setup.profile.reinhard if opts.stain and setup.profile is not None else None
    plan = ScalePlan(FieldPrep(stain=stain))
    _measure_case(plan, setup, surveys)
    decision = _decide(plan, setup, evidence)
    plan.warnings.extend(decision.warnings)
    factor = decision.to_training
    if factor is not None:
        plan.prep = FieldPrep(_input_factor(plan, setup, decision, detector), True, stain)
        plan.to_training = factor
    if plan.outliers and plan.ruler_agrees:
        plan.warnings.append(
            CountWarning(
                RULER_OUTLIERS,
                f"{len(plan.outliers)} field(s) whose red cells differ from the case median by "
                f"more than {opts.tolerance:.0%}: {', '.join(plan.outliers)}",
            )
        )
    elif (
        not plan.ruler_agrees
        and opts.microns_per_pixel is None
        and all(warning_code(w) != RULER_SPREAD for w in plan.warnings)
    ):
        plan.warnings.append(ruler_spread_warning(plan.spread, plan.outlier_share, opts.tolerance))
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
