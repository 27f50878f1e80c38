"""How right was a count? A finished count report against expert boxes and labels.

    bmc count-eval --report reports/case01 --dataset NAME \\
        [--output DIR] [--uncertain-below 0.5] [--fields-per-case 10]

The report's fields (``cells/<field>.json`` of ``tools/count``) are matched to the images of the
registered COCO dataset ``NAME`` by file name; the cells are scored against its annotations with
the measures of :mod:`bmc_detectron.evaluation.count` (detection AP with the counter's labels,
class-agnostic AP, recall / precision / label accuracy of the counted cells matched at IoU 0.5,
the differential's mean absolute error in percentage points, M:E; where the truth marks crowding,
recall of isolated / touching / overlapping cells and touching pairs counted as two; with
``--fields-per-case``, the differential's error per case of that many fields). Writes
``count_eval.json`` and ``count_eval.md`` into ``--output`` (default: the report folder). Exit
status 2 when the report or the dataset cannot be used (named in a one-line error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from bmc_detectron.pipeline.report_eval import count_eval_markdown, evaluate_report
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--report", required=True, help="folder of a finished count report")
    p.add_argument("--dataset", required=True, help="registered COCO dataset with the truth")
    p.add_argument("--output", help="folder for count_eval.json / .md (default: --report)")
    p.add_argument("--uncertain-below", type=float, help="default: the report's own threshold")
    p.add_argument(
        "--fields-per-case",
        type=int,
        default=0,
        help="also measure the differential per case of this many fields (by image id)",
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = evaluate_report(
            Path(args.report),
            args.dataset,
            uncertain_below=args.uncertain_below,
            fields_per_case=args.fields_per_case,
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output or args.report)
    write_json_atomic(result, out / "count_eval.json", indent=2)
    command = "python -m bmc_detectron.tools.count_eval " + shell_join(
        sys.argv[1:] if argv is None else list(argv)
    )
    page = count_eval_markdown(result, command)
    atomic_write_text(out / "count_eval.md", page)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
