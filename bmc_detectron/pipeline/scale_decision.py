"""Which scale a case is counted at, from what evidence, and how sure (issue 31, section 2).

The evidence, in order of precedence:

1. ``given``: the user's micrometres per pixel (``--microns-per-pixel``): always wins;
2. ``file``: the pixel size the image files carry (:mod:`.pixel_size`), when every field carries
   one, they agree within the tolerance and the model's own pixel size is known;
3. ``probe``: the detector's own probe over candidate factors (:mod:`.scale_probe`), when it is
   settled;
4. ``ruler``: the red cells' median size, when the fields agree with each other (spread within the
   tolerance).

2 to 4 are only asked with ``auto`` (``--auto-scale``, the commands' default; off with
``--no-auto-scale``). When the probe and the red cells disagree by more
than the tolerance the probe wins and a :data:`~.count_warnings.PROBE_RULER_DISAGREE` warning
says so. A case none of them settles is counted at the model's scale (factor 1: each field
detected as it is) with a :data:`~.count_warnings.SCALE_UNSETTLED` warning (refused with
``--strict-scale``, :func:`bmc_detectron.pipeline.auto_scale.check_settled`).

Every factor here is ``to_training``: field pixels to the training images' pixels. The probe
measures field pixels to detector-input pixels; divided by the factor at which the detector saw
the training images (``probe_view``) it is the same quantity, and the probe's own factor is kept
as the detector-input factor (``input_factor``) so that nothing is lost on the way.

**Confidence** (0 to 1): 1 for a given or file pixel size; the probe's own confidence (combined
with the red cells' as ``1 - (1 - a)(1 - b)`` when they agree); for the red cells alone,
``1 - spread / (2 * tolerance)`` (1 when every field agrees, 0.5 at the tolerance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from bmc_detectron.pipeline.count_warnings import (
    PROBE_RULER_DISAGREE,
    RULER_NONE,
    RULER_SPREAD,
    SCALE_DISAGREES,
    SCALE_UNSETTLED,
    CountWarning,
)
from bmc_detectron.pipeline.pixel_size import PixelSize, pixel_sizes_agree
from bmc_detectron.pipeline.scale_probe import ScaleProbe

# How each source is said in the reports (summary lines, HTML report; the page says the same).
SOURCE_WORDS = {
    "given": "given",
    "file": "read from the image files",
    "probe": "found by the detector probe",
    "ruler": "estimated from the red cells",
    "none": "not set",
}


@dataclass(frozen=True)
class FileScale:
    """The case's pixel size as its files carry it.

    Attributes:
        microns_per_pixel: the fields' median (None: not usable, ``note`` says why).
        carried: the fields that carry one; ``fields``: the fields looked at.
        how: where it was read (the first field's tag).
        note: why it is not used ("" when usable).
    """

    microns_per_pixel: Optional[float]
    carried: int
    fields: int
    how: str = ""
    note: str = ""

    def to_json(self) -> Dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "microns_per_pixel": self.microns_per_pixel,
            "fields_carrying": self.carried,
            "fields": self.fields,
            "how": self.how,
            "note": self.note,
        }


def case_file_scale(
    sizes: Mapping[str, Optional[PixelSize]], tolerance: float
) -> Optional[FileScale]:
    """The case's file pixel size from each field's (None when no field carries one)."""
    carried = {n: s for n, s in sizes.items() if s is not None}
    if not carried:
        return None
    values = tuple(s.microns_per_pixel for s in carried.values())
    how = next(iter(carried.values())).how
    if len(carried) < len(sizes):
        note = f"only {len(carried)} of {len(sizes)} field(s) carry a pixel size"
        return FileScale(None, len(carried), len(sizes), how, note)
    if not pixel_sizes_agree(values, tolerance):
        note = f"the fields' own pixel sizes disagree ({min(values):.4g}-{max(values):.4g} um/px)"
        return FileScale(None, len(carried), len(sizes), how, note)
    median = sorted(values)[len(values) // 2]
    return FileScale(median, len(carried), len(sizes), how)


@dataclass
class ScaleEvidence:
    """What is known about a case's scale besides the user's options and the red cells.

    Attributes:
        file: the files' own pixel size (None: not looked at or none carried).
        probe: the detector probe (None: not run).
        probe_view: the factor at which the detector saw the training images (divides the
            probe's factor into field-to-training pixels).
    """

    file: Optional[FileScale] = None
    probe: Optional[ScaleProbe] = None
    probe_view: float = 1.0


@dataclass
class ScaleDecision:
    """The chosen scale.

    Attributes:
        source: ``given``, ``file``, ``probe``, ``ruler`` or ``none``.
        to_training: field to training pixels (None: the fields are counted as they are).
        input_factor: field to detector-input pixels when the source measured it (the probe).
        microns_per_pixel: the fields' pixel size, when it follows (given, file, or the model's
            times ``to_training``).
        confidence: 0 to 1 (module doc).
        settled: the scale was asked for and found; False also when it was not asked for.
        reason: how it was decided, in words.
        warnings: what the report must say.
    """

    source: str = "none"
    to_training: Optional[float] = None
    input_factor: Optional[float] = None
    microns_per_pixel: Optional[float] = None
    confidence: float = 0.0
    settled: bool = False
    reason: str = ""
    warnings: List[CountWarning] = field(default_factory=list)


#: a case with more of its measured fields than this off the red cells' median is one the ruler
#: cannot read (crowded marrow: touching cells read as large red cells)
RULER_MAX_OUTLIER_SHARE = 0.25
#: ... counted from this many fields off the median on (a few of a small case are flagged singly)
RULER_MIN_OUTLIERS = 3


def _disagree(a: float, b: float, tolerance: float) -> bool:
    return abs(a / b - 1.0) > tolerance


def ruler_agrees(spread: float, outlier_share: float, tolerance: float) -> bool:
    """Whether the red cells of a case agree with themselves: their relative spread over the
    fields within ``tolerance`` and at most :data:`RULER_MAX_OUTLIER_SHARE` of the measured
    fields off the case median by more than it (crowded fields, where the ruler misreads;
    ``outlier_share`` as :func:`outlier_share` gives it)."""
    if math.isfinite(spread) and spread > tolerance:
        return False
    return not (math.isfinite(outlier_share) and outlier_share > RULER_MAX_OUTLIER_SHARE)


def outlier_share(outliers: int, measured: int) -> float:
    """The share of the measured fields off the red cells' median, 0 with fewer than
    :data:`RULER_MIN_OUTLIERS` of them."""
    return outliers / measured if measured and outliers >= RULER_MIN_OUTLIERS else 0.0


def ruler_spread_warning(spread: float, outlier_share: float, tolerance: float) -> CountWarning:
    """The case-level warning of red cells that do not agree with themselves."""
    return CountWarning(
        RULER_SPREAD,
        f"the red cells' sizes disagree over the fields (spread {spread:.0%}, "
        f"{outlier_share:.0%} of the fields off the median by more than {tolerance:.0%}): the "
        "red-cell ruler cannot read this case; red-cell sizes neither set the scale nor flag "
        "single fields",
    )


def _ruler(relative: float, spread: float, share: float, tolerance: float) -> Optional[float]:
    """The red cells' factor when they agree with themselves (None otherwise)."""
    if not (math.isfinite(relative) and relative > 0):
        return None
    return 1.0 / relative if ruler_agrees(spread, share, tolerance) else None


def _given(mpp: float, model_mpp: float, ruler: Optional[float], tol: float) -> ScaleDecision:
    factor = mpp / model_mpp
    out = ScaleDecision("given", factor, None, mpp, 1.0, True, f"{mpp:g} um/px given")
    if ruler and _disagree(ruler, factor, tol):
        out.warnings.append(
            CountWarning(
                SCALE_DISAGREES,
                f"the red cells suggest resizing the fields by {ruler:.2f} but the given "
                f"scale resizes them by {factor:.2f}: check the microns per pixel given",
            )
        )
    return out


def _from_file(
    file: FileScale, model_mpp: float, ruler: Optional[float], tol: float
) -> ScaleDecision:
    mpp = float(file.microns_per_pixel)
    factor = mpp / model_mpp
    reason = f"{mpp:g} um/px read from {file.carried} field file(s) ({file.how})"
    out = ScaleDecision("file", factor, None, mpp, 1.0, True, reason)
    if ruler and _disagree(ruler, factor, tol):
        out.warnings.append(
            CountWarning(
                SCALE_DISAGREES,
                f"the red cells suggest resizing the fields by {ruler:.2f} but the files' own "
                f"pixel size ({mpp:g} um/px) resizes them by {factor:.2f}: the files' was used",
            )
        )
    return out


def _from_probe(
    probe: ScaleProbe, view: float, ruler: Optional[float], ruler_conf: float, tol: float
) -> ScaleDecision:
    factor = float(probe.factor) / view
    reason = f"detector probe x{probe.factor:.3g} ({probe.method}, {len(probe.evidence)} factors)"
    out = ScaleDecision("probe", factor, float(probe.factor), None, probe.confidence, True, reason)
    if ruler is None:
        return out
    if _disagree(ruler, factor, tol):
        out.reason += f"; the red cells disagree (x{ruler:.3g})"
        out.warnings.append(
            CountWarning(
                PROBE_RULER_DISAGREE,
                f"the red cells suggest resizing the fields by {ruler:.2f} but the detector "
                f"probe finds {factor:.2f} (more than {tol:.0%} apart): the probe's scale was "
                "used",
            )
        )
    else:
        out.reason += f"; the red cells agree (x{ruler:.3g})"
        out.confidence = 1.0 - (1.0 - probe.confidence) * (1.0 - ruler_conf)
    return out


def _unsettled(why: List[str]) -> ScaleDecision:
    reason = "; ".join(why) or "no evidence"
    text = (
        f"the scale could not be settled ({reason}): the fields were counted at the model's "
        "scale (factor 1, each field as it is); give --microns-per-pixel"
    )
    return ScaleDecision(reason=reason, warnings=[CountWarning(SCALE_UNSETTLED, text)])


def decide_scale(
    *,
    given_mpp: Optional[float],
    auto: bool,
    tolerance: float,
    model_mpp: Optional[float],
    evidence: ScaleEvidence,
    ruler_relative: float = float("nan"),
    ruler_spread: float = float("nan"),
    ruler_outliers: float = 0.0,
) -> ScaleDecision:
    """The case's scale from the evidence (module doc). ``ruler_relative``: the case's median
    red-cell size over the training images' (``nan``: none measured), ``ruler_spread`` its
    relative spread over the fields, ``ruler_outliers`` the share of the measured fields off
    the median by more than ``tolerance``."""
    ruler = _ruler(ruler_relative, ruler_spread, ruler_outliers, tolerance)
    if given_mpp is not None and model_mpp:
        return _given(given_mpp, model_mpp, ruler, tolerance)
    if not auto:
        return ScaleDecision(
            reason="not asked (automatic scale off, no pixel size given): the fields' pixel "
            "size assumed to be the training images'"
        )
    why: List[str] = []
    ruler_warnings: List[CountWarning] = []
    if not math.isfinite(ruler_relative):
        why.append("no red cells measured")
    elif ruler is None:
        why.append(
            f"the red cells disagree over the fields (spread {ruler_spread:.0%}, "
            f"{ruler_outliers:.0%} of the fields off the median)"
        )
        ruler_warnings.append(ruler_spread_warning(ruler_spread, ruler_outliers, tolerance))
    file = evidence.file
    if file is not None and file.microns_per_pixel and model_mpp:
        return _from_file(file, model_mpp, ruler, tolerance)
    if file is not None:
        why.append(file.note or "the model's own pixel size is unknown")
    probe = evidence.probe
    ruler_conf = 0.0
    if ruler is not None:
        spread = ruler_spread if math.isfinite(ruler_spread) else 0.0
        ruler_conf = max(0.0, 1.0 - spread / (2.0 * tolerance))
    if probe is not None and probe.settled and probe.factor:
        out = _from_probe(probe, evidence.probe_view, ruler, ruler_conf, tolerance)
    elif ruler is not None:
        if probe is not None:
            why.append(f"detector probe: {probe.reason}")
        out = ScaleDecision("ruler", ruler, None, None, ruler_conf, True, "the red cells")
        if probe is not None:
            out.reason += f" (detector probe not settled: {probe.reason})"
    else:
        if probe is not None:
            why.append(f"detector probe: {probe.reason}")
        out = _unsettled(why)
        if not math.isfinite(ruler_relative):
            ruler_warnings.append(CountWarning(RULER_NONE, "no red cells measured in any field"))
    out.warnings = [*ruler_warnings, *out.warnings]
    return out
