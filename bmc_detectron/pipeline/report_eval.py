"""How right was a count? A finished count report read back and scored against expert truth.

:func:`evaluate_report` reads the report's fields (``cells/<field>.json``), matches them to the
images of a registered COCO dataset by file name and measures them with
:func:`bmc_detectron.evaluation.count.evaluate_cells`. ``bmc count-eval`` and ``bmc demo`` call it;
:func:`count_eval_markdown` writes the result as a page.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bmc_detectron.evaluation.count import dataset_images, evaluate_cells
from bmc_detectron.pipeline.counter import Cell
from bmc_detectron.reporting.tables import fmt, markdown_table


def report_cells(report: Path) -> Tuple[Dict[str, List[Cell]], Dict[str, Any]]:
    """Cells of every field of a finished report, by image file name, and its summary."""
    summary_file = report / "summary.json"
    if not summary_file.is_file():
        raise ValueError(f"{report}: no summary.json (not a finished count report)")
    summary = json.loads(summary_file.read_text())
    cells: Dict[str, List[Cell]] = {}
    for field in summary["fields"]:
        record = json.loads((report / "cells" / f"{field['name']}.json").read_text())
        cells[Path(record["image"]).name] = [Cell.from_json(c) for c in record["cells"]]
    return cells, summary


def by_image_id(
    cells: Dict[str, List[Cell]], images: Sequence[Tuple[int, str]], dataset: str
) -> Tuple[Dict[int, List[Cell]], List[str]]:
    """The report's cells keyed by the dataset's image ids; the dataset's images the report
    does not have (they count as fields with no cell found)."""
    out, missing = {}, []
    for image_id, path in images:
        name = Path(path).name
        out[image_id] = cells.get(name, [])
        if name not in cells:
            missing.append(name)
    if len(missing) == len(images):
        raise ValueError(f"no field of the report is an image of dataset '{dataset}'")
    return out, missing


def evaluate_report(
    report: Path,
    dataset: str,
    *,
    uncertain_below: Optional[float] = None,
    fields_per_case: int = 0,
) -> Dict[str, Any]:
    """Every measure of the count report ``report`` against the registered dataset ``dataset``
    (``uncertain_below`` None: the report's own threshold). ValueError (one line) when the report
    or the dataset cannot be used."""
    from detectron2.data import DatasetCatalog

    from bmc_detectron.data.datasets import register_builtin_datasets

    register_builtin_datasets()
    report = Path(report)
    cells, summary = report_cells(report)
    if dataset not in DatasetCatalog.list():
        raise ValueError(f"dataset '{dataset}' is not registered")
    gt, images = dataset_images(dataset)
    keyed, missing = by_image_id(cells, images, dataset)
    below = summary.get("uncertain_below", 0.5) if uncertain_below is None else uncertain_below
    score = "product" if summary.get("settings", {}).get("classifier") else "detector"
    result = evaluate_cells(
        keyed,
        gt,
        score,
        count_threshold=-math.inf,
        uncertain_below=below,
        fields_per_case=fields_per_case,
    )
    result.update(report=str(report), dataset=dataset, images=len(images), missing=missing)
    return result


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


def count_eval_markdown(result: Dict[str, Any], command: str) -> str:
    """The evaluation (:func:`evaluate_report`) as a short page; ``command`` made it."""
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


def score_lines(result: Dict[str, Any]) -> List[str]:
    """The evaluation (:func:`evaluate_report`) in a few printable lines."""
    m = result["matching"]
    lines = [
        f"count vs truth ({result['dataset']}): recall {100 * m['recall']:.1f} %  precision "
        f"{100 * m['precision']:.1f} %  label accuracy {100 * m['accuracy']:.1f} %"
    ]
    crowd = result.get("crowding")
    if crowd:
        kinds = "  ".join(
            f"{k} {100 * r['recall']:.1f} %" for k, r in crowd["recall"].items() if r["cells"]
        )
        share = 100 * crowd["pairs"]["share"]
        lines.append(f"  recall by crowding: {kinds}; touching pairs counted as two: {share:.1f} %")
    cases = result.get("cases")
    if cases:
        lines.append(
            f"  differential MAE per case of {cases['fields_per_case']} fields: mean "
            f"{cases['mae_mean']:.2f} pp, worst {cases['mae_max']:.2f} pp ({cases['cases']} cases)"
        )
    return lines
