"""The results page of an ablation: setup, the tables of :mod:`studies.ablation.report`, plots,
machine, wall times and the commands that made it."""

from __future__ import annotations

import datetime
import shlex
import shutil
from pathlib import Path
from typing import Dict, List, Sequence

from bmc_detectron.bench.report import describe
from bmc_detectron.reporting.provenance import machine_info, shell_join
from bmc_detectron.utils.io import atomic_write_text
from studies.ablation.runs import RunPlan
from studies.status import study_status

#: The command whose arguments the page names (the ablation's command line).
COMMAND = "python -m studies.ablation.ablation "


def _setup_lines(
    plan: RunPlan,
    sched: Sequence[str],
    records: List[Dict],
    reference: str | None,
    notes: str | None,
) -> list:
    ref = next((r for r in records if r["name"] == reference), None)
    lines = [
        f"- train `{plan.train_dataset}`, test `{plan.test_dataset}`, {plan.num_classes} classes,"
        f" seeds {list(plan.seeds)}",
        f"- schedule passed to every run: `{' '.join(sched)}`",
        f"- overrides for every run: `{' '.join(plan.opts) or 'none'}`",
        f"- reference: `{reference}` (`{ref.get('config_file')}`: "
        f"{describe(ref.get('config_file', '')) or 'no description'})"
        if ref
        else "- no reference run",
    ]
    lines += _own_schedule_lines(sched, records)
    if notes:
        lines.append(Path(notes).read_text().strip() + "\n")
    return lines


def _own_schedule_lines(sched: Sequence[str], records: List[Dict]) -> List[str]:
    """A line per config whose runs trained with other values of the schedule's keys than
    ``sched`` (a run driven alone takes its own config's schedule), read from the runs'
    training commands."""
    wanted = dict(zip(sched[::2], sched[1::2]))
    own: Dict[str, str] = {}
    for r in records:
        words = shlex.split(r.get("train_net_command") or "")
        given = dict(zip(words, words[1:]))
        diff = [f"{k} {given[k]}" for k in wanted if k in given and given[k] != wanted[k]]
        if diff:
            own.setdefault(r["name"], " ".join(diff))
    return [f"- `{name}` trained with its own schedule: `{d}`" for name, d in own.items()]


def _machine_lines() -> list:
    m = machine_info()
    return [
        f"- CPU: {m['cpu']}, {m['usable_cores']} usable cores ({m['logical_cores']} logical),"
        f" {m['memory_gb']} GB RAM; GPU: {m['gpu'] or 'none'}",
        f"- torch {m['torch']} (threads per run: see the per-seed table),"
        f" detectron2 {m['detectron2']}, Python {m['python']}, {m['platform']};"
        f" 1-min load average at report time {m['load_avg_1m']}",
    ]


def _training_invocations(lines: Sequence[str]) -> List[str]:
    """The logged invocations that could train (not ``--no-run``), each once, first-seen order."""
    kept = (c for c in map(str.strip, lines) if c and "--no-run" not in c.split())
    return list(dict.fromkeys(kept))


def _copy_plots(path: Path, out: Path) -> Dict[str, str]:
    """The plots of ``out`` copied beside the page ``path``; their file names by plot.

    Beside the page, so that a committed page keeps them (run folders are usually git-ignored);
    named after the page, so that two pages in one folder keep theirs."""
    plots = {}
    for name in ("ap_per_config.png", "ap_vs_latency.png"):
        target = path.parent / f"{path.stem}_{name}"
        plots[name] = target.name
        if (out / name).is_file() and not (target.exists() and target.samefile(out / name)):
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / name, target)
    return plots


def write_report(
    path: Path,
    out: Path,
    tables: str,
    records: List[Dict],
    plan: RunPlan,
    *,
    title: str,
    argv: Sequence[str],
    wall_s: float,
    sched: Sequence[str],
    reference: str | None = None,
    notes: str | None = None,
    manifest: str | None = None,
    extra: Sequence[str] = (),
) -> None:
    """Regenerate the results page: setup, tables, plots, machine, wall times, commands.

    ``plan`` is what the ablation trained, ``argv`` the ablation's command line (named on the
    page), ``notes`` a markdown file placed under the setup, ``manifest`` the study's
    ``study.yaml`` (a status section from it and the run folders) and ``extra`` markdown files to
    include at the end.
    """
    plots = _copy_plots(path, out)
    cmds = _training_invocations((out / "commands.txt").read_text().splitlines())
    total_min = sum(r.get("wall_s") or 0 for r in records) / 60
    lines = [
        f"# {title}\n",
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `studies.ablation.ablation` from"
        f" the runs in `{out}`; every number below was measured by those runs.\n",
        "## Setup\n",
        *_setup_lines(plan, sched, records, reference, notes),
        *(["\n## Status\n", study_status(manifest, out)] if manifest else []),
        "\n## Results\n",
        tables,
        f"![AP per config]({plots['ap_per_config.png']})\n",
        f"![AP vs latency]({plots['ap_vs_latency.png']})\n",
        "## Machine\n",
        *_machine_lines(),
        "\n## Wall times\n",
        f"- this invocation: {wall_s / 60:.1f} min; all runs: {total_min:.1f} min"
        " (train + eval + timing)",
        "\n## Commands\n",
        "This page:\n",
        "```",
        COMMAND + shell_join(argv),
        "```\n",
        "Invocations that trained runs into this folder (in order, each once):\n",
        "```",
        *cmds,
        "```\n",
        "Per run (the worker command; the equivalent detectron2-style training command):\n",
    ]
    for r in {(r["name"], r["seed"]): r for r in records}.values():
        lines += [f"- `{r['name']}` seed {r['seed']}: `{r.get('command')}`"]
        lines += [f"  - `{r.get('train_net_command')}`"]
    for included in extra:
        body = Path(included).read_text().strip()
        lines += [f"\n## Included: `{included}`\n", body.replace("\n# ", "\n### ")]
    atomic_write_text(path, "\n".join(lines) + "\n")
