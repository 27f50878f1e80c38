"""Summaries of measured values in which some entries may be missing (None) or NaN."""

from __future__ import annotations

import statistics
from typing import Optional, Sequence


def _present(values: Sequence[Optional[float]]) -> list:
    return [float(v) for v in values if v is not None and v == v]


def nanmean(values: Sequence[Optional[float]]) -> float:
    """Mean of the values that are neither None nor NaN (NaN if none)."""
    vals = _present(values)
    return statistics.fmean(vals) if vals else float("nan")


def nanstd(values: Sequence[Optional[float]]) -> float:
    """Sample standard deviation of the non-None, non-NaN values (NaN if fewer than two)."""
    vals = _present(values)
    return statistics.stdev(vals) if len(vals) > 1 else float("nan")
