"""Whole training runs of one config and seed in different precisions, side by side.

The interleaved benchmark (:mod:`studies.precision.precision`) shows that a bf16 step is
faster and computes nearly the same loss; whether a whole run ends at the same accuracy is a
different question, answered here from finished runs (``tools.ablation`` run folders): their
COCO metrics on the evaluation set, the training loss at the end, the logged seconds per
iteration, and the paired difference of each run against the first one with a 95 % bootstrap
interval over the evaluation images. The seed-to-seed spread of the same config (other seeds'
runs, when given) is the yardstick: a precision difference inside it is no difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import yaml

from bmc_detectron.evaluation.image_bootstrap import match_images, paired_bootstrap
from bmc_detectron.reporting.tables import markdown_table
from studies.ablation.bootstrap import ground_truth, predictions_path
from studies.ablation.runs import metrics_path


@dataclass
class RunRecord:
    """What one finished run measured. ``sec_per_iter``: median of the logged iteration times
    after warm-up; ``final_loss``: mean total loss over the last ``tail`` logged iterations."""

    label: str
    run_dir: Path
    precision: str
    iterations: int
    metrics: Dict[str, float] = field(default_factory=dict)
    final_loss: float = float("nan")
    sec_per_iter: float = float("nan")


def _precision_of(config_yaml: Path) -> str:
    cfg = yaml.safe_load(config_yaml.read_text()) if config_yaml.is_file() else {}
    prec = ((cfg or {}).get("BMC") or {}).get("PRECISION") or {}
    if not prec.get("CPU_BF16"):
        return "float32"
    return "bf16 + channels-last" if prec.get("CHANNELS_LAST") else "bf16"


def _training_log(metrics_json: Path) -> List[dict]:
    rows = []
    for line in metrics_json.read_text().splitlines():
        line = line.strip()
        if line:
            row = json.loads(line)
            if "total_loss" in row and "iteration" in row:
                rows.append(row)
    return rows


def read_run(
    label: str, run_dir: Path, dataset: str, tail: int = 5, warmup: int = 100
) -> RunRecord:
    """The :class:`RunRecord` of ``run_dir``; a clear error when the run has not finished."""
    run_dir = Path(run_dir)
    metrics_file = metrics_path({"run_dir": run_dir, "test_dataset": dataset})
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{run_dir}: not finished (no {metrics_file.name} for {dataset})")
    log = _training_log(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else []
    by_iter = {int(r["iteration"]): r for r in log}  # a resumed run logs some iterations twice
    rows = [by_iter[i] for i in sorted(by_iter)]
    times = [r["time"] for r in rows if r["iteration"] >= warmup and "time" in r]
    return RunRecord(
        label=label,
        run_dir=run_dir,
        precision=_precision_of(run_dir / "config.yaml"),
        iterations=int(rows[-1]["iteration"]) + 1 if rows else 0,
        metrics=json.loads(metrics_file.read_text()).get("bbox", {}),
        final_loss=float(np.mean([r["total_loss"] for r in rows[-tail:]]))
        if rows
        else float("nan"),
        sec_per_iter=float(np.median(times)) if times else float("nan"),
    )


def runs_table(runs: Sequence[RunRecord], classes: Sequence[str]) -> str:
    """Markdown: one row per run, AP / AP50 / AP75, per-class AP, final loss, s/iteration."""
    headers = [
        "run",
        "precision",
        "iterations",
        "AP",
        "AP50",
        "AP75",
        *[f"AP {c}" for c in classes],
        "final loss",
        "s / iteration (logged, median)",
    ]
    rows = []
    for r in runs:
        m = r.metrics
        rows.append(
            [
                r.label,
                r.precision,
                str(r.iterations),
                *[f"{m.get(k, float('nan')):.1f}" for k in ("AP", "AP50", "AP75")],
                *[f"{m.get(f'AP-{c}', float('nan')):.1f}" for c in classes],
                f"{r.final_loss:.3f}",
                f"{r.sec_per_iter:.2f}",
            ]
        )
    return markdown_table(headers, rows) + "\n"


def differences_table(runs: Sequence[RunRecord], dataset: str, samples: int = 1000) -> str:
    """Markdown: each run after the first against the first, ΔAP / ΔAP50 with the 95 % bootstrap
    interval over the images of ``dataset`` (one redraw shared by both runs)."""
    gt = ground_truth(dataset)

    def matches(r: RunRecord):
        path = predictions_path({"run_dir": r.run_dir}, dataset)
        return match_images(gt, json.loads(path.read_text()))

    base = matches(runs[0])
    rows = []
    for r in runs[1:]:
        res = paired_bootstrap([(matches(r), base)], samples=samples)
        cells = [f"{v[0]:+.1f} [{v[1]:+.1f}, {v[2]:+.1f}]" for v in (res["AP"], res["AP50"])]
        rows.append([f"{r.label} - {runs[0].label}", *cells])
    headers = ["difference", "ΔAP [95 % CI, images]", "ΔAP50 [95 % CI, images]"]
    return markdown_table(headers, rows) + "\n"


def spread_line(others: Sequence[RunRecord], runs: Sequence[RunRecord]) -> Optional[str]:
    """The seed-to-seed yardstick: AP of the same config over the seeds of ``others`` plus the
    run of ``runs`` in their precision, as range and largest pairwise difference."""
    same = [r for r in runs if others and r.precision == others[0].precision]
    pool = list(others) + same[:1]
    if len(pool) < 2:
        return None
    aps = [r.metrics.get("AP", float("nan")) for r in pool]
    ap50s = [r.metrics.get("AP50", float("nan")) for r in pool]
    return (
        f"Seed-to-seed yardstick ({pool[0].precision}, {len(pool)} seeds of the same config: "
        f"{', '.join(r.label for r in pool)}): AP {min(aps):.1f}-{max(aps):.1f} (largest "
        f"difference {max(aps) - min(aps):.1f}), AP50 {min(ap50s):.1f}-{max(ap50s):.1f} "
        f"({max(ap50s) - min(ap50s):.1f})."
    )
