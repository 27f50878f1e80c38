"""Cost of detector configs on this machine: one config in full, or several side by side.

    python -m bmc_detectron.analysis_tools.benchmark \
        --configs configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml \
        [--weights model_final.pth --dataset bccd_test] [--input-size 320 426] [--num-images 20] \
        [--batch-size 4] [--iters 5] [--output output/benchmark] [KEY VALUE ...]
    python -m bmc_detectron.analysis_tools.benchmark \
        --configs configs/cpu/d2_retinanet_R_18_FPN_cpu.yaml \
        configs/cpu/retinanet_R_18_full_cpu.yaml [--reference d2_retinanet_R_18_FPN_cpu] \
        [--full retinanet_R_18_full_cpu] [--rounds 6] [--num-images 10] [KEY VALUE ...]

Models are named by their config stem and run on ``MODEL.DEVICE`` in their config's precision
(:mod:`bmc_detectron.bench.measure`). Latency is batch 1, eval mode, ``model([input])``
(pre-processing, backbone + neck, head, decoding and NMS included), after ``--warmup`` untimed
calls, on ``--num-images`` images of ``--input-size`` (default: the first config's
MIN_SIZE_TEST x MAX_SIZE_TEST) taken from ``--images`` / ``--dataset``, else random.

One config: the full cost record, ``OUTPUT/benchmark_<name>.json`` and a row of
``OUTPUT/benchmark.md``: parameters; fvcore GFLOPs of backbone + head (1 multiply-add = 1
flop); latency (median, p90) and peak memory (process RSS on CPU, max allocated on CUDA);
throughput of batched inference through a detectron2 test loader (``--batch-size``); median
training step (forward + backward + optimizer, ``--iters`` after one warm-up) on
``SOLVER.IMS_PER_BATCH`` random images with ``--train-gts`` random boxes; COCO metrics when
``--weights`` and ``--dataset`` are both given.

Several configs: every model is built in this one process and timed on the same inputs in
``--rounds`` interleaved rounds (the order rotating from round to round, so that drift of the
machine falls on all alike), each call split into backbone + neck / head / rest by forward hooks;
each median is divided by the reference's (``--reference``, a config stem; default the first
config), and ``--full NAME`` states whether NAME is within ``--max-ratio`` of it. Writes
``OUTPUT/latency.json`` and ``OUTPUT/latency.md``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.utils.logger import setup_logger

from bmc_detectron.bench.inputs import (
    default_input_size,
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
    torch_threads,
)
from bmc_detectron.bench.memory import PeakMemory
from bmc_detectron.bench.model_cost import count_gflops, count_parameters
from bmc_detectron.bench.report import (
    BENCHMARK_HEADERS,
    add_ratios,
    benchmark_row,
    describe,
    latency_markdown,
)
from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.reporting.provenance import machine_info, shell_join
from bmc_detectron.reporting.tables import append_markdown_row
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic
from studies.ablation.runs import run_names

COMMAND = "python -m bmc_detectron.analysis_tools.benchmark "


def _header(subject: Subject, args: argparse.Namespace, size: Tuple[int, int]) -> Dict:
    cfg = subject.cfg
    return {
        "name": subject.name,
        "config_file": args.configs[0],
        "overrides": list(args.opts),
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "weights": cfg.MODEL.WEIGHTS or None,
        "device": str(subject.model.device),
        "amp": bool(cfg.SOLVER.AMP.ENABLED) and subject.model.device.type == "cuda",
        "precision": precision_name(cfg),
        "input_size": list(size),
        "machine": machine_info(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": COMMAND + shell_join(args.argv),
    }


def _training(cfg: CfgNode, size: Tuple[int, int], iters: int, num_gts: int) -> Dict[str, object]:
    model = build_subject(cfg, "train").model
    n, k = cfg.SOLVER.IMS_PER_BATCH, cfg.MODEL.RETINANET.NUM_CLASSES
    batch = random_batch(n, *size, num_gts, k, seed=cfg.SEED)
    with PeakMemory(model.device) as mem:
        rec = measure_training(model, cfg, batch, iters)
    return {**rec, "gts_per_image": num_gts, "memory": mem.as_dict()}


def cost_record(name: str, cfg: CfgNode, args: argparse.Namespace) -> Dict[str, object]:
    """Every single-config measurement of the module docstring; returns the JSON record."""
    size = tuple(args.input_size) if args.input_size else default_input_size(cfg)
    subject = build_subject(cfg, args.name or name, describe(args.configs[0]))
    model = subject.model
    rec = {**_header(subject, args, size), **count_parameters(model)}
    rec["flops"] = count_gflops(model, size)
    with tempfile.TemporaryDirectory() as tmp:
        records = image_records(args.images, args.dataset)[: args.num_images]
        if not records:
            records = random_image_folder(Path(tmp), args.num_images, size)
        inputs = latency_inputs(records, args.num_images, size, cfg.INPUT.FORMAT)
        with PeakMemory(model.device) as mem:
            lat = measure_latency([subject], inputs, args.rounds, args.warmup)[subject.name]
        source = args.images or args.dataset or "random"
        rec["latency"] = {**lat, "warmup": args.warmup, "memory": mem.as_dict(), "source": source}
        if args.batch_size > 0:
            rec["throughput"] = measure_throughput(subject, records, size, args.batch_size)
    if args.iters > 0:
        rec["train"] = _training(cfg, size, args.iters, args.train_gts)
    rec["coco"] = None
    if cfg.MODEL.WEIGHTS and args.dataset:
        rec["coco"] = evaluate_coco(cfg, model, args.dataset, Path(args.output) / subject.name)
    return rec


def compare(entries: List[Tuple[str, str, CfgNode]], args: argparse.Namespace) -> Dict:
    """Interleaved side-by-side latency of several configs; returns the JSON record."""
    subjects = []
    for name, config_file, cfg in entries:
        torch.manual_seed(0)
        subjects.append(build_subject(cfg, name, describe(config_file)))
    cfg0 = entries[0][2]
    size = tuple(args.input_size) if args.input_size else default_input_size(cfg0)
    records = image_records(args.images, args.dataset)
    inputs = latency_inputs(records, args.num_images, size, cfg0.INPUT.FORMAT)
    t0 = time.perf_counter()
    lat = measure_latency(subjects, inputs, args.rounds, args.warmup, stages=True)
    models = []
    for s in subjects:
        rec = {"name": s.name, "description": s.description, "precision": precision_name(s.cfg)}
        rec.update(lat[s.name], **count_parameters(s.model))
        rec["gflops"] = count_gflops(s.model, size)["gflops"]
        models.append(rec)
    reference = args.reference or subjects[0].name
    add_ratios(models, reference)
    machine = machine_info()
    header = (
        f"Batch 1, input {size[0]}x{size[1]} ({args.images or args.dataset or 'random images'}),"
        f" {args.rounds} interleaved rounds x {args.num_images} images per model after"
        f" {args.warmup} warm-up calls; device {subjects[0].model.device}, {machine['cpu']},"
        f" {torch.get_num_threads()} torch threads, 1-min load average {machine['load_avg_1m']}."
    )
    return {
        "models": models,
        "reference": reference,
        "input_size": list(size),
        "rounds": args.rounds,
        "num_images": args.num_images,
        "threads": torch.get_num_threads(),
        "machine": machine,
        "wall_s": time.perf_counter() - t0,
        "markdown": latency_markdown(models, reference, args.full, args.max_ratio, header),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": COMMAND + shell_join(args.argv),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", "--config-file", nargs="+", required=True, dest="configs")
    p.add_argument("--weights", help="checkpoint (sets MODEL.WEIGHTS; one config only)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--num-images", type=int, help="images per model (and round); 20 / 10")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default: 1 / 6)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batch-1 calls per model")
    p.add_argument("--dataset", help="registered dataset: images to time, COCO metrics")
    p.add_argument("--images", help="image folder to time (overrides --dataset)")
    p.add_argument("--batch-size", type=int, default=4, help="throughput batch (0: skip)")
    p.add_argument("--iters", type=int, default=5, help="timed training iterations (0: skip)")
    p.add_argument("--train-gts", type=int, default=20, help="random gt boxes per train image")
    p.add_argument("--name", help="run name of a single config (default: config stem)")
    p.add_argument("--reference", help="config stem the latencies are divided by")
    p.add_argument("--full", help="config stem whose latency ratio is judged")
    p.add_argument("--max-ratio", type=float, default=1.3, help="allowed latency / reference")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--output", default="output/benchmark")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    single = len(args.configs) == 1
    args.num_images = args.num_images or (20 if single else 10)
    args.rounds = args.rounds or (1 if single else 6)
    if args.num_images < 1 or args.rounds < 1:
        p.error("--num-images and --rounds must be >= 1")
    if args.weights and not single:
        p.error("--weights needs exactly one config")
    return args


def _write(out: Path, rec: Dict[str, object], single: bool) -> None:
    if single:
        write_json_atomic(rec, out / f"benchmark_{rec['name']}.json", indent=2)
        row = benchmark_row(rec)
        append_markdown_row(out / "benchmark.md", BENCHMARK_HEADERS, row)
        print(row)
        print(f"[benchmark] {out / ('benchmark_' + rec['name'] + '.json')}, {out / 'benchmark.md'}")
    else:
        write_json_atomic(rec, out / "latency.json", indent=2)
        title = "## Inference latency, side by side\n\n"
        atomic_write_text(out / "latency.md", title + rec["markdown"])
        print(rec["markdown"])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a config that does not load)."""
    args = parse_args(argv)
    setup_logger(name="bmc_detectron")
    opts = list(args.opts) + (["MODEL.WEIGHTS", args.weights] if args.weights else [])
    try:
        entries = [(n, c, build_cfg(c, opts)) for n, c in run_names(args.configs)]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    single = len(entries) == 1
    with torch_threads(args.threads):
        if single:
            name, _, cfg = entries[0]
            rec = cost_record(name, cfg, args)
        else:
            rec = compare(entries, args)
    _write(Path(args.output), rec, single)
    return 0


if __name__ == "__main__":
    sys.exit(main())
