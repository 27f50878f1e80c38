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
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bmc_detectron.pipeline.report_eval import evaluate_report
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.reporting.tables import fmt, markdown_table
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


def crowding_rows(result: Dict[str, Any]) -> List[List[str]]:
    """Rows of the crowding and per-case measures, where measured."""
    rows = []
    for kind, r in result.get("crowding", {}).get("recall", {}).items():
        rows.append([f"recall, {kind} cells (n)", f"{fmt(100 * r['recall'])} % ({r['cells']})"])
    if "crowding" in result:
        p = result["crowding"]["pairs"]
        rows.append(
            [
                "touching pairs counted as two (pairs)",
                f"{fmt(100 * p['share'])} % ({p['pairs']})",
            ]
        )
    if "cases" in result:
        k = result["cases"]
        rows.append(
            [
                f"differential % MAE per case of {k['fields_per_case']} fields, mean / worst",
                f"{fmt(k['mae_mean'], 2)} / {fmt(k['mae_max'], 2)} ({k['cases']} cases, "
                f"{fmt(k['cells_per_case'], 0)} cells each)",
            ]
        )
    return rows


def markdown(result: Dict[str, Any], command: str) -> str:
    """The evaluation as a short page."""
    m, c = result["matching"], result["counts"]["certain"]
    rows = [
        [
            "AP / AP50 (counter's labels)",
            f"{fmt(result['detection']['AP'])} / {fmt(result['detection']['AP50'])}",
        ],
        [
            "class-agnostic AP / AP50",
            f"{fmt(result['agnostic']['AP'])} / {fmt(result['agnostic']['AP50'])}",
        ],
        ["true cells / counted cells", f"{m['ground_truth']} / {m['predicted']}"],
        [
            "recall / precision (IoU 0.5)",
            f"{fmt(100 * m['recall'])} / {fmt(100 * m['precision'])} %",
        ],
        ["label accuracy, matched cells (n)", f"{fmt(100 * m['accuracy'])} % ({m['matched']})"],
        [
            "label accuracy, certain matched cells (n)",
            f"{fmt(100 * m['accuracy_certain'])} % ({m['matched_certain']})",
        ],
        [
            "differential % MAE pooled / per image",
            f"{fmt(c['mae_pooled'], 2)} / {fmt(c['mae_per_image'], 2)}",
        ],
    ]
    if c["me"]["ratio"] is not None or c["true_me"]["ratio"] is not None:
        rows.append(
            [
                "M:E predicted / true",
                f"{fmt(c['me']['ratio'], 3)} / {fmt(c['true_me']['ratio'], 3)}",
            ]
        )
    rows += crowding_rows(result)
    classes = [
        [k, fmt(c["true_percent"][k]), fmt(c["percent"].get(k, math.nan))]
        for k in c["true_percent"]
    ]
    return "\n".join(
        [
            f"# Count vs truth: `{result['report']}` on `{result['dataset']}`",
            "",
            f"{result['images']} images; {len(result['missing'])} of them not in the report.",
            "",
            markdown_table(["measure", "value"], rows),
            "",
            markdown_table(["class", "true %", "counted %"], classes),
            "",
            f"`{command}`",
            "",
        ]
    )


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
    page = markdown(result, command)
    atomic_write_text(out / "count_eval.md", page)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
