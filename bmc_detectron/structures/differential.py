"""The differential count: per-class counts, percentages, Wilson intervals and the M:E ratio.

Percentages are of the nucleated cells counted with confidence; cells whose class probability is
below the threshold are *uncertain*: listed and counted separately, in no percentage and in no
lineage. Cells the classifier's open-set score calls *Other* (of no type it knows) are likewise
counted apart (``other``), in no percentage, in no lineage, and not uncertain. ICSH (Lee et al.
2008, Int J Lab Hematol 30:349) asks for at least 500 nucleated cells in a marrow differential;
fewer gives a warning.

The myeloid : erythroid (M:E) ratio divides the myeloid cells by the nucleated red cells. Which
classes are myeloid differs between laboratories (blasts, monocytes), so the lineage map is a
setting: a JSON / YAML file ``{"myeloid": [...], "erythroid": [...]}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

#: the label of a cell of no known type (a classifier's own Other class, ``data.classes.OTHER``):
#: counted in ``other``, never in a class row
OTHER_LABEL = "Other"


# Two-sided 95 % normal quantile.
Z95 = 1.959963984540054

# ICSH 2008: a marrow differential counts at least this many nucleated cells.
MIN_DIFFERENTIAL_CELLS = 500

# Granulocytic series, blasts and eosinophils (+ basophils of the PBC classifier) are myeloid;
# nucleated red cells are erythroid; lymphocytes, monocytes and plasma cells are neither.
DEFAULT_LINEAGE: Dict[str, Tuple[str, ...]] = {
    "myeloid": ("Prim", "Promy", "Myelo", "Late", "Rods", "Lobu", "Eosl", "Baso"),
    "erythroid": ("Red",),
}


def wilson_interval(k: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (NaNs when ``n`` is 0)."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # the interval reaches 0 (1) exactly when k = 0 (k = n); keep rounding error out of it
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class Lineage:
    """Which classes are myeloid and which erythroid (the rest are in neither)."""

    myeloid: Tuple[str, ...] = DEFAULT_LINEAGE["myeloid"]
    erythroid: Tuple[str, ...] = DEFAULT_LINEAGE["erythroid"]

    def __post_init__(self) -> None:
        both = sorted(set(self.myeloid) & set(self.erythroid))
        if both:
            raise ValueError(f"class(es) {', '.join(both)} both myeloid and erythroid")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str = "lineage map") -> Lineage:
        """From ``{"myeloid": [...], "erythroid": [...]}``; a missing key keeps the default."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a mapping with keys myeloid and erythroid")
        unknown = sorted(set(data) - {"myeloid", "erythroid"})
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}")
        lists = {}
        for key in ("myeloid", "erythroid"):
            value = data.get(key, DEFAULT_LINEAGE[key])
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{source}: {key} must be a list of class names")
            lists[key] = tuple(value)
        try:
            return cls(**lists)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_options(
        cls,
        path: Path | str | None = None,
        myeloid: str | None = None,
        erythroid: str | None = None,
    ) -> Lineage:
        """The default map, then a lab's file (``--lineage``), then comma-separated class lists
        (``--myeloid``, ``--erythroid``) replacing that lineage's classes."""
        data = (cls.load(path) if path else cls()).to_json()
        for key, value in (("myeloid", myeloid), ("erythroid", erythroid)):
            if value is not None:
                data[key] = [c.strip() for c in value.split(",") if c.strip()]
        return cls.from_mapping(data, "--myeloid/--erythroid")

    @classmethod
    def load(cls, path: Path | str) -> Lineage:
        """Read a JSON (``.json``) or YAML lineage file."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read the lineage map ({e})") from None
        return cls.from_mapping(data, str(path))

    def of(self, label: str) -> str:
        """``"myeloid"``, ``"erythroid"`` or ``""``."""
        if label in self.myeloid:
            return "myeloid"
        if label in self.erythroid:
            return "erythroid"
        return ""

    def unknown_classes(self, class_names: Sequence[str]) -> List[str]:
        """Lineage classes the model does not have (a typo, or Baso for an 11-class model)."""
        return [c for c in (*self.myeloid, *self.erythroid) if c not in class_names]

    def to_json(self) -> Dict[str, List[str]]:
        """The map as a JSON-ready dict."""
        return {"myeloid": list(self.myeloid), "erythroid": list(self.erythroid)}


def me_ratio(counts: Mapping[str, int], lineage: Lineage) -> Dict[str, Optional[float]]:
    """Myeloid and erythroid totals and their ratio (None when there is no erythroid cell)."""
    myeloid = sum(counts.get(c, 0) for c in lineage.myeloid)
    erythroid = sum(counts.get(c, 0) for c in lineage.erythroid)
    ratio = myeloid / erythroid if erythroid else None
    return {"myeloid": myeloid, "erythroid": erythroid, "ratio": ratio}


def differential(
    labels: Iterable[str],
    uncertain: Iterable[bool],
    class_names: Sequence[str],
    lineage: Lineage,
    other: Optional[Iterable[bool]] = None,
) -> Dict[str, object]:
    """The differential count of cells given by their labels and uncertain flags.

    ``other`` (None: none) flags the cells of no known type: counted in ``other`` only, as is
    a cell labelled ``Other`` (a classifier with an Other class); ``Other`` in ``class_names``
    gets no row of its own.
    Returns ``counted`` (certain cells), ``uncertain`` (total and per class), ``other`` (the
    number of Other cells), ``classes`` (one row per class: count, percent of counted, 95 %
    Wilson interval in percent, lineage), ``me`` (:func:`me_ratio`) and ``warnings``.
    """
    counts = {c: 0 for c in class_names if c != OTHER_LABEL}
    unsure = {c: 0 for c in class_names if c != OTHER_LABEL}
    labels = list(labels)
    other_flags = [False] * len(labels) if other is None else list(other)
    n_other = 0
    for label, flag, is_other in zip(labels, uncertain, other_flags):
        if is_other or label == OTHER_LABEL:
            n_other += 1
            continue
        target = unsure if flag else counts
        target[label] = target.get(label, 0) + 1
    n = sum(counts.values())
    rows = []
    for name, k in counts.items():
        lo, hi = wilson_interval(k, n)
        rows.append(
            {
                "class": name,
                "count": k,
                "percent": 100.0 * k / n if n else math.nan,
                "ci95_percent": [100.0 * lo, 100.0 * hi],
                "lineage": lineage.of(name),
                "uncertain": unsure.get(name, 0),
            }
        )
    warnings = []
    if n < MIN_DIFFERENTIAL_CELLS:
        warnings.append(
            f"only {n} nucleated cells counted; ICSH (2008) asks for at least "
            f"{MIN_DIFFERENTIAL_CELLS} in a marrow differential"
        )
    missing = lineage.unknown_classes(class_names)
    if missing and lineage != Lineage():
        warnings.append(f"lineage class(es) not among the model's classes: {', '.join(missing)}")
    return {
        "counted": n,
        "uncertain": {"total": sum(unsure.values()), "per_class": unsure},
        "other": n_other,
        "classes": rows,
        "me": me_ratio(counts, lineage),
        "warnings": warnings,
    }
