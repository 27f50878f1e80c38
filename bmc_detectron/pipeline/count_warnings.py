"""A count's warnings: each a sentence for people and a machine-readable code.

A :class:`CountWarning` *is* its sentence (a ``str``), so everything that shows warnings as text
keeps working; ``summary.json`` lists them as sentences under ``warnings`` and, with their
codes, under ``warning_codes`` (:func:`warning_entries`).
"""

from __future__ import annotations

from typing import Dict, Iterable, List

# The codes (one name per warning kind; "other" for a warning made without a code).
DETECTOR_SCALE = "detector_scale"  # the detector sees the cells far from their training size
RULER_SPREAD = "ruler_spread"  # the red-cell ruler disagrees with itself: no resize
RULER_OUTLIERS = "ruler_outliers"  # some fields' red cells differ from the case median
RULER_NONE = "ruler_none"  # no red cells measured: no resize
SCALE_DISAGREES = "scale_disagrees"  # the given (or file's) scale and the red cells disagree
PROBE_RULER_DISAGREE = "probe_ruler_disagree"  # the detector probe and the red cells: probe used
SCALE_UNSETTLED = "scale_unsettled"  # --auto-scale found no scale: counted at the model's scale
TRAINING_SIZE_UNKNOWN = "training_size_unknown"  # assumed the training images' size
FEW_CELLS_FOUND = "few_cells_found"  # nucleus-stained pixels but (almost) no cells detected
SLIDE_SCALE_UNKNOWN = (
    "slide_scale_unknown"  # a slide counted as read: its or the model's mpp unknown
)
TARGET_NOT_REACHED = "target_not_reached"  # a slide's counting zone ran out before the cells asked
OTHER = "other"


class CountWarning(str):
    """A warning's sentence with its ``code`` (one of the module's constants)."""

    code: str

    def __new__(cls, code: str, message: str) -> CountWarning:
        obj = super().__new__(cls, message)
        obj.code = code
        return obj


def warning_code(warning: str) -> str:
    """The code of a warning (:data:`OTHER` for a plain sentence)."""
    return getattr(warning, "code", OTHER)


def warning_entries(warnings: Iterable[str]) -> List[Dict[str, str]]:
    """``[{"code": ..., "message": ...}]`` of the warnings, in their order."""
    return [{"code": warning_code(w), "message": str(w)} for w in warnings]
