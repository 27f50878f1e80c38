"""CPU precision of one config side by side: float32, bf16, bf16 + channels-last.

    python -m studies.precision.precision_bench \
        --config-file configs/cpu/retinanet_R_18_full_cpu.yaml [--dataset bccd_train] \
        [--rounds 5] [--threads 2] [--num-images 4] [--profile] [--profile-iters 3] \
        [--output output/precision_bench] \
        [--report docs/results/precision/RESULTS_precision.md] [KEY VALUE ...]

The three variants are built in this process with the same initial weights
(:mod:`studies.precision.precision`). Training iterations read ``--dataset`` through the
trainer's own train loader (data time and step time apart), or random batches without a
dataset; inference is batch 1 on ``--num-images`` images of the test size (the dataset's, else
random). The losses of the three variants on one batch are compared first. ``--profile`` adds a
torch.profiler breakdown of training iterations by stage (:mod:`studies.precision.profile`).
Writes ``OUTPUT/precision_bench.json`` and ``OUTPUT/precision_bench.md`` (and ``--report``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Dict, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.utils.logger import setup_logger

from bmc_detectron.bench.inputs import default_input_size, image_records, latency_inputs
from bmc_detectron.bench.measure import torch_threads
from bmc_detectron.bench.report import describe
from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.engine.precision import cpu_supports_bf16
from bmc_detectron.reporting.provenance import machine_info, shell_join
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic
from studies.precision import precision, profile

COMMAND = "python -m studies.precision.precision_bench "


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", help="registered train dataset (default: random batches)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations / calls per variant")
    p.add_argument("--num-images", type=int, default=4, help="inference images per round")
    p.add_argument("--train-gts", type=int, default=20, help="random gt boxes per random image")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--profile", action="store_true", help="profile training iterations")
    p.add_argument("--profile-iters", type=int, default=3, help="profiled iterations / variant")
    p.add_argument("--output", default="output/precision_bench")
    p.add_argument("--report", help="also write the markdown page here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.rounds < 1 or args.num_images < 1 or args.profile_iters < 1:
        p.error("--rounds, --num-images and --profile-iters must be >= 1")
    return args


def _train_cfg(cfg: CfgNode, dataset: str | None) -> CfgNode:
    cfg = cfg.clone()
    cfg.defrost()
    if dataset:
        cfg.DATASETS.TRAIN = (dataset,)
    cfg.freeze()
    return cfg


def run(cfg: CfgNode, args: argparse.Namespace) -> Dict[str, object]:
    """Build the variants, check their losses, time the rounds, optionally profile."""
    subjects = precision.build_variants(cfg, describe(args.config_file))
    if args.dataset:
        batches = precision.loader_batches
    else:
        batches = precision.random_batches(args.train_gts)
    size = default_input_size(cfg)
    records = image_records(None, args.dataset)
    inputs = latency_inputs(records, args.num_images, size, cfg.INPUT.FORMAT)
    check = precision.loss_agreement(subjects, next(batches(cfg)))
    t0 = time.perf_counter()
    timing = precision.interleaved_rounds(subjects, batches, inputs, args.rounds, args.warmup)
    wall = time.perf_counter() - t0
    results = {s.name: timing[s.name] for s in subjects}
    rec: Dict[str, object] = {
        "config_file": args.config_file,
        "overrides": list(args.opts),
        "source": args.dataset or "random",
        "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "input_size": list(size),
        "rounds": args.rounds,
        "orders": timing["orders"],
        "variants": results,
        "speedup": precision.speedups(results),
        "loss_check": check,
        "rounds_wall_s": wall,
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_supports_bf16(),
        "machine": machine_info(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": COMMAND + shell_join(args.argv),
    }
    if args.profile:
        rec["profile"] = profile.profile_training(subjects, batches, args.profile_iters)
    return rec


def markdown(rec: Dict[str, object]) -> str:
    """The results page of one run."""
    m = rec["machine"]
    lines = [
        "# CPU precision: float32 vs bf16 vs bf16 + channels-last",
        "",
        f"`{rec['command']}` ({rec['date']})",
        "",
        f"Config `{rec['config_file']}` {' '.join(rec['overrides'])}; training batches of"
        f" {rec['ims_per_batch']} from `{rec['source']}`"
        f" ({rec['num_workers']} loader workers); inference batch 1 at"
        f" {rec['input_size'][0]}x{rec['input_size'][1]}. {m['cpu']}, native bf16:"
        f" {rec['native_bf16']}, {rec['threads']} torch threads, 1-min load average"
        f" {m['load_avg_1m']}. {rec['rounds']} interleaved rounds (order rotating), after"
        " untimed warm-up; speed-up = float32 median / variant median.",
        "",
        "## Timing",
        "",
        precision.timing_markdown(rec["variants"], rec["speedup"]),
        "",
        "## Loss agreement (same batch, same initial weights, before any step)",
        "",
        precision.loss_markdown(rec["loss_check"]),
    ]
    if "profile" in rec:
        prof = rec["profile"]
        lines += ["", "## Profile of a training iteration (torch.profiler, CPU)", ""]
        lines += [profile.stages_markdown(prof), "", "### Top-10 operators by self CPU time", ""]
        for name, p in prof.items():
            lines += [profile.top_ops_markdown(name, p), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a config that does not load)."""
    args = parse_args(argv)
    setup_logger(name="bmc_detectron")
    try:
        cfg = _train_cfg(build_cfg(args.config_file, list(args.opts)), args.dataset)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with torch_threads(args.threads):
        rec = run(cfg, args)
    page = markdown(rec)
    out = Path(args.output)
    write_json_atomic(rec, out / "precision_bench.json", indent=2)
    atomic_write_text(out / "precision_bench.md", page)
    if args.report:
        atomic_write_text(Path(args.report), page)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
