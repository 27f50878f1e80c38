"""The case's scale found from everything the count has (issue 31, section 2): one function,
:func:`find_scale`, for the count command (:func:`~.run.run_count`, PyTorch or ONNX Runtime
detector alike) and the web page (:mod:`bmc_detectron.serve.analysis`).

With ``--auto-scale`` and no ``--microns-per-pixel`` it gathers the evidence
:func:`~.scale_decision.decide_scale` weighs, cheapest first:

1. the pixel size every field's file carries (:mod:`.pixel_size`; headers only);
2. when the files settle nothing, the detector probe (:func:`~.scale_probe.probe_scale`) on at
   most ``sample`` evenly spaced fields, decoded one by one and colour-normalised as they will be
   counted; the detector runs on the unresized windows (its own test resize off, which the
   PyTorch :class:`~.detector.Detector` and the ONNX Runtime
   :class:`~bmc_detectron.deploy.runtime.OnnxDetector` both honour: the exported graph takes
   any H and W);

and :func:`~.scale_plan.plan_scale` decides, the red cells measured beforehand included. The
probe is skipped when the files already settle the scale (it would cost up to 8 detector calls
per sampled field for a cross-check).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from bmc_detectron.pipeline.detector_view import ScaleMismatchError, training_view
from bmc_detectron.pipeline.field_prep import FieldPrep
from bmc_detectron.pipeline.pixel_size import PixelSize, pixel_size_of
from bmc_detectron.pipeline.scale_decision import ScaleEvidence, case_file_scale
from bmc_detectron.pipeline.scale_plan import RedCells, ScalePlan, ScaleSetup, plan_scale
from bmc_detectron.pipeline.scale_probe import probe_scale, training_cell_input_px
from bmc_detectron.smear.profile import sample_indices

# Fields the probe looks at (evenly spaced over the case).
PROBE_SAMPLE = 4


class ScaleUnsettledError(ScaleMismatchError):
    """``--strict-scale`` and ``--auto-scale`` found no scale (one-line message)."""


def _file_usable(evidence: ScaleEvidence, setup: ScaleSetup) -> bool:
    model = setup.model
    known = model is not None and bool(model.microns_per_pixel)
    return evidence.file is not None and bool(evidence.file.microns_per_pixel) and known


def find_scale(
    setup: ScaleSetup,
    detector: Any,
    surveys: Mapping[str, RedCells],
    *,
    names: Sequence[str],
    data: Callable[[int], Optional[bytes]],
    image: Callable[[int], Optional[np.ndarray]],
    sample: int = PROBE_SAMPLE,
) -> ScalePlan:
    """The case's scale plan (module doc). ``names``: the fields in order; ``data(i)``: field
    ``i``'s file bytes, ``image(i)``: it decoded as BGR (None for either: unreadable, left
    out)."""
    opts = setup.options
    evidence = ScaleEvidence()
    if opts.auto and opts.microns_per_pixel is None:
        sizes: Dict[str, Optional[PixelSize]] = {}
        for i, name in enumerate(names):
            raw = data(i)
            if raw is not None:
                sizes[name] = pixel_size_of(raw)
        evidence.file = case_file_scale(sizes, opts.tolerance)
        if not _file_usable(evidence, setup):
            _probe(evidence, setup, detector, len(names), image, sample)
    return plan_scale(setup, surveys, detector, evidence)


def _probe(
    evidence: ScaleEvidence,
    setup: ScaleSetup,
    detector: Any,
    n: int,
    image: Callable[[int], Optional[np.ndarray]],
    sample: int,
) -> None:
    stain = setup.profile.reinhard if setup.options.stain and setup.profile else None
    prep = FieldPrep(stain=stain)
    fields = [prep.normalise(f) for i in sample_indices(n, sample) if (f := image(i)) is not None]
    if not fields:
        return
    image_size = None if setup.model is None else setup.model.image_size
    target = training_cell_input_px(setup.profile, detector)
    evidence.probe = probe_scale(detector, fields, sample=sample, training_cell_px=target)
    evidence.probe_view = training_view(detector, image_size).factor


def check_settled(plan: ScalePlan, setup: ScaleSetup) -> None:
    """Raise :class:`ScaleUnsettledError` when the options ask for the scale to be found and
    refuse what is not (``auto`` and ``strict_scale``) and it was not settled."""
    opts = setup.options
    if opts.auto and opts.strict_scale and not plan.summary.get("settled"):
        raise ScaleUnsettledError(
            f"the scale could not be settled ({plan.summary.get('decision') or 'no evidence'})"
            ": give --microns-per-pixel (--strict-scale)"
        )
