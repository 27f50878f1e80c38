"""The ablation as one call: plan the runs, train what is missing, tabulate, plot, write the page.

The command line is :mod:`studies.ablation.ablation`; other studies (the detector comparison)
call :func:`run_ablation` with their own plan.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger

from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.utils.io import atomic_write_text
from studies.ablation.bootstrap import bootstrap_table
from studies.ablation.page import COMMAND, write_report
from studies.ablation.report import markdown_tables, plot, summarize, write_csv
from studies.ablation.runs import RunPlan, collect, execute, metrics_path, plan_runs


@dataclass(frozen=True)
class PageSpec:
    """What the tables and the page show besides the runs.

    ``parents``: config name -> the config its paired change is shown against; ``full``: the
    config judged against the reference for ``targets`` (AP gain, then AP50 gain if given);
    ``bootstrap``: draws of the bootstrap interval over test images (0: none); ``latency_from``:
    a side-by-side ``latency.json`` whose medians replace each run's own timing; ``report``: the
    page to write (None: only ``ablation.md``/``.csv`` in the output folder), with ``title``,
    ``notes`` (a markdown file under the setup), ``manifest`` (the study's ``study.yaml``: the
    page's status section, :func:`studies.status.study_status`) and ``extra`` (markdown files
    included at the end).
    """

    parents: Mapping[str, str] = field(default_factory=dict)
    full: str | None = None
    targets: Tuple[float, ...] = (1.5, 2.0)
    bootstrap: int = 1000
    latency_from: str | None = None
    report: str | None = None
    title: str = "Ablation results"
    notes: str | None = None
    manifest: str | None = None
    extra: Sequence[str] = ()


def missing_inputs(page: PageSpec) -> List[str]:
    """Files named by ``latency_from`` (with a report: ``extra``, ``notes``, ``manifest``) that
    do not exist."""
    files = [page.latency_from]
    files += [*page.extra, page.notes, page.manifest] if page.report else []
    return [f for f in files if f and not Path(f).is_file()]


def run_all(
    plan: RunPlan, no_run: bool, in_process: bool, timeout: float | None
) -> Tuple[List[Dict], List[Dict]]:
    """Plan, run (or, with ``no_run``, skip) and collect every run; returns (specs, records).
    A run whose metrics exist is not run again."""
    specs, records = plan_runs(plan), []
    for spec in specs:
        tag = f"{spec['name']} seed {spec['seed']}"
        if metrics_path(spec).is_file():
            print(f"[ablation] skip {tag}: {metrics_path(spec)} exists")
        elif no_run:
            print(f"[ablation] no result for {tag} (--no-run)")
        else:
            print(f"[ablation] run {tag}")
            info = execute(spec, in_process, timeout)
            print(f"[ablation] {tag}: {info['status']} {info.get('error') or ''}".rstrip())
        records.append(collect(spec))
    return specs, records


def use_side_by_side_costs(records: List[Dict], latency_json: str) -> None:
    """One latency per config: the interleaved median of ``latency_json``, for every seed; its
    GFLOPs too where it counted them (one count for every model of the timing)."""
    timed = {m["name"]: m for m in json.loads(Path(latency_json).read_text())["models"]}
    for r in records:
        m = timed.get(r["name"], {})
        r["latency_ms"] = m.get("median_ms", r.get("latency_ms"))
        r["gflops"] = m.get("gflops", r.get("gflops"))


def tabulate(
    plan: RunPlan, records: List[Dict], page: PageSpec, reference: str
) -> Tuple[List[Dict], str]:
    """``ablation.csv``, ``ablation.md`` and the plots in the output folder; returns (the
    summary per config, the markdown tables)."""
    out = Path(plan.output)
    classes = MetadataCatalog.get(plan.test_dataset).get("thing_classes") or []
    if page.latency_from:
        use_side_by_side_costs(records, page.latency_from)
    summary = summarize(records, classes)
    write_csv(out / "ablation.csv", records, summary, classes)
    extra = []
    if page.bootstrap > 0:
        extra.append(
            bootstrap_table(
                records, summary, page.parents, reference, plan.test_dataset, page.bootstrap
            )
        )
    tables = markdown_tables(
        records, summary, classes, page.parents, page.full, page.targets, reference, extra
    )
    atomic_write_text(out / "ablation.md", "# Ablation\n\n" + tables)
    plot(out, summary)
    return summary, tables


def run_ablation(
    plan: RunPlan,
    reference_config: str,
    page: PageSpec,
    *,
    argv: Sequence[str],
    no_run: bool = False,
    in_process: bool = False,
    timeout: float | None = None,
) -> int:
    """Train every run of ``plan`` that has no result (none with ``no_run``; each in a
    subprocess unless ``in_process``, at most ``timeout`` s), then the tables, plots and, with
    ``page.report``, the page. The reference run is the one named by ``reference_config``'s
    stem. ``argv`` is the equivalent ``studies.ablation.ablation`` command line, logged to
    ``OUTPUT/commands.txt`` and named on the page. Returns 0 when every run succeeded (or was
    not run), 1 when one failed, 2 when an input is missing or nothing finished for a page."""
    missing = missing_inputs(page)
    if missing:
        print(f"error: file not found: {', '.join(missing)}; nothing written", file=sys.stderr)
        return 2
    setup_logger(name="bmc_detectron")
    t_start = time.perf_counter()
    out = Path(plan.output)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "commands.txt").open("a") as f:
        f.write(COMMAND + shell_join(argv) + "\n")
    try:
        for name in (plan.train_dataset, plan.test_dataset):
            prepare_dataset(name)
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    specs, records = run_all(plan, no_run, in_process, timeout)
    reference = Path(reference_config).stem
    _, tables = tabulate(plan, records, page, reference)
    if page.report and not any(r.get("status") == "ok" for r in records):
        print(f"error: no finished run in {out}; {page.report} is left as it was", file=sys.stderr)
        return 2
    if page.report:
        write_report(
            Path(page.report),
            out,
            tables,
            records,
            plan,
            title=page.title,
            argv=argv,
            wall_s=time.perf_counter() - t_start,
            sched=specs[0]["schedule"] if specs else [],
            reference=reference,
            notes=page.notes,
            manifest=page.manifest,
            extra=page.extra,
        )
    print(tables)
    return 0 if all(r.get("status") in ("ok", "not run") for r in records) else 1
