"""The field's scale found by the detector itself (issue 31, section 2): a probe over candidate
factors on a sample of the case's fields.

Each sampled field (its central window, so that the detector's input stays at most ``window``
px) is resized by every candidate factor and detected with the detector's own test resize off
(:func:`~bmc_detectron.pipeline.field_prep.unresized`): the candidate *is* the factor from field
pixels to detector-input pixels, the ``FieldPrep.factor`` of a fixed-scale count. Per candidate
the evidence is the detections scoring at least ``score_floor`` whose box does not touch the
input's border (a cut cell's box is not its size): their number, their scores' sum per
million pixels of the field (windows differ in size), and their boxes' median size
(``sqrt(w * h)``, the equivalent-circle diameter of an ellipse, in detector-input pixels).

**Selection bias.** A detector finds cells near the size it was trained at: at a small factor
only the biggest cells are found (their median box is too big for the factor), at a large one only
the smallest. The score alone then prefers whatever scale finds the most, and each candidate's
boxes say less about the cells than about the detector. So when the training data's nucleated-cell
diameter as the detector saw it is known (:func:`training_cell_input_px`), the probe chooses the
candidate at which the median detected box matches it, where the selection is least biased, and
refines it to ``candidate * training / median``, kept within half a step of the candidate; the
score only rejects candidates where almost nothing is found, and by size not one whose boxes are
at least ``min_cells`` (the score is a density over the probed window: on an enlarged field the
large factors see a small window cut into many pieces and would reject the right, small factor).
Without it, the candidate with the highest score wins. The best candidate's neighbour towards the
estimate is probed at their geometric midpoint (``refine``).

The probe is ``settled`` only when some candidate finds cells, its ``confidence`` is at least
``min_confidence`` and, by size, the best median box is within a factor ``max_size_error`` of the
training diameter and is the median of at least ``min_cells`` boxes: nucleated cells vary by
about a third in size (coefficient of variation of the composites' cells: 0.33), so the median of
``n`` of them is known to about ``+-1.96 * 1.25 * 0.33 / sqrt(n)``, +-16 % at
:data:`MIN_PROBE_CELLS` = 25 (sparse fields, e.g. a few white cells among red cells, leave the
scale to the red cells). The confidence is, by score, the best candidate's relative margin over the
best factor that is not its neighbour (a peak, not a plateau); by size, how closely the median
box follows the factor between the two best candidates (1: in proportion; 0: boxes that do not
change with the factor say nothing).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bmc_detectron.pipeline.detector import Detections
from bmc_detectron.pipeline.detector_view import training_view
from bmc_detectron.pipeline.field_prep import unresized
from bmc_detectron.smear.profile import TrainingProfile, sample_indices
from bmc_detectron.smear.ruler import rescaled

CANDIDATES = (0.4, 0.5, 0.7, 1.0, 1.4, 2.0, 2.5)
#: the fewest boxes whose median size settles the probe by size (module doc)
MIN_PROBE_CELLS = 25


@dataclass(frozen=True)
class CandidateEvidence:
    """What the detector saw at one factor: ``n`` detections at or above the score floor over
    the sample, ``score`` their scores' sum per million field pixels, ``median_box_px`` their
    boxes' median size in detector-input pixels (None: nothing found)."""

    factor: float
    score: float
    n: int
    median_box_px: Optional[float]


@dataclass(frozen=True)
class ScaleProbe:
    """The probe's answer.

    Attributes:
        factor: field pixels to detector-input pixels (None: not found).
        settled: the evidence is clear enough to count at ``factor``.
        confidence: 0 to 1 (module doc).
        method: ``"size"`` (box sizes vs the training diameter), ``"score"`` or ``"none"``.
        reason: why the probe is not settled ("" when it is).
        evidence: per probed factor, in increasing order (the refinement included).
        training_cell_px: the training diameter as the detector saw it (None: unknown).
    """

    factor: Optional[float]
    settled: bool
    confidence: float
    method: str
    reason: str
    evidence: Tuple[CandidateEvidence, ...]
    training_cell_px: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        """A JSON-ready dict (for ``summary.json``)."""
        out = asdict(self)
        out["factor"] = None if self.factor is None else round(self.factor, 4)
        out["confidence"] = round(self.confidence, 3)
        out["evidence"] = [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(e).items()}
            for e in self.evidence
        ]
        return out


