"""A case's report: the model's and the reviewer's counts side by side, and who signed.

:func:`report_json` is the one table; the CSV (:func:`report_csv`) and the printable HTML page
(template ``case_report.html``) are made from it. Counts come from
:func:`bmc_detectron.cases.queries.case_differential`.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Dict, List, Optional

from bmc_detectron.cases.models import Case
from bmc_detectron.cases.queries import case_differential
from bmc_detectron.structures.differential import Lineage


def _pct(value: Any) -> Optional[float]:
    return None if value is None or not math.isfinite(float(value)) else round(float(value), 1)


def report_json(case: Case, lineage: Optional[Lineage] = None) -> Dict[str, Any]:
    """The report: per class the model's and the reviewer's count and percent, the totals,
    M:E both ways, the cells reviewed, and the sign-offs (who, when)."""
    diff = case_differential(case, lineage)
    model = {r["class"]: r for r in diff["model"]["classes"]}
    rows: List[Dict[str, Any]] = []
    for row in diff["reviewed"]["classes"]:
        m = model.get(row["class"], {"count": 0, "percent": None})
        rows.append(
            {
                "class": row["class"],
                "model": m["count"],
                "model_percent": _pct(m["percent"]),
                "reviewer": row["count"],
                "reviewer_percent": _pct(row["percent"]),
            }
        )
    cells = [c for f in case.fields for c in f.cells]
    return {
        "case": case.case_id,
        "version": case.version,
        "status": case.status,
        "created": case.created.isoformat(),
        "detector": case.detector,
        "classifier": case.classifier,
        "fields": len(case.fields),
        "cells": {
            "found": sum(not c.added for c in cells),
            "reviewed": sum(c.reviewed_by is not None for c in cells),
            "deleted": sum(bool(c.deleted) for c in cells),
            "added": sum(bool(c.added) for c in cells),
        },
        "classes": rows,
        "counted": {"model": diff["model"]["counted"], "reviewer": diff["reviewed"]["counted"]},
        "uncertain": {
            "model": diff["model"]["uncertain"]["total"],
            "reviewer": diff["reviewed"]["uncertain"]["total"],
        },
        "me_ratio": {
            "model": diff["model"]["me"]["ratio"],
            "reviewer": diff["reviewed"]["me"]["ratio"],
        },
        "signed": [
            {"reviewer": s.user.name, "at": s.at.isoformat(timespec="seconds") + "Z"}
            for s in case.sign_offs
        ],
    }


def report_csv(report: Dict[str, Any]) -> str:
    """One row per class (model and reviewer side by side), then the totals and the sign-offs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", "model", "model_percent", "reviewer", "reviewer_percent"])
    for row in report["classes"]:
        writer.writerow(
            [
                row["class"],
                row["model"],
                row["model_percent"],
                row["reviewer"],
                row["reviewer_percent"],
            ]
        )
    writer.writerow(["counted", report["counted"]["model"], "", report["counted"]["reviewer"], ""])
    me = report["me_ratio"]
    writer.writerow(["M:E", me["model"], "", me["reviewer"], ""])
    for sign in report["signed"]:
        writer.writerow(["signed by", sign["reviewer"], sign["at"], "", ""])
    return out.getvalue()
