"""The cell classifier's results page, generated from a finished training run.

    python -m studies.recognition.classifier_report --run output/clf \
        [--output docs/results/recognition/RESULTS_recognition.md] [--throughput-threads 1 2] \
        [--batch-size 64] [--targets 85 0.80 30 100]

Reads the run folder that ``train_net.py`` wrote (``config.yaml``, ``log.txt``, ``model_final.pth``,
``inference/<dataset>/classification_metrics.json`` and ``confusion_matrix.png``), measures the
batched ``predict_crops`` throughput of the trained model in this process (float32 and the run's
own precision, each thread count), and writes one markdown page: summary, per-class table, the
confusion matrix (copied next to the page), the issue's targets with a verdict, the machine and
the commands. Nothing on the page is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from bmc_detectron.bench.measure import torch_threads
from bmc_detectron.config import build_cfg
from bmc_detectron.engine.loading import load_model
from bmc_detectron.reporting.provenance import machine_info, shell_join
from bmc_detectron.reporting.tables import fmt, markdown_table
from bmc_detectron.reporting.timing import training_sessions
from bmc_detectron.utils.io import atomic_write_text


def training_time(log: Path) -> Dict[str, float]:
    """Iterations, minutes and seconds per iteration of the last training session in ``log``."""
    sessions = training_sessions(log)
    if not sessions:
        return {}
    last = sessions[-1]
    return {
        "iterations": last["iterations"],
        "minutes": last["seconds"] / 60,
        "s_per_iter": last["s_per_iter"],
    }


def crops_per_second(model, size: int, batch: int, rounds: int = 5) -> float:
    """Median crops/s of ``predict_crops`` on random (batch, 3, size, size) crops."""
    crops = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    model.predict_crops(crops)  # warm-up
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        model.predict_crops(crops)
        rates.append(batch / (time.perf_counter() - t0))
    return sorted(rates)[len(rates) // 2]


def throughput(run: Path, threads: Sequence[int], batch: int) -> List[Dict[str, object]]:
    """crops/s of the run's model in float32 and in the run's precision, per thread count."""
    rows = []
    for bf16 in (False, True):
        opts = ["MODEL.WEIGHTS", str(run / "model_final.pth"), "MODEL.DEVICE", "cpu"]
        cfg = build_cfg(str(run / "config.yaml"), opts + ["BMC.PRECISION.CPU_BF16", str(bf16)])
        if bf16 and not build_cfg(str(run / "config.yaml"), opts).BMC.PRECISION.CPU_BF16:
            continue
        model = load_model(cfg)
        size = int(cfg.MODEL.BMC.CLASSIFIER.CROP_SIZE)
        for n in threads:
            with torch_threads(n), torch.no_grad():
                rate = crops_per_second(model, size, batch)
            rows.append(
                {
                    "precision": "bf16" if bf16 else "fp32",
                    "threads": n,
                    "rate": rate,
                    "crop": size,
                    "batch": batch,
                }
            )
    return rows


def per_class_rows(metrics: Dict) -> List[List[object]]:
    rows = []
    for name, v in metrics["per_class"].items():
        if v["absent"]:
            rows.append([name, "-", "-", "-", 0, "absent from this set"])
        else:
            cells = [fmt(100 * v[k]) for k in ("precision", "recall", "f1")]
            rows.append([name, *cells, v["support"], ""])
    return rows


def verdict(value: Optional[float], target: float, higher: bool = True) -> str:
    if value is None:
        return "not measured"
    return "met" if (value >= target if higher else value <= target) else "not met"


def _summary_table(metrics: Dict, train: Dict) -> str:
    """One row: the evaluated set, accuracy, macro scores and the training cost."""
    header = ["dataset", "cells", "top-1 (%)", "macro-F1", "macro precision", "macro recall"]
    row = [
        metrics["dataset"],
        metrics["num_samples"],
        fmt(100 * metrics["accuracy"]),
        fmt(metrics["macro_f1"], 3),
        fmt(metrics["macro_precision"], 3),
        fmt(metrics["macro_recall"], 3),
        f"{train.get('iterations', '-')} it, {fmt(train.get('minutes'))} min",
        fmt(train.get("s_per_iter"), 2),
    ]
    return markdown_table(header + ["training", "s / iteration"], [row])


def _targets_table(metrics: Dict, train: Dict, speed: List[Dict], targets) -> str:
    """Each target of the recognition stage against what was measured."""
    acc, f1 = 100 * metrics["accuracy"], metrics["macro_f1"]
    minutes = train.get("minutes")
    best = max((r["rate"] for r in speed if r["threads"] <= 2), default=None)
    t_acc, t_f1, t_min, t_rate = targets
    return markdown_table(
        ["target", "measured", "verdict"],
        [
            [f"top-1 >= {t_acc} %", fmt(acc), verdict(acc, t_acc)],
            [f"macro-F1 >= {t_f1}", fmt(f1, 3), verdict(f1, t_f1)],
            [
                f"training <= {t_min} min on 2 CPU cores",
                fmt(minutes),
                verdict(minutes, t_min, False),
            ],
            [f">= {t_rate} crops/s batched on 2 cores", fmt(best, 0), verdict(best, t_rate)],
        ],
    )


def render(run: Path, metrics: Dict, train: Dict, speed: List[Dict], args, figure: str) -> str:
    """The markdown page."""
    summary = _summary_table(metrics, train)
    targets = _targets_table(metrics, train, speed, args.targets)
    speed_table = markdown_table(
        ["precision", "torch threads", "crop", "batch", "crops / s"],
        [[r["precision"], r["threads"], r["crop"], r["batch"], fmt(r["rate"], 0)] for r in speed],
    )
    machine = machine_info()
    config = _config_source(run)
    absent = ", ".join(metrics.get("absent_classes") or []) or "none"
    return "\n".join(
        [
            "# Recognition stage: the cell classifier",
            "",
            f"Run `{run.name}` of `{config}`, evaluated on `{metrics['dataset']}`. "
            f"Classes without a sample in this set: {absent}.",
            "",
            "## Summary",
            "",
            summary,
            "",
            "## Targets",
            "",
            targets,
            "",
            "## Per class (%)",
            "",
            markdown_table(
                ["class", "precision", "recall", "F1", "support", ""], per_class_rows(metrics)
            ),
            "",
            f"![confusion matrix]({figure})",
            "",
            "## Inference throughput (`predict_crops`, median of 5 batches)",
            "",
            speed_table,
            "",
            "## Machine",
            "",
            f"{machine['cpu']}, {machine['logical_cores']} logical cores, "
            f"{machine['memory_gb']} GB, torch {machine['torch']}, "
            f"1-min load {machine['load_avg_1m']} "
            "(training time and throughput depend on other load on the machine).",
            "",
            "## Commands",
            "",
            "```bash",
            f"python train_net.py --config-file {config} OUTPUT_DIR output/{run.name}",
            f"python -m studies.recognition.classifier_report --run output/{run.name} "
            + shell_join(
                ["--output", args.output, "--throughput-threads", *args.throughput_threads]
            ),
            "```",
            "",
        ]
    )


def _config_source(run: Path) -> str:
    """The config file the run was trained from, as train_net.py logged it."""
    log = run / "log.txt"
    text = log.read_text(errors="replace") if log.is_file() else ""
    found = re.findall(r"Contents of args.config_file=(\S+):", text)
    return found[0] if found else "config.yaml"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="OUTPUT_DIR of a finished classifier training")
    p.add_argument("--output", default="docs/results/recognition/RESULTS_recognition.md")
    p.add_argument("--throughput-threads", type=int, nargs="*", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--targets",
        type=float,
        nargs=4,
        default=(85.0, 0.80, 30.0, 100.0),
        metavar=("TOP1", "MACRO_F1", "MINUTES", "CROPS_PER_S"),
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    run = Path(args.run)
    found = sorted(run.glob("inference/*/classification_metrics.json"))
    if not found or not (run / "model_final.pth").is_file():
        print(
            f"error: {run}: no model_final.pth or inference/*/classification_metrics.json "
            "(train and evaluate the classifier first)",
            file=sys.stderr,
        )
        return 2
    metrics = json.loads(found[-1].read_text())
    out = Path(args.output)
    figure = f"{out.stem}_confusion.png"
    png = found[-1].parent / "confusion_matrix.png"
    if png.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, out.parent / figure)
    speed = throughput(run, args.throughput_threads, args.batch_size)
    page = render(run, metrics, training_time(run / "log.txt"), speed, args, figure)
    atomic_write_text(out, page)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