def training_cell_input_px(profile: Optional[TrainingProfile], detector: Any) -> Optional[float]:
    """The training data's median nucleated-cell diameter as the detector saw it in training
    (the profile's ``cell_diameter_px`` times the training resize); None when unknown."""
    cells = None if profile is None else (profile.cell_diameter_px or {}).get("median")
    if not cells or not math.isfinite(float(cells)) or float(cells) <= 0:
        return None
    return float(cells) * training_view(detector, profile.image_size).factor


def _window(image: np.ndarray, factor: float, window: int) -> np.ndarray:
    """The central part of ``image`` that is at most ``window`` px a side once resized."""
    if window <= 0:
        return image
    side = max(1, int(window / factor))
    h, w = image.shape[:2]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[y0 : y0 + side, x0 : x0 + side]


def _evidence(
    detect: Any, fields: Sequence[np.ndarray], factor: float, floor: float, window: int
) -> CandidateEvidence:
    sizes: List[np.ndarray] = []
    total = area = 0.0
    for image in fields:
        part = _window(image, factor, window)
        area += part.shape[0] * part.shape[1]
        resized, _ = rescaled(part, factor)
        dets = detect(resized)
        if isinstance(dets, tuple):  # (detections, tiles)
            dets = dets[0]
        h, w = resized.shape[:2]
        b = dets.boxes
        inside = (b[:, 0] > 1) & (b[:, 1] > 1) & (b[:, 2] < w - 1) & (b[:, 3] < h - 1)
        dets = Detections(b, dets.scores, dets.classes).select(inside & (dets.scores >= floor))
        wh = np.clip(dets.boxes[:, 2:] - dets.boxes[:, :2], 0, None)
        sizes.append(np.sqrt(wh[:, 0] * wh[:, 1]))
        total += float(dets.scores.sum())
    size = np.concatenate(sizes) if sizes else np.zeros(0)
    median = float(np.median(size)) if size.size else None
    return CandidateEvidence(factor, total * 1e6 / max(1.0, area), int(size.size), median)


def _size_error(e: CandidateEvidence, target: float) -> float:
    if not e.median_box_px:
        return float("inf")
    return abs(math.log(e.median_box_px / target))


def _ranked(viable: List[CandidateEvidence], target: Optional[float]) -> List[CandidateEvidence]:
    if target is None:
        return sorted(viable, key=lambda e: -e.score)
    return sorted(viable, key=lambda e: _size_error(e, target))


def _confidence(
    ranked: List[CandidateEvidence], target: Optional[float], evidence: List[CandidateEvidence]
) -> float:
    """By score, the best candidate's relative margin over the best of the factors that are not
    its neighbours in ``factors`` (a peak, not a plateau); by size, how closely the median box
    follows the factor between the two best (1: in proportion, 0: not at all). 1 when only one
    candidate finds cells."""
    if len(ranked) < 2:
        return 1.0
    best, second = ranked[0], ranked[1]
    if target is None:
        factors = [e.factor for e in evidence]
        i = factors.index(best.factor)
        near = set(factors[max(0, i - 1) : i + 2])
        rivals = [e.score for e in evidence if e.factor not in near] or [second.score]
        margin = (best.score - max(rivals)) / best.score if best.score > 0 else 0.0
    else:
        sizes = math.log(best.median_box_px / second.median_box_px)
        margin = sizes / math.log(best.factor / second.factor)
    return max(0.0, min(1.0, margin))


