"""Per-class AP and one class's box sizes under chosen conditions of finished robustness sweeps.

    python -m studies.robustness.robustness_boxes \
        --sweeps output/robustness/full/plain "full-ms s1=output/robustness/seed1/full-ms/plain" \
        --conditions e_0 e_0p15 --class WBC [--score 0.3] \
        [--output docs/results/robustness/RESULTS_robustness_boxes.md]

Reads what each sweep kept (``copies/<label>/<tag>``: the copy's annotations and the evaluator's
detections, :mod:`studies.robustness.boxes`); runs no model. A sweep is a folder
(the model's name is its label) or ``NAME=FOLDER``. Conditions are tags as the sweep names them
(``scale_1p5``, ``hue_m20``, ``e_0p15``, ...); by default every one the sweep kept. Prints a
markdown table and, with ``--output``, writes it as a page with the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from bmc_detectron.utils.io import atomic_write_text
from studies.robustness.boxes import boxes_table, condition_summary, sweep_conditions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sweeps", nargs="+", required=True, help="FOLDER or NAME=FOLDER, each a sweep")
    p.add_argument("--conditions", nargs="*", default=None, help="condition tags (default: all)")
    p.add_argument("--class", dest="class_name", required=True, help="the class whose boxes")
    p.add_argument("--score", type=float, default=0.3, help="detections scoring at least this")
    p.add_argument("--output", help="write the table as a markdown page here")
    p.add_argument("--title", default="Box sizes under the robustness conditions")
    return p


def _split(entry: str) -> tuple:
    name, sep, folder = entry.partition("=")
    return (name, folder) if sep else (None, entry)


def collect(args: argparse.Namespace) -> List[Dict[str, object]]:
    """One row per (sweep, condition), in the order given."""
    rows = []
    for entry in args.sweeps:
        name, folder = _split(entry)
        found = sweep_conditions(Path(folder))
        wanted = args.conditions or sorted({key.split("/", 1)[1] for key in found})
        for tag in wanted:
            keys = [k for k in found if k.split("/", 1)[1] == tag]
            if not keys:
                raise ValueError(
                    f"{folder}: no kept condition {tag!r} (have: "
                    f"{', '.join(sorted({k.split('/', 1)[1] for k in found}))})"
                )
            for key in keys:
                row = condition_summary(found[key], args.class_name, args.score)
                rows.append({"model": name or key.split("/", 1)[0], "condition": tag, **row})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = collect(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"robustness_boxes: {exc}", file=sys.stderr)
        return 2
    table = boxes_table(rows, args.class_name)
    print(table, end="")
    if args.output:
        argv_text = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        intro = (
            f"`python -m studies.robustness.robustness_boxes {argv_text}`\n\n"
            f"Detections of {args.class_name} scoring at least {args.score:g}, each matched "
            f"to the nearest {args.class_name} gt of its image (centre distance): size "
            "ratio = sqrt(det area / gt area), offset = centre distance / gt size.\n\n"
        )
        atomic_write_text(Path(args.output), f"# {args.title}\n\n{intro}{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
