"""The day summary of a batch: one row per case (or slide), side by side.

``<output>/batch_summary.json`` and ``<output>/batch_summary.csv``: for every case its name, what
became of it (``counted``, ``done`` before, ``failed`` with the reason), the cells in its
differential, the uncertain and Other cells, the fields counted, the M:E ratio, each class's
percentage (the differential, one column per class, ``<class> %``) and the seconds it took. The
numbers are read from each case's own ``summary.json``; a failed case has only its status, its
error and its seconds.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bmc_detectron.batch.jobs import CaseResult
from bmc_detectron.pipeline.run_io import SUMMARY_FILE
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic

DAY_FILE = "batch_summary"
COLUMNS = ("case", "status", "cells", "uncertain", "other", "fields", "me_ratio", "seconds")


def day_row(result: CaseResult) -> Dict[str, Any]:
    """A case's row: its result and, when it has a report, its differential and M:E ratio."""
    row: Dict[str, Any] = {
        "case": result.name,
        "status": result.status,
        "cells": None,
        "uncertain": None,
        "other": None,
        "fields": None,
        "me_ratio": None,
        "seconds": result.seconds,
        "differential": {},
        "report": result.output,
        "error": result.error,
    }
    summary_file = Path(result.output) / SUMMARY_FILE
    if result.status != "failed" and summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        row.update(
            cells=summary["counted"],
            uncertain=summary["uncertain"]["total"],
            other=summary.get("other", 0),
            fields=len(summary["fields"]),
            me_ratio=summary["me"]["ratio"],
            differential={c["class"]: c["percent"] for c in summary["classes"]},
        )
    return row


def day_csv(rows: Sequence[Dict[str, Any]]) -> str:
    """The rows as CSV: :data:`COLUMNS`, one ``<class> %`` column per class (in the order the
    cases name them), the report folder and the error."""
    classes: List[str] = []
    for row in rows:
        classes += [c for c in row["differential"] if c not in classes]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*COLUMNS, *(f"{c} %" for c in classes), "report", "error"])
    for row in rows:
        percents = [_cell(row["differential"].get(c)) for c in classes]
        writer.writerow(
            [*(_cell(row[k]) for k in COLUMNS), *percents, row["report"], row["error"] or ""]
        )
    return buf.getvalue()


def _cell(value: Optional[Any]) -> str:
    return "" if value is None else str(value)


def write_day_summary(output: Path, results: Sequence[CaseResult]) -> List[Path]:
    """Write ``batch_summary.json`` and ``batch_summary.csv`` into ``output``; their paths."""
    rows = [day_row(r) for r in results]
    data = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": rows}
    output = Path(output)
    return [
        write_json_atomic(data, output / f"{DAY_FILE}.json", indent=1),
        atomic_write_text(output / f"{DAY_FILE}.csv", day_csv(rows)),
    ]
