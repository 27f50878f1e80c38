"""The full cost record of one config on this machine: parameters, GFLOPs, batch-1 latency and
peak memory, batched throughput, a training step, COCO metrics with weights.

The command line is ``python -m bmc_detectron.analysis_tools.benchmark --configs C``.
"""

from __future__ import annotations

import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple

from detectron2.config import CfgNode

from bmc_detectron.bench.inputs import (
    TimingInputs,
    image_records,
    latency_inputs,
    random_batch,
    random_image_folder,
)
from bmc_detectron.bench.measure import (
    Subject,
    build_subject,
    evaluate_coco,
    measure_latency,
    measure_throughput,
    measure_training,
    precision_name,
)
from bmc_detectron.bench.memory import PeakMemory
from bmc_detectron.bench.model_cost import count_gflops, count_parameters
from bmc_detectron.bench.report import BENCHMARK_HEADERS, benchmark_row, describe
from bmc_detectron.reporting.provenance import machine_info
from bmc_detectron.reporting.tables import append_markdown_row
from bmc_detectron.utils.io import write_json_atomic


@dataclass(frozen=True)
class CostSettings:
    """What a cost record measures besides latency: throughput at ``batch_size`` (0: skip),
    ``iters`` timed training steps (0: skip) on random images with ``train_gts`` random boxes,
    COCO metrics (with weights and a dataset) written below ``output``."""

    batch_size: int = 4
    iters: int = 5
    train_gts: int = 20
    output: str = "output/benchmark"


def _header(
    subject: Subject,
    config_file: str,
    overrides: Sequence[str],
    size: Tuple[int, int],
    command: str,
) -> Dict:
    cfg = subject.cfg
    return {
        "name": subject.name,
        "config_file": config_file,
        "overrides": list(overrides),
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "weights": cfg.MODEL.WEIGHTS or None,
        "device": str(subject.model.device),
        "amp": bool(cfg.SOLVER.AMP.ENABLED) and subject.model.device.type == "cuda",
        "precision": precision_name(cfg),
        "input_size": list(size),
        "machine": machine_info(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
    }


def _training(cfg: CfgNode, size: Tuple[int, int], iters: int, num_gts: int) -> Dict[str, object]:
    model = build_subject(cfg, "train").model
    n, k = cfg.SOLVER.IMS_PER_BATCH, cfg.MODEL.RETINANET.NUM_CLASSES
    batch = random_batch(n, *size, num_gts, k, seed=cfg.SEED)
    with PeakMemory(model.device) as mem:
        rec = measure_training(model, cfg, batch, iters)
    return {**rec, "gts_per_image": num_gts, "memory": mem.as_dict()}


def cost_record(
    name: str,
    config_file: str,
    cfg: CfgNode,
    timing: TimingInputs,
    settings: CostSettings,
    *,
    overrides: Sequence[str] = (),
    command: str = "",
) -> Dict[str, object]:
    """Every single-config measurement of the module docstring for the model ``name`` of
    ``cfg`` (loaded from ``config_file`` with ``overrides``); returns the JSON record."""
    size = timing.size(cfg)
    subject = build_subject(cfg, name, describe(config_file))
    model = subject.model
    rec = {**_header(subject, config_file, overrides, size, command), **count_parameters(model)}
    rec["flops"] = count_gflops(model, size)
    n = timing.num_images
    with tempfile.TemporaryDirectory() as tmp:
        records = image_records(timing.images, timing.dataset)[:n]
        if not records:
            records = random_image_folder(Path(tmp), n, size)
        inputs = latency_inputs(records, n, size, cfg.INPUT.FORMAT)
        with PeakMemory(model.device) as mem:
            lat = measure_latency([subject], inputs, timing.rounds, timing.warmup)[subject.name]
        source = timing.source or "random"
        rec["latency"] = {**lat, "warmup": timing.warmup, "memory": mem.as_dict(), "source": source}
        if settings.batch_size > 0:
            rec["throughput"] = measure_throughput(subject, records, size, settings.batch_size)
    if settings.iters > 0:
        rec["train"] = _training(cfg, size, settings.iters, settings.train_gts)
    rec["coco"] = None
    if cfg.MODEL.WEIGHTS and timing.dataset:
        out = Path(settings.output) / subject.name
        rec["coco"] = evaluate_coco(cfg, model, timing.dataset, out)
    return rec


def write_cost_record(out: Path, rec: Dict[str, object]) -> str:
    """``out/benchmark_<name>.json`` and one row appended to ``out/benchmark.md``; the row."""
    write_json_atomic(rec, out / f"benchmark_{rec['name']}.json", indent=2)
    row = benchmark_row(rec)
    append_markdown_row(out / "benchmark.md", BENCHMARK_HEADERS, row)
    return row