def _estimate(
    ranked: List[CandidateEvidence], factors: List[float], target: Optional[float]
) -> Tuple[float, float]:
    """The estimated factor and the neighbour of the best towards it (by score: the better
    neighbour; itself at the ends)."""
    best, scores = ranked[0], {e.factor: e.score for e in ranked}
    i = factors.index(best.factor)
    lower = factors[i - 1] if i > 0 else best.factor
    upper = factors[i + 1] if i + 1 < len(factors) else best.factor
    if target is None or not best.median_box_px:
        better = upper if scores.get(upper, 0.0) >= scores.get(lower, 0.0) else lower
        return best.factor, better if better != best.factor else lower
    implied = best.factor * target / best.median_box_px
    lo = math.sqrt(lower * best.factor) if lower != best.factor else best.factor / 1.2
    hi = math.sqrt(upper * best.factor) if upper != best.factor else best.factor * 1.2
    return min(max(implied, lo), hi), upper if implied >= best.factor else lower


def probe_scale(
    detector: Any,
    fields: Sequence[np.ndarray],
    candidates: Sequence[float] = CANDIDATES,
    *,
    sample: int = 4,
    training_cell_px: Optional[float] = None,
    score_floor: float = 0.5,
    min_found: float = 0.2,
    min_confidence: float = 0.1,
    max_size_error: float = 1.5,
    min_cells: int = MIN_PROBE_CELLS,
    refine: bool = True,
    window: int = 1024,
) -> ScaleProbe:
    """Probe ``candidates`` (factors, field to detector-input pixels) on at most ``sample``
    evenly spaced ``fields`` (module doc). A candidate whose score is below ``min_found`` times
    the best score, or that finds nothing, is rejected."""
    if not candidates or any(not (math.isfinite(c) and c > 0) for c in candidates):
        raise ValueError(f"candidate factors must be positive, got {list(candidates)}")
    if training_cell_px is not None and not training_cell_px > 0:
        raise ValueError(f"training cell diameter must be positive, got {training_cell_px}")
    detect = unresized(detector)
    chosen = [fields[i] for i in sample_indices(len(fields), sample)]
    probed = {c: _evidence(detect, chosen, c, score_floor, window) for c in sorted(candidates)}
    target = training_cell_px

    def decide() -> Tuple[List[CandidateEvidence], List[CandidateEvidence]]:
        evidence = [probed[c] for c in sorted(probed)]
        top = max(e.score for e in evidence)
        viable = [
            e
            for e in evidence
            if e.n > 0
            and top > 0
            and (e.score >= min_found * top or (target is not None and e.n >= min_cells))
        ]
        return evidence, _ranked(viable, target)

    evidence, ranked = decide()
    method = "score" if target is None else "size"
    if not ranked:
        return ScaleProbe(None, False, 0.0, "none", "no candidate finds cells", tuple(evidence))
    factor, neighbour = _estimate(ranked, sorted(probed), target)
    if refine and neighbour != ranked[0].factor:
        mid = round(math.sqrt(neighbour * ranked[0].factor), 4)
        probed[mid] = _evidence(detect, chosen, mid, score_floor, window)
        evidence, ranked = decide()
        factor, _ = _estimate(ranked, sorted(probed), target)
    confidence = _confidence(ranked, target, evidence)
    reason = ""
    if confidence < min_confidence:
        reason = f"flat evidence (confidence {confidence:.0%} < {min_confidence:.0%})"
    elif target is not None and _size_error(ranked[0], target) > math.log(max_size_error):
        reason = (
            f"no candidate sees cells at the training size ({target:.1f} px; closest "
            f"{ranked[0].median_box_px:.1f} px at x{ranked[0].factor:g})"
        )
    elif target is not None and ranked[0].n < min_cells:
        reason = (
            f"too few cells to read their size ({ranked[0].n} at x{ranked[0].factor:g}, "
            f"fewer than {min_cells})"
        )
    return ScaleProbe(factor, not reason, confidence, method, reason, tuple(evidence), target)
