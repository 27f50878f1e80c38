"""One stage or two, measured: a multi-class detector vs class-agnostic detector + classifier.

    python -m studies.stages.compare_stages --dataset bmc_synth_test \\
        --one-stage-config C --one-stage-weights W \\
        --detector-config C2 --detector-weights W2 --classifier-config C3 --classifier-weights W3 \\
        --output DIR [--report docs/results/stages/RESULTS_stages.md]

Writes ``DIR/compare_stages.json`` (every measure of :mod:`studies.stages.systems`) and a
markdown page (``DIR/RESULTS_stages.md``, or ``--report``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from bmc_detectron.reporting.provenance import machine_info, shell_join
from bmc_detectron.reporting.tables import fmt, markdown_table
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic
from studies.stages.systems import System, compare_systems

ONE_STAGE = "one-stage"
TWO_STAGE = "two-stage"
SCORES = {"detector": "detector score", "product": "detector score x class probability"}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="a registered COCO dataset")
    for flag in ("one-stage", "detector", "classifier"):
        p.add_argument(f"--{flag}-config", required=True)
        p.add_argument(f"--{flag}-weights", required=True)
    p.add_argument("--output", required=True, help="folder for compare_stages.json")
    p.add_argument("--report", help="the markdown page (default OUTPUT/RESULTS_stages.md)")
    p.add_argument("--ap-score-threshold", type=float, default=0.05, help="detections for AP")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detections counted")
    p.add_argument("--uncertain-below", type=float, default=0.5)
    p.add_argument(
        "--train-command", action="append", default=[], help="how a model was trained (listed)"
    )
    return p.parse_args(argv)


def build_systems(args: argparse.Namespace) -> List[System]:
    """The two counters, detecting down to ``--ap-score-threshold``."""
    from bmc_detectron.pipeline import CellCounter

    kw = {"score_threshold": args.ap_score_threshold}
    one = CellCounter.from_configs(args.one_stage_config, args.one_stage_weights, **kw)
    two = CellCounter.from_configs(
        args.detector_config,
        args.detector_weights,
        args.classifier_config,
        args.classifier_weights,
        **kw,
    )
    return [System(ONE_STAGE, one), System(TWO_STAGE, two)]


def _summary_rows(systems: Mapping[str, Any]) -> List[List[object]]:
    rows = []
    for name, r in systems.items():
        m, cert, every = r["matching"], r["counts"]["certain"], r["counts"]["all"]
        rows.append(
            [
                name,
                r["detection"]["AP"],
                r["detection"]["AP50"],
                r["agnostic"]["AP"],
                r["agnostic"]["AP50"],
                f"{fmt(100 * m['accuracy'])} ({m['matched']})",
                f"{fmt(100 * m['recall'])} / {fmt(100 * m['precision'])}",
                f"{cert['counted']} + {cert['uncertain']}",
                fmt(cert["mae_pooled"], 2),
                fmt(cert["mae_per_image"], 2),
                fmt(every["mae_pooled"], 2),
                fmt(every["mae_per_image"], 2),
                f"{fmt(cert['me']['ratio'], 3)} ({fmt(cert['me_abs_error'], 3)})",
                fmt(cert["me_abs_error_per_image"], 3),
            ]
        )
    return rows


SUMMARY_HEADERS = (
    "system",
    "AP",
    "AP50",
    "agnostic AP",
    "agnostic AP50",
    "accuracy on matched % (n)",
    "recall / precision %",
    "counted + uncertain",
    "% MAE pooled",
    "% MAE per image",
    "% MAE pooled (uncertain in)",
    "% MAE per image (uncertain in)",
    "M:E predicted (abs. error)",
    "M:E abs. error per image",
)


def _class_rows(result: Mapping[str, Any]) -> List[List[object]]:
    names = list(result["systems"])
    first = result["systems"][names[0]]["counts"]["certain"]
    rows = []
    for cls in result["classes"]:
        row: List[object] = [cls, fmt(first["true_percent"][cls])]
        for name in names:
            r = result["systems"][name]
            ap = r["detection"]["per_class"][cls]
            row += [fmt(ap["AP"]), fmt(ap["AP50"]), fmt(r["counts"]["certain"]["percent"][cls])]
        rows.append(row)
    return rows


def markdown_page(result: Mapping[str, Any], commands: Sequence[str]) -> str:
    """The results page: summary table, per-class table, definitions, commands."""
    names = list(result["systems"])
    cert = result["systems"][names[0]]["counts"]["certain"]
    class_headers = ["class", "true %"]
    for name in names:
        class_headers += [f"{name} AP", f"{name} AP50", f"{name} %"]
    scores = ", ".join(f"{n}: {SCORES[r['score']]}" for n, r in result["systems"].items())
    lines = [
        "# One stage or two: measured",
        "",
        f"Generated by `studies.stages.compare_stages` on {datetime.date.today()}; "
        f"dataset `{result['dataset']}`: {result['images']} images, "
        f"{result['ground_truth_cells']} annotated cells, {len(result['classes'])} classes. "
        f"True M:E ratio {fmt(cert['true_me']['ratio'], 3)}.",
        "",
        f"- **{ONE_STAGE}**: the multi-class detector alone (its classes are counted).",
        f"- **{TWO_STAGE}**: the class-agnostic detector + the cell classifier on its crops.",
        "",
        markdown_table(SUMMARY_HEADERS, _summary_rows(result["systems"])),
        "",
        markdown_table(class_headers, _class_rows(result)),
        "",
        "## What the numbers are",
        "",
        f"- AP / AP50 (%, pycocotools, 101-point): mean over the classes; a prediction's class is "
        f"the counter's label, its score the {scores}. Detections down to the AP score "
        "threshold (the counter's class-agnostic NMS at IoU 0.5 leaves one box per cell for "
        "both systems). *Agnostic*: every class merged into one, scored by the detector score.",
        f"- Matched cells: counted detections (detector score >= {result['count_threshold']}) "
        "matched greedily, highest score first, to the unmatched true box of highest IoU >= 0.5, "
        "classes ignored; accuracy = label == true class over the matched cells; recall / "
        "precision = matched / true cells and matched / counted detections.",
        f"- Differential: % of the counted cells per class; cells whose class probability is "
        f"below {result['uncertain_below']} are uncertain and left out (as the count report "
        "does), or counted in their label (*uncertain in*). % MAE = mean over the classes of "
        "|predicted % - true %| (percentage points), of the differential pooled over the set "
        "or per image then averaged. M:E = myeloid / erythroid "
        f"(myeloid {', '.join(result['lineage']['myeloid'])}; "
        f"erythroid {', '.join(result['lineage']['erythroid'])}); per image over the images "
        "where both ratios exist.",
        "",
        "## Commands",
        "",
        "```bash",
        *commands,
        "```",
        "",
    ]
    return "\n".join(lines)


def own_args(argv: Optional[Sequence[str]]) -> List[str]:
    """The command line without its ``--train-command`` notes."""
    args = list(sys.argv[1:] if argv is None else argv)
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--train-command":
            skip = True
        elif not a.startswith("--train-command="):
            out.append(a)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from bmc_detectron.data.datasets import register_builtin_datasets

    register_builtin_datasets()
    result: Dict[str, Any] = compare_systems(
        args.dataset,
        build_systems(args),
        count_threshold=args.score_threshold,
        uncertain_below=args.uncertain_below,
    )
    result["machine"] = machine_info()
    out = Path(args.output)
    write_json_atomic(result, out / "compare_stages.json", indent=2)
    tool = "python -m studies.stages.compare_stages " + shell_join(own_args(argv))
    commands = [*args.train_command, tool]
    report = Path(args.report) if args.report else out / "RESULTS_stages.md"
    atomic_write_text(report, markdown_page(result, commands))
    for line in markdown_table(SUMMARY_HEADERS, _summary_rows(result["systems"])).splitlines():
        print(line)
    print(f"[compare_stages] wrote {out / 'compare_stages.json'} and {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
