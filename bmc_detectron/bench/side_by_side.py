"""Several configs timed side by side: every model built in one process and timed on the same
inputs in interleaved rounds (the order rotating from round to round, so that drift of the
machine falls on all alike), each call split into backbone + neck / head / rest, each median
divided by the reference's.

The command line is ``python -m bmc_detectron.analysis_tools.benchmark --configs A B ...``.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import CfgNode

from bmc_detectron.bench.inputs import TimingInputs, image_records, latency_inputs
from bmc_detectron.bench.measure import build_subject, measure_latency, precision_name
from bmc_detectron.bench.model_cost import count_gflops, count_parameters
from bmc_detectron.bench.names import run_names
from bmc_detectron.bench.report import add_ratios, describe, latency_markdown
from bmc_detectron.config import build_cfg
from bmc_detectron.reporting.provenance import machine_info
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic

#: The heading of ``latency.md``.
LATENCY_TITLE = "## Inference latency, side by side\n\n"


def load_configs(
    config_files: Sequence[str],
    opts: Sequence[str],
    weights: Sequence[str] | None = None,
) -> List[Tuple[str, str, CfgNode]]:
    """(name, config file, config with ``opts``) per config (:func:`~.names.run_names`), with
    ``weights[i]`` as the i-th config's MODEL.WEIGHTS when given (one per config); raises
    :class:`~bmc_detectron.config.ConfigError` for a config that does not load."""
    if weights is not None and len(weights) != len(config_files):
        raise ValueError(f"load_configs: {len(weights)} weights for {len(config_files)} configs")
    extra = [["MODEL.WEIGHTS", w] for w in weights] if weights else [[]] * len(config_files)
    return [
        (n, c, build_cfg(c, list(opts) + more))
        for (n, c), more in zip(run_names(config_files), extra)
    ]


def side_by_side_latency(
    entries: Sequence[Tuple[str, str, CfgNode]],
    timing: TimingInputs,
    *,
    reference: str | None = None,
    full: str | None = None,
    max_ratio: float = 1.3,
    command: str = "",
) -> Dict[str, object]:
    """Interleaved batch-1 latency of the models of ``entries`` (see the module docstring);
    the ratios are to ``reference`` (a name; default the first), and ``full`` is judged
    against ``max_ratio``. Returns the JSON record (``markdown``: the table)."""
    if timing.own_size and timing.input_size:
        raise ValueError("side_by_side_latency: own_size takes each config's size, not input_size")
    subjects = []
    for name, config_file, cfg in entries:
        torch.manual_seed(0)
        subjects.append(build_subject(cfg, name, describe(config_file)))
    cfg0 = entries[0][2]
    sizes = {s.name: timing.size(s.cfg if timing.own_size else cfg0) for s in subjects}
    records = image_records(timing.images, timing.dataset)
    inputs = {
        s.name: latency_inputs(records, timing.num_images, sizes[s.name], cfg0.INPUT.FORMAT)
        for s in subjects
    }
    t0 = time.perf_counter()
    lat = measure_latency(subjects, inputs, timing.rounds, timing.warmup, stages=True)
    models = []
    for s in subjects:
        rec = {"name": s.name, "description": s.description, "precision": precision_name(s.cfg)}
        rec.update(lat[s.name], **count_parameters(s.model))
        rec["gflops"] = count_gflops(s.model, sizes[s.name])["gflops"]
        rec["input_size"] = list(sizes[s.name])
        models.append(rec)
    reference = reference or subjects[0].name
    add_ratios(models, reference)
    machine = machine_info()
    size = sizes[subjects[0].name]
    header = (
        f"Batch 1, input {_input_text(sizes, timing.own_size)}"
        f" ({timing.source or 'random images'}),"
        f" {timing.rounds} interleaved rounds x {timing.num_images} images per model after"
        f" {timing.warmup} warm-up calls; device {subjects[0].model.device}, {machine['cpu']},"
        f" {torch.get_num_threads()} torch threads, 1-min load average {machine['load_avg_1m']}."
    )
    return {
        "models": models,
        "reference": reference,
        "input_size": list(size),
        "own_size": timing.own_size,
        "rounds": timing.rounds,
        "num_images": timing.num_images,
        "threads": torch.get_num_threads(),
        "machine": machine,
        "wall_s": time.perf_counter() - t0,
        "markdown": latency_markdown(models, reference, full, max_ratio, header),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
    }


def _input_text(sizes: Dict[str, Tuple[int, int]], own_size: bool) -> str:
    """The input size(s) as the table's header names them."""
    if not own_size:
        h, w = next(iter(sizes.values()))
        return f"{h}x{w}"
    return (
        "each model's own test size ("
        + ", ".join(f"{name} {h}x{w}" for name, (h, w) in sizes.items())
        + ")"
    )


def write_side_by_side(out: Path, rec: Dict[str, object]) -> None:
    """``out/latency.json`` (the record) and ``out/latency.md`` (the table under a heading)."""
    write_json_atomic(rec, out / "latency.json", indent=2)
    atomic_write_text(out / "latency.md", LATENCY_TITLE + rec["markdown"])
