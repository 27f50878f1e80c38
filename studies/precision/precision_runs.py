"""Whole runs of one config and seed in float32 and bf16: same accuracy? (issue 11, section 1).

    python -m studies.precision.precision_runs --dataset bccd_val \
        --runs "float32 s0=output/select_bccd/runs/retinanet_R_18_PAN_cpu/seed0" \
               "bf16 s0=output/select_bccd_bf16/runs/retinanet_R_18_PAN_cpu/seed0" \
        [--seed-runs "bf16 s1=output/select_bccd_bf16/runs/retinanet_R_18_PAN_cpu/seed1"] \
        [--notes FILE] [--output docs/results/precision/RESULTS_precision_runs.md]

Each ``LABEL=RUN_FOLDER`` is a finished ``tools.ablation`` run evaluated on ``--dataset``; the first
is the baseline the others are compared with (paired bootstrap over the evaluation images,
:mod:`studies.precision.runs_report`). ``--seed-runs``: other seeds of the same config, the
seed-to-seed yardstick. Runs nothing; prints the page or writes it to ``--output``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from detectron2.data import MetadataCatalog

from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.utils.io import atomic_write_text
from studies.precision.runs_report import (
    RunRecord,
    differences_table,
    read_run,
    runs_table,
    spread_line,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="the registered evaluation set of the runs")
    p.add_argument("--runs", nargs="+", required=True, help="LABEL=RUN_FOLDER, baseline first")
    p.add_argument("--seed-runs", nargs="*", default=[], help="LABEL=RUN_FOLDER, other seeds")
    p.add_argument("--samples", type=int, default=1000, help="bootstrap redraws")
    p.add_argument("--notes", help="hand-written notes placed under the header")
    p.add_argument("--output", help="write the page here")
    return p


def _records(entries: Sequence[str], dataset: str) -> List[RunRecord]:
    out = []
    for entry in entries:
        label, sep, folder = entry.partition("=")
        if not sep:
            raise ValueError(f"{entry!r}: expected LABEL=RUN_FOLDER")
        out.append(read_run(label, Path(folder), dataset))
    return out


def page(args: argparse.Namespace, argv: Sequence[str]) -> str:
    prepare_dataset(args.dataset)
    classes = list(MetadataCatalog.get(args.dataset).get("thing_classes") or [])
    runs = _records(args.runs, args.dataset)
    others = _records(args.seed_runs, args.dataset)
    if len(runs) < 2:
        raise ValueError("--runs: give at least two runs to compare")
    command = "python -m studies.precision.precision_runs " + " ".join(map(shlex.quote, argv))
    parts = [
        "# Whole training runs: float32 vs bf16\n",
        f"`{command}`\n",
        "Finished runs of the same config and seed in different precisions, evaluated on "
        f"`{args.dataset}`. Seconds per iteration are the trainer's logged times (medians after "
        "warm-up): they depend on the machine's load while each run trained, so the speed-up is "
        "read from the interleaved benchmark (RESULTS_precision.md), not from this table.\n",
    ]
    if args.notes:
        parts.append(Path(args.notes).read_text().rstrip() + "\n")
    parts += ["## Runs\n", runs_table(runs + others, classes)]
    parts += ["## Paired differences\n", differences_table(runs, args.dataset, args.samples)]
    line = spread_line(others, runs)
    if line:
        parts.append(line + "\n")
    return "\n".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        text = page(args, argv)
    except (FileNotFoundError, ValueError) as exc:
        print(f"precision_runs: {exc}", file=sys.stderr)
        return 2
    if args.output:
        atomic_write_text(Path(args.output), text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
