"""The case report: ``summary.json``, ``counts.csv`` and ``cells.csv`` from the counted fields."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bmc_detectron.data.classes import OTHER
from bmc_detectron.pipeline.count_warnings import warning_entries
from bmc_detectron.pipeline.counter import Cell
from bmc_detectron.pipeline.drawing import class_info
from bmc_detectron.structures.differential import Lineage, differential
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic

SUMMARY_FORMAT = "bmc-count/1"


@dataclass
class FieldRecord:
    """The counted cells of one field, as saved in ``cells/<name>.json``; ``flags``: why the
    field lies outside the training data ([]: it does not, or it was not checked),
    ``rbc_diameter_px``: its measured red-cell diameter (None: not measured),
    ``nucleus_fraction``: its share of nucleus-stained pixels (None: not measured),
    ``slide``: for a field cut from a whole slide, where it lies on it (``x``, ``y``: its corner
    in the slide's full-resolution pixels; ``downsample``: full-resolution pixels per field
    pixel; ``level``: the pyramid level it was read at), else None."""

    name: str
    image: str
    image_sha256: str
    fingerprint: str
    height: int
    width: int
    tiles: int
    detect_s: float
    recognise_s: float
    cells: List[Cell]
    reused: bool = False
    flags: List[str] = field(default_factory=list)
    rbc_diameter_px: Optional[float] = None
    nucleus_fraction: Optional[float] = None
    slide: Optional[Dict[str, float]] = None

    def to_json(self) -> Dict[str, Any]:
        """JSON-ready dict (``reused`` is a property of a run, not saved)."""
        out = {
            "name": self.name,
            "image": self.image,
            "image_sha256": self.image_sha256,
            "fingerprint": self.fingerprint,
            "height": self.height,
            "width": self.width,
            "tiles": self.tiles,
            "detect_s": round(self.detect_s, 4),
            "recognise_s": round(self.recognise_s, 4),
            "cells": [c.to_json() for c in self.cells],
            "flags": list(self.flags),
            "rbc_diameter_px": self.rbc_diameter_px,
            "nucleus_fraction": self.nucleus_fraction,
        }
        if self.slide is not None:
            out["slide"] = dict(self.slide)
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> FieldRecord:
        """Inverse of :meth:`to_json`; KeyError / TypeError / ValueError on a malformed record."""
        fields = {k: data[k] for k in ("name", "image", "image_sha256", "fingerprint")}
        return cls(
            **fields,
            height=int(data["height"]),
            width=int(data["width"]),
            tiles=int(data["tiles"]),
            detect_s=float(data["detect_s"]),
            recognise_s=float(data["recognise_s"]),
            cells=[Cell.from_json(c) for c in data["cells"]],
            flags=[str(f) for f in data.get("flags") or []],
            rbc_diameter_px=None
            if data.get("rbc_diameter_px") is None
            else float(data["rbc_diameter_px"]),
            nucleus_fraction=None
            if data.get("nucleus_fraction") is None
            else float(data["nucleus_fraction"]),
            slide=None if data.get("slide") is None else dict(data["slide"]),
        )

    def slide_box(self, box: Sequence[float]) -> List[float]:
        """A box of this field in the slide's full-resolution pixels (:attr:`slide`)."""
        if self.slide is None:
            raise ValueError(f"field {self.name} is not cut from a slide")
        x, y, k = self.slide["x"], self.slide["y"], self.slide["downsample"]
        x0, y0, x1, y1 = box
        return [
            round(x + k * x0, 1),
            round(y + k * y0, 1),
            round(x + k * x1, 1),
            round(y + k * y1, 1),
        ]


