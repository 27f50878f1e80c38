"""Cost of detector configs on this machine: one config in full, or several side by side.

    python -m bmc_detectron.analysis_tools.benchmark \
        --configs configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml \
        [--weights model_final.pth --dataset bccd_test] [--input-size 320 426] [--num-images 20] \
        [--batch-size 4] [--iters 5] [--output output/benchmark] [KEY VALUE ...]
    python -m bmc_detectron.analysis_tools.benchmark \
        --configs configs/cpu/d2_retinanet_R_18_FPN_cpu.yaml \
        configs/cpu/retinanet_R_18_full_cpu.yaml [--reference d2_retinanet_R_18_FPN_cpu] \
        [--full retinanet_R_18_full_cpu] [--rounds 6] [--num-images 10] \
        [--weights A.pth B.pth] [--own-size] [KEY VALUE ...]

Models are named by their config stem and run on ``MODEL.DEVICE`` in their config's precision
(:mod:`bmc_detectron.bench.measure`). Latency is batch 1, eval mode, ``model([input])``
(pre-processing, backbone + neck, head, decoding and NMS included), after ``--warmup`` untimed
calls, on ``--num-images`` images of ``--input-size`` (default: the first config's
MIN_SIZE_TEST x MAX_SIZE_TEST) taken from ``--images`` / ``--dataset``, else random.

One config: the full cost record, ``OUTPUT/benchmark_<name>.json`` and a row of
``OUTPUT/benchmark.md``: parameters; fvcore GFLOPs of backbone + head, plus a refinement stage
on the most boxes it may refine (1 multiply-add = 1 flop); latency (median, p90) and peak memory
(process RSS on CPU, max allocated on CUDA); throughput of batched inference through a
detectron2 test loader (``--batch-size``); median
training step (forward + backward + optimizer, ``--iters`` after one warm-up) on
``SOLVER.IMS_PER_BATCH`` random images with ``--train-gts`` random boxes; COCO metrics when
``--weights`` and ``--dataset`` are both given.

Several configs: every model is built in this one process and timed on the same inputs in
``--rounds`` interleaved rounds (the order rotating from round to round, so that drift of the
machine falls on all alike), each call split into backbone + neck / head / rest by forward hooks;
each median is divided by the reference's (``--reference``, a config stem; default the first
config), and ``--full NAME`` states whether NAME is within ``--max-ratio`` of it. ``--weights``
gives one checkpoint per config (trained weights: a dense detector's decoding and NMS cost
depend on its scores); ``--own-size`` times each model on the images at its own config's test
size (models of different input resolutions compared at their own cost). Writes
``OUTPUT/latency.json`` and ``OUTPUT/latency.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from detectron2.utils.logger import setup_logger

from bmc_detectron.bench.cost import CostSettings, cost_record, write_cost_record
from bmc_detectron.bench.inputs import TimingInputs
from bmc_detectron.bench.measure import torch_threads
from bmc_detectron.bench.side_by_side import (
    load_configs,
    side_by_side_latency,
    write_side_by_side,
)
from bmc_detectron.config import ConfigError
from bmc_detectron.reporting.provenance import shell_join

COMMAND = "python -m bmc_detectron.analysis_tools.benchmark "


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", "--config-file", nargs="+", required=True, dest="configs")
    p.add_argument(
        "--weights", nargs="+", help="checkpoint(s) (MODEL.WEIGHTS): one, or one per config"
    )
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument(
        "--own-size",
        action="store_true",
        help="several configs: each model on the images at its own test size",
    )
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
    if args.weights and len(args.weights) != len(args.configs):
        p.error("--weights needs one checkpoint per config")
    if args.own_size and (single or args.input_size):
        p.error("--own-size needs several configs and no --input-size")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a config that does not load)."""
    args = parse_args(argv)
    setup_logger(name="bmc_detectron")
    try:
        entries = load_configs(args.configs, list(args.opts), weights=args.weights)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out, command = Path(args.output), COMMAND + shell_join(args.argv)
    timing = TimingInputs(
        input_size=tuple(args.input_size) if args.input_size else None,
        images=args.images,
        dataset=args.dataset,
        num_images=args.num_images,
        rounds=args.rounds,
        warmup=args.warmup,
        own_size=args.own_size,
    )
    with torch_threads(args.threads):
        if len(entries) == 1:
            name, _, cfg = entries[0]
            settings = CostSettings(args.batch_size, args.iters, args.train_gts, args.output)
            rec = cost_record(
                args.name or name,
                args.configs[0],
                cfg,
                timing,
                settings,
                overrides=args.opts,
                command=command,
            )
        else:
            rec = side_by_side_latency(
                entries,
                timing,
                reference=args.reference,
                full=args.full,
                max_ratio=args.max_ratio,
                command=command,
            )
    if len(entries) == 1:
        print(write_cost_record(out, rec))
        print(f"[benchmark] {out / ('benchmark_' + rec['name'] + '.json')}, {out / 'benchmark.md'}")
    else:
        write_side_by_side(out, rec)
        print(rec["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
