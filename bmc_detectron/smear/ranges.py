"""Out-of-distribution check of a field against the training data: colour (L*a*b* mean and
standard deviation) and scale (red-cell diameter).

    profile = TrainingProfile.from_images(training_images)      # once, saved as JSON
    check = check_field(image, profile)                           # per field
    if check.reasons: ...                                         # e.g. "L* mean 41.2 outside ..."
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from bmc_detectron.smear.ruler import estimate_rbc_diameter
from bmc_detectron.smear.stain import lab_stats

_CHANNELS = ("L*", "a*", "b*")
Range = Tuple[float, float]


def _widen(values: np.ndarray, margin: float, floor: float) -> List[Range]:
    """Per column: [min, max] widened by ``margin`` of its width, at least ``floor`` a side."""
    lo, hi = values.min(axis=0), values.max(axis=0)
    pad = np.maximum(margin * (hi - lo), floor)
    return [(float(a), float(b)) for a, b in zip(lo - pad, hi + pad)]


@dataclass(frozen=True)
class TrainingProfile:
    """The training data's range of per-image L*a*b* means and standard deviations and its
    median red-cell diameter (px); a field whose diameter differs by more than
    ``scale_tolerance`` (relative) is off-scale."""

    lab_mean: List[Range]
    lab_std: List[Range]
    rbc_diameter_px: float
    scale_tolerance: float = 0.25

    @classmethod
    def from_images(
        cls,
        images: Iterable[np.ndarray],
        channel_order: str = "RGB",
        margin: float = 0.25,
        scale_tolerance: float = 0.25,
    ) -> TrainingProfile:
        """Ranges over ``images`` widened by ``margin`` of their width (at least 3 units of L*a*b*
        mean, 2 of standard deviation); diameter = median of the per-image medians."""
        means, stds, diameters = [], [], []
        for image in images:
            mean, std = lab_stats(image, channel_order)
            means.append(mean)
            stds.append(std)
            diameters.append(estimate_rbc_diameter(image, channel_order).median_px)
        return cls.from_stats(means, stds, diameters, margin, scale_tolerance)

    @classmethod
    def from_stats(
        cls,
        means: Sequence[Sequence[float]],
        stds: Sequence[Sequence[float]],
        diameters: Sequence[float],
        margin: float = 0.25,
        scale_tolerance: float = 0.25,
    ) -> TrainingProfile:
        """:meth:`from_images` from per-image L*a*b* means, standard deviations and red-cell
        diameters (``nan``: none measured) computed elsewhere."""
        if len(means) == 0:
            raise ValueError("TrainingProfile: no images")
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
    def from_dict(cls, data: dict) -> TrainingProfile:
        return cls(
            [tuple(r) for r in data["lab_mean"]],
            [tuple(r) for r in data["lab_std"]],
            float(data["rbc_diameter_px"]),
            float(data.get("scale_tolerance", 0.25)),
        )


@dataclass
class FieldCheck:
    """A field's statistics and the reasons (empty: in distribution) it is out of range."""

    lab_mean: List[float]
    lab_std: List[float]
    rbc_diameter_px: float
    reasons: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons


def _range_reasons(values: np.ndarray, ranges: List[Range], what: str) -> List[str]:
    out = []
    for name, v, (lo, hi) in zip(_CHANNELS, values, ranges):
        if not lo <= v <= hi:
            out.append(f"{name} {what} {v:.1f} outside the training range [{lo:.1f}, {hi:.1f}]")
    return out


def colour_reasons(
    mean: Sequence[float], std: Sequence[float], profile: TrainingProfile
) -> List[str]:
    """Why a field's L*a*b* mean and standard deviation are out of the training range (or [])."""
    reasons = _range_reasons(np.asarray(mean), profile.lab_mean, "mean")
    return reasons + _range_reasons(np.asarray(std), profile.lab_std, "std")


def scale_reason(diameter: float, profile: TrainingProfile) -> Optional[str]:
    """Why a red-cell diameter (px) is off the training scale, or None (also when the profile
    has no diameter)."""
    ref = profile.rbc_diameter_px
    if not (np.isfinite(ref) and ref > 0):
        return None
    if not np.isfinite(diameter):
        return "no red cells found: the scale cannot be checked"
    if abs(diameter / ref - 1.0) > profile.scale_tolerance:
        return (
            f"red-cell diameter {diameter:.1f} px vs {ref:.1f} px in training "
            f"(rescale by {ref / diameter:.2f})"
        )
    return None


def check_field(
    image: np.ndarray,
    profile: TrainingProfile,
    channel_order: str = "RGB",
    diameter: Optional[float] = None,
) -> FieldCheck:
    """Compare one field with ``profile``: colour statistics and red-cell scale (``diameter``:
    the field's red-cell diameter if already measured)."""
    mean, std = lab_stats(image, channel_order)
    if diameter is None:
        diameter = estimate_rbc_diameter(image, channel_order).median_px
    reasons = colour_reasons(mean, std, profile)
    why = scale_reason(diameter, profile)
    reasons += [why] if why else []
    return FieldCheck([float(v) for v in mean], [float(v) for v in std], diameter, reasons)
