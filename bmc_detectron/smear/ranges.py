"""The training data's ranges, the out-of-distribution check of a field: colour (L*a*b* mean and
standard deviation) and scale (red-cell diameter).

    ranges = TrainingRanges.from_stats(means, stds, diameters)   # the training images' statistics
    reasons = colour_reasons(mean, std, ranges)                   # per field, e.g. "L* mean 41.2
    why = scale_reason(diameter, ranges)                          #   outside ...", or []

:class:`TrainingRanges` is the ``ood`` entry of ``training_profile.json``
(:class:`~bmc_detectron.smear.profile.TrainingProfile`); the count checks each field with
:func:`~bmc_detectron.pipeline.field_checks.field_flags`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

_CHANNELS = ("L*", "a*", "b*")
Range = Tuple[float, float]


def _widen(values: np.ndarray, margin: float, floor: float) -> List[Range]:
    """Per column: [min, max] widened by ``margin`` of its width, at least ``floor`` a side."""
    lo, hi = values.min(axis=0), values.max(axis=0)
    pad = np.maximum(margin * (hi - lo), floor)
    return [(float(a), float(b)) for a, b in zip(lo - pad, hi + pad)]


@dataclass(frozen=True)
class TrainingRanges:
    """The training data's range of per-image L*a*b* means and standard deviations and its
    median red-cell diameter (px); a field whose diameter differs by more than
    ``scale_tolerance`` (relative) is off-scale."""

    lab_mean: List[Range]
    lab_std: List[Range]
    rbc_diameter_px: float
    scale_tolerance: float = 0.25

    @classmethod
    def from_stats(
        cls,
        means: Sequence[Sequence[float]],
        stds: Sequence[Sequence[float]],
        diameters: Sequence[float],
        margin: float = 0.25,
        scale_tolerance: float = 0.25,
    ) -> TrainingRanges:
        """Ranges of per-image L*a*b* means and standard deviations (each widened by ``margin`` of
        its width, at least 3 units of mean and 2 of standard deviation a side) and the median
        of the per-image red-cell diameters (``nan``: none measured)."""
        if len(means) == 0:
            raise ValueError("TrainingRanges: no images")
        d = np.asarray(diameters, np.float64)
        diameter = float(np.median(d[np.isfinite(d)])) if np.isfinite(d).any() else float("nan")
        return cls(
            _widen(np.asarray(means, np.float64), margin, 3.0),
            _widen(np.asarray(stds, np.float64), margin, 2.0),
            diameter,
            scale_tolerance,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingRanges:
        return cls(
            [tuple(r) for r in data["lab_mean"]],
            [tuple(r) for r in data["lab_std"]],
            float(data["rbc_diameter_px"]),
            float(data.get("scale_tolerance", 0.25)),
        )


def _range_reasons(values: np.ndarray, ranges: List[Range], what: str) -> List[str]:
    out = []
    for name, v, (lo, hi) in zip(_CHANNELS, values, ranges):
        if not lo <= v <= hi:
            out.append(f"{name} {what} {v:.1f} outside the training range [{lo:.1f}, {hi:.1f}]")
    return out


def colour_reasons(
    mean: Sequence[float], std: Sequence[float], ranges: TrainingRanges
) -> List[str]:
    """Why a field's L*a*b* mean and standard deviation are out of the training range (or [])."""
    reasons = _range_reasons(np.asarray(mean), ranges.lab_mean, "mean")
    return reasons + _range_reasons(np.asarray(std), ranges.lab_std, "std")


def scale_reason(diameter: float, ranges: TrainingRanges) -> Optional[str]:
    """Why a red-cell diameter (px) is off the training scale, or None (also when the ranges
    have no diameter)."""
    ref = ranges.rbc_diameter_px
    if not (np.isfinite(ref) and ref > 0):
        return None
    if not np.isfinite(diameter):
        return "no red cells found: the scale cannot be checked"
    if abs(diameter / ref - 1.0) > ranges.scale_tolerance:
        return (
            f"red-cell diameter {diameter:.1f} px vs {ref:.1f} px in training "
            f"(rescale by {ref / diameter:.2f})"
        )
    return None
