"""How right was a count? A finished count report read back and scored against expert truth.

:func:`evaluate_report` reads the report's fields (``cells/<field>.json``), matches them to the
images of a registered COCO dataset by file name and measures them with
:func:`bmc_detectron.evaluation.count.evaluate_cells`. ``bmc count-eval`` and ``bmc demo`` call it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bmc_detectron.evaluation.count import dataset_images, evaluate_cells
from bmc_detectron.pipeline.counter import Cell


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