def _round(value: Optional[float], digits: int = 2) -> Optional[float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _field_entry(rec: FieldRecord, uncertain_below: float, drawing: Optional[str]) -> Dict:
    unsure = sum(c.is_uncertain(uncertain_below) for c in rec.cells)
    other = sum(c.is_other for c in rec.cells)
    return {
        "name": rec.name,
        "image": rec.image,
        "height": rec.height,
        "width": rec.width,
        "tiles": rec.tiles,
        "cells": len(rec.cells) - unsure - other,
        "uncertain": unsure,
        "other": other,
        "detect_s": round(rec.detect_s, 4),
        "recognise_s": round(rec.recognise_s, 4),
        "reused": rec.reused,
        "drawing": drawing,
        "rbc_diameter_px": rec.rbc_diameter_px,
        "flags": list(rec.flags),
    }


def build_summary(
    records: Sequence[FieldRecord],
    skipped: Sequence[Dict[str, str]],
    class_names: Sequence[str],
    *,
    uncertain_below: float,
    lineage: Lineage,
    settings: Dict[str, Any],
    drawings: Optional[Dict[str, str]] = None,
    scale: Optional[Dict[str, Any]] = None,
    warnings: Sequence[str] = (),
) -> Dict[str, Any]:
    """Everything ``summary.json`` holds; ``drawings`` maps a field name to its drawing's path,
    ``scale`` is the scale and stain entry (:class:`~.scale_plan.ScalePlan`), ``warnings`` are
    added to the differential's (sentences under ``warnings``, with their codes under
    ``warning_codes``). Cells labelled Other (open-set) are counted under ``other``, apart from
    the uncertain ones and from every percentage."""
    cells = [c for r in records for c in r.cells]
    diff = differential(
        [c.label for c in cells],
        [c.is_uncertain(uncertain_below) for c in cells],
        class_names,
        lineage,
        [c.is_other for c in cells],
    )
    info = class_info(class_names)
    for row in diff["classes"]:
        row["name"] = info[row["class"]][0]
        row["percent"] = _round(row["percent"])
        row["ci95_percent"] = [_round(v) for v in row["ci95_percent"]]
    me = dict(diff["me"], ratio=_round(diff["me"]["ratio"]), lineage=lineage.to_json())
    warnings = list(diff["warnings"]) + list(warnings)
    flagged = [r.name for r in records if r.flags]
    if flagged:
        warnings.append(
            f"{len(flagged)} field(s) outside the training data, counted but to be checked "
            f"(reasons in the report): {', '.join(flagged)}"
        )
    if skipped:
        warnings.append(f"{len(skipped)} input file(s) skipped (see the list of skipped files)")
    detect = sum(r.detect_s for r in records)
    recognise = sum(r.recognise_s for r in records)
    return {
        "format": SUMMARY_FORMAT,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "class_names": list(class_names),
        "counted": diff["counted"],
        "uncertain": diff["uncertain"],
        "other": diff["other"],
        "detected": len(cells),
        "uncertain_below": uncertain_below,
        "classes": diff["classes"],
        "me": me,
        "warnings": warnings,
        "warning_codes": warning_entries(warnings),
        "fields": [_field_entry(r, uncertain_below, (drawings or {}).get(r.name)) for r in records],
        "skipped": list(skipped),
        "timing": {
            "detect_s": round(detect, 3),
            "recognise_s": round(recognise, 3),
            "fields_reused": sum(r.reused for r in records),
        },
        "scale": dict(scale or {}),
        "settings": settings,
    }


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def cells_csv(
    records: Sequence[FieldRecord], class_names: Sequence[str], uncertain_below: float
) -> str:
    """One row per cell: field, box, detector score and class, class (``Other`` for a cell of no
    known type; its ``p_`` columns still say which type it is closest to), probability of the
    most likely class, uncertain; for fields cut from a slide, also the box in the slide's
    full-resolution pixels (``slide_x0`` ...)."""
    on_slide = any(rec.slide is not None for rec in records)
    header = ["field", "image", "x0", "y0", "x1", "y1", "det_score", "det_class"]
    header += ["class", "class_prob", "uncertain"] + [f"p_{c}" for c in class_names]
    header += ["slide_x0", "slide_y0", "slide_x1", "slide_y1"] if on_slide else []
    rows = []
    for rec in records:
        for c in rec.cells:
            probs = c.probs if c.probs is not None else [""] * len(class_names)
            box = [round(v, 2) for v in c.box]
            flag = int(c.is_uncertain(uncertain_below))
            row = [rec.name, rec.image, *box, round(c.det_score, 5), c.det_class, c.label]
            row += [round(c.prob, 5), flag, *probs]
            if on_slide:
                row += rec.slide_box(c.box) if rec.slide is not None else [""] * 4
            rows.append(row)
    return _csv_text(header, rows)


def counts_csv(summary: Dict[str, Any]) -> str:
    """One row per class (count, percent, Wilson 95 % interval in percent, lineage) + a total,
    then (when there are any) the Other cells, which are in no percentage."""
    header = ["class", "name", "lineage", "count", "percent", "ci95_low", "ci95_high", "uncertain"]
    rows = [
        [r["class"], r["name"], r["lineage"], r["count"], r["percent"], *r["ci95_percent"]]
        + [r["uncertain"]]
        for r in summary["classes"]
    ]
    total_pct = 100.0 if summary["counted"] else None
    rows.append(["all", "all nucleated cells", "", summary["counted"], total_pct, "", ""])
    rows[-1].append(summary["uncertain"]["total"])
    if summary.get("other"):  # open-set: cells of no known type, in no percentage
        rows.append([OTHER.abbr, OTHER.name, "", summary["other"], None, "", "", ""])
    return _csv_text(header, [["" if v is None else v for v in row] for row in rows])


def write_tables(
    output: Path, summary: Dict[str, Any], records: Sequence[FieldRecord]
) -> List[Path]:
    """Write ``cells.csv`` and ``counts.csv`` atomically; returns their paths."""
    cells = cells_csv(records, summary["class_names"], summary["uncertain_below"])
    return [
        atomic_write_text(output / "cells.csv", cells),
        atomic_write_text(output / "counts.csv", counts_csv(summary)),
    ]


def write_summary(output: Path, summary: Dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically (the last file of a finished run)."""
    return write_json_atomic(summary, output / "summary.json", indent=1)
