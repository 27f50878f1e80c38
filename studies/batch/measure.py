"""What both parts of the batch scaling study measure and how their tables are written.

A run record (a dict in ``scaling.json``) holds ``engine``, ``workers``, ``wall_s``, the load
average before and after (``load_before``, ``load_after``) and the counts of what was counted
(``fields``; for slides also ``slides``); a batch run adds ``identical`` (its reports equal the
single process's), ``threads`` and ``case_s`` (the seconds its workers spent in cases); the
single process adds ``load_s`` (its model loading). The first record of a part is the single
process's: the reference of the speed-ups.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bmc_detectron.batch.jobs import BatchCase, CaseOptions, SpecFactory, comparable_summary
from bmc_detectron.batch.runner import default_threads, run_batch
from bmc_detectron.reporting.tables import markdown_table

Run = Dict[str, Any]


def load_average() -> float:
    """The machine's 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def fresh(folder: Path) -> None:
    """``folder`` removed if it exists (each run writes its reports into an empty folder)."""
    if folder.exists():
        shutil.rmtree(folder)


def batch_run(
    factory: SpecFactory,
    cases: Sequence[BatchCase],
    reference: Path,
    engine: str,
    workers: int,
    options: CaseOptions = CaseOptions(),
) -> Run:
    """``run_batch`` of ``cases`` (their report folders in a fresh folder) on ``engine`` at
    ``workers`` workers; its reports compared with the reference's (``reference/<case>``)."""
    load, start = load_average(), time.perf_counter()
    results = run_batch(cases, factory, options, engine=engine, workers=workers, progress=False)
    wall = time.perf_counter() - start
    counted = all(r.status == "counted" for r in results) and len(results) == len(cases)
    same = counted and all(report(c.output) == report(reference / c.name) for c in cases)
    return dict(
        engine=engine,
        workers=workers,
        cases=len(results),
        fields=sum(r.fields for r in results),
        wall_s=wall,
        load_before=load,
        load_after=load_average(),
        identical=same,
        threads=default_threads(workers),
        case_s=sum(r.seconds for r in results),
    )


def report(folder: Path) -> Any:
    """What two counts of the same case share: the summary without the run's facts, cells.csv."""
    summary = json.loads((folder / "summary.json").read_text())
    return comparable_summary(summary), (folder / "cells.csv").read_bytes()


def rate_table(runs: List[Run], unit: str, extra: Sequence[str] = ()) -> str:
    """The runs' table: how many ``unit`` (a record key: ``fields``, ``slides``), the ``extra``
    record keys' values, wall time, the rate in all and per worker, the speed-up against the
    first run (the single process), the wall time against it, identical reports, the load."""
    single = runs[0]
    rows: List[List[object]] = []
    for r in runs:
        rate = r[unit] / r["wall_s"]
        rows.append(
            [
                r["engine"],
                str(r["workers"]),
                str(r[unit]),
                *(str(r[k]) for k in extra),
                f"{r['wall_s']:.1f}",
                f"{rate:.2f}",
                f"{rate / r['workers']:.2f}",
                f"{single['wall_s'] / r['wall_s']:.2f}",
                f"{100 * (r['wall_s'] / single['wall_s'] - 1):+.0f} %",
                "reference" if "identical" not in r else ("yes" if r["identical"] else "NO"),
                f"{r['load_before']} / {r['load_after']}",
            ]
        )
    headers = [
        "engine",
        "workers",
        unit,
        *(f"{k} counted" for k in extra),
        "wall (s)",
        f"{unit}/s",
        f"{unit}/s per worker",
        "speed-up",
        "wall vs single",
        "reports identical",
        "load avg before / after",
    ]
    return markdown_table(headers, rows)


def speed_up(runs: List[Run], engine: str, workers: int) -> Optional[float]:
    """The single process's wall time / the run's (None: no such run)."""
    wall = [r["wall_s"] for r in runs if r["engine"] == engine and r["workers"] == workers]
    return runs[0]["wall_s"] / wall[0] if wall else None


def measured_line(runs: List[Run], unit: str) -> str:
    """Each engine's speed-ups, its start-up at 1 worker, and the best rate, in one sentence."""
    engines = [e for e in ("processes", "ray") if any(r["engine"] == e for r in runs)]
    measured = []
    for engine in engines:
        got = {n: speed_up(runs, engine, n) for n in sorted({r["workers"] for r in runs})}
        parts = [f"{n} worker(s) {v:.2f}x" for n, v in got.items() if v is not None]
        one = [r for r in runs if r["engine"] == engine and r["workers"] == 1]
        start = ""
        if one:
            idle = one[0]["wall_s"] - one[0]["case_s"]
            start = f"; start-up (1 worker: wall - time in cases) {idle:.1f} s"
        measured.append(f"{engine}: {', '.join(parts)} the single process{start}")
    best = max(runs, key=lambda r: r[unit] / r["wall_s"])
    return (
        "; ".join(measured) + f". Best: {best['engine']} at {best['workers']} worker(s), "
        f"{best[unit] / best['wall_s']:.2f} {unit}/s."
    )
