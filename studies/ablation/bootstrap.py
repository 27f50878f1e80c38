"""Paired differences of an ablation with a 95 % bootstrap interval over the test images.

The t-interval over seeds (:func:`studies.ablation.report.interval_table`) answers
"would another seed change the verdict?"; this table answers "would another draw of test images
change it?". For each config and its parent / the reference, the seeds both finished are paired,
each run's saved predictions (``<run>/inference/<dataset>/coco_instances_results.json``) are
matched once against the ground truth, and the images are redrawn ``samples`` times (one draw
shared by every seed), see :mod:`bmc_detectron.evaluation.image_bootstrap`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping

from detectron2.data import MetadataCatalog
from pycocotools.coco import COCO

from bmc_detectron.evaluation.image_bootstrap import (
    PerImageMatches,
    match_images,
    paired_bootstrap,
    quiet,
)
from bmc_detectron.reporting.tables import markdown_table


def ground_truth(dataset: str) -> COCO:
    """The dataset's COCO ground truth: its registered ``json_file``, else detectron2's
    conversion of the registered dicts (written to a temporary file)."""
    json_file = MetadataCatalog.get(dataset).get("json_file")
    if json_file and Path(json_file).is_file():
        return quiet(COCO, json_file)
    from detectron2.data.datasets.coco import convert_to_coco_json

    with tempfile.TemporaryDirectory() as tmp:  # COCO keeps what it read: the file can go
        json_file = str(Path(tmp) / f"{dataset}_coco_format.json")
        convert_to_coco_json(dataset, json_file, allow_cached=False)
        return quiet(COCO, json_file)


def predictions_path(record: Mapping, dataset: str) -> Path:
    """Where a run's evaluation left its COCO-format predictions."""
    return Path(record["run_dir"]) / "inference" / dataset / "coco_instances_results.json"


class _Matches:
    """Per-run matching, computed once per run and kept."""

    def __init__(self, gt: COCO, dataset: str) -> None:
        self.gt, self.dataset, self.cache = gt, dataset, {}

    def get(self, record: Mapping) -> PerImageMatches | None:
        path = predictions_path(record, self.dataset)
        if str(path) not in self.cache:
            ok = record.get("status") == "ok" and path.is_file()
            result = match_images(self.gt, json.loads(path.read_text())) if ok else None
            self.cache[str(path)] = result
        return self.cache[str(path)]


def _cell(mean: float, lo: float, hi: float) -> str:
    return f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def bootstrap_table(
    records: List[Dict],
    summary: List[Dict],
    parents: Mapping[str, str],
    reference: str | None,
    dataset: str,
    samples: int = 1000,
) -> str:
    """Markdown section: under its heading (and a line on what the interval measures), a table
    with, per config vs parent and vs reference, the paired seeds with saved predictions and ΔAP,
    ΔAP50 (mean over those seeds) with the 95 % bootstrap interval over images."""
    head = (
        f"### Paired differences with 95 % intervals (bootstrap over the `{dataset}` images)\n\n"
        f"{samples} redraws of the test images (with replacement, one draw shared by every"
        " seed); the interval covers the test-set sampling of the mean paired difference, not"
        " the seed-to-seed variation (the t-interval above).\n\n"
    )
    matches = _Matches(ground_truth(dataset), dataset)
    runs = {(r["name"], r["seed"]): r for r in records}
    rows, configs = [], {x["config"] for x in summary}
    for s in summary:
        for other, role in [(parents.get(s["config"]), "parent"), (reference, "reference")]:
            if not other or other == s["config"] or other not in configs:
                continue
            pairs = []
            for seed in s["ok_seeds"]:
                a, b = runs.get((s["config"], seed)), runs.get((other, seed))
                ma = matches.get(a) if a else None
                mb = matches.get(b) if b else None
                if ma is not None and mb is not None:
                    pairs.append((ma, mb))
            if not pairs:
                continue
            res = paired_bootstrap(pairs, samples=samples)
            cells = [_cell(*res["AP"]), _cell(*res["AP50"])]
            rows.append([s["config"], f"{other} ({role})", str(len(pairs)), *cells])
    headers = ["config", "compared with", "n seeds", "ΔAP [95 % CI]", "ΔAP50 [95 % CI]"]
    if not rows:
        return head + "- no pair of runs with saved predictions to bootstrap\n"
    return head + markdown_table(headers, rows) + "\n"
