"""One- vs two-stage detectors on one dataset: train, evaluate, time, one table.

    python -m studies.detectors.compare_detectors --train-dataset bccd_trainval \
        --test-dataset bccd_test --num-classes 3 --seeds 0 1 --output output/compare_detectors \
        [--configs A.yaml ...] [--full configs/cpu/retinanet_R_18_full_cpu.yaml] \
        [--tasks fcos_R_18_FPN_cpu:0 ...] [--no-run] \
        [--report docs/results/detectors/RESULTS_detectors.md] \
        [--notes studies/detectors/notes.md] [--manifest studies/detectors/study.yaml] \
        [KEY VALUE ...]

The thesis chose RetinaNet after comparing one- and two-stage detectors (its chapter 3). This
command trains every config x seed with one schedule and data (:mod:`studies.ablation.study`:
resumable, each run evaluated with COCO metrics and timed), then times batch-1 inference of all
configs side by side in one process (interleaved rounds, :mod:`bmc_detectron.bench.side_by_side`),
then writes one table:
parameters, GFLOPs, latency, training time, AP / AP50 / AP75, APs / APm / APl and per-class AP,
with the full model judged against detectron2's RetinaNet. By default the four detectors are
detectron2's RetinaNet (the reference), Faster R-CNN and FCOS on the same ResNet-18 FPN
(``configs/cpu/compare/``), and the full model. ``--tasks`` trains exactly the given runs and
stops (one lane of a shared machine); ``--no-run`` trains nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Sequence

from detectron2.utils.logger import setup_logger

from bmc_detectron.bench.inputs import TimingInputs
from bmc_detectron.bench.measure import torch_threads
from bmc_detectron.bench.side_by_side import (
    load_configs,
    side_by_side_latency,
    write_side_by_side,
)
from bmc_detectron.config import ConfigError
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.utils.io import shown_path
from studies.ablation.runs import RunPlan
from studies.ablation.study import PageSpec, run_ablation

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cpu"
REFERENCE = CONFIGS / "d2_retinanet_R_18_FPN_cpu.yaml"
DEFAULT_CONFIGS = [
    REFERENCE,
    CONFIGS / "compare" / "faster_rcnn_R_18_FPN_cpu.yaml",
    CONFIGS / "compare" / "fcos_R_18_FPN_cpu.yaml",
]
DEFAULT_FULL = CONFIGS / "retinanet_R_18_full_cpu.yaml"
BENCHMARK = "python -m bmc_detectron.analysis_tools.benchmark "
TITLE = "Detectors compared: Faster R-CNN, FCOS, RetinaNet and the full model"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", help="default: reference, Faster R-CNN, FCOS + --full")
    p.add_argument("--full", default=shown_path(DEFAULT_FULL), help="the full model's config")
    p.add_argument("--train-dataset", required=True)
    p.add_argument("--test-dataset", required=True)
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--output", default="output/compare_detectors")
    p.add_argument("--tasks", nargs="+", metavar="NAME:SEED", help="train only these runs")
    p.add_argument("--no-run", action="store_true", help="train nothing: tabulate what exists")
    p.add_argument("--max-iter", type=int, help="scale the schedule to N iterations")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training run")
    p.add_argument("--latency-threads", type=int, default=2, help="torch threads when timing")
    p.add_argument("--latency-images", type=int, help="images per model and round when timing")
    p.add_argument("--latency-rounds", type=int, help="interleaved timing rounds")
    p.add_argument("--no-train-timing", action="store_true", help="time inference only")
    p.add_argument(
        "--reuse-latency",
        action="store_true",
        help="keep OUTPUT/latency/latency.md when it exists (time only when it does not)",
    )
    p.add_argument("--in-process", action="store_true", help="train in this process")
    p.add_argument(
        "--report", help="write the results page here (docs/results/detectors/RESULTS_detectors.md)"
    )
    p.add_argument("--notes", help="markdown placed under the page's setup section")
    p.add_argument("--manifest", help="the study's study.yaml: the page's status section")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="overrides KEY VALUE ... for all runs")
    args = p.parse_args(argv)
    args.configs = args.configs or [*(shown_path(c) for c in DEFAULT_CONFIGS), args.full]
    args.names = {Path(c).stem: c for c in args.configs}
    for task in args.tasks or []:
        name, _, seed = task.rpartition(":")
        if name not in args.names or not seed.isdigit():
            p.error(f"--tasks {task}: expected NAME:SEED with NAME one of {sorted(args.names)}")
    return args


def _plan(args: argparse.Namespace, configs: List[str], seeds: Sequence[int]) -> RunPlan:
    return RunPlan(
        configs=configs,
        train_dataset=args.train_dataset,
        test_dataset=args.test_dataset,
        num_classes=args.num_classes,
        seeds=seeds,
        output=args.output,
        max_iter=args.max_iter,
        threads=args.threads,
        opts=args.opts,
    )


def _ablation_argv(args: argparse.Namespace, configs: List[str], seeds: Sequence[int]) -> list:
    """The ``studies.ablation.ablation`` command line equivalent to the runs of ``configs`` x
    ``seeds`` (logged with the runs and named on the page), without the overrides."""
    argv = ["--configs", *configs, "--reference-config", shown_path(REFERENCE)]
    argv += ["--train-dataset", args.train_dataset, "--test-dataset", args.test_dataset]
    argv += ["--num-classes", str(args.num_classes), "--seeds", *map(str, seeds)]
    argv += ["--output", args.output, "--threads", str(args.threads)]
    argv += ["--max-iter", str(args.max_iter)] if args.max_iter else []
    return argv + (["--in-process"] if args.in_process else [])


def _train(args: argparse.Namespace, configs: List[str], seeds: Sequence[int]) -> int:
    """Train the runs of ``configs`` x ``seeds`` that have no result (no page)."""
    return run_ablation(
        _plan(args, configs, seeds),
        shown_path(REFERENCE),
        PageSpec(),
        argv=_ablation_argv(args, configs, seeds) + list(args.opts),
        in_process=args.in_process,
    )


def _benchmark_argv(args: argparse.Namespace) -> list:
    """The ``analysis_tools.benchmark`` command line equivalent to :func:`_time_side_by_side`."""
    argv = ["--configs", *args.configs, "--reference", REFERENCE.stem]
    argv += ["--dataset", args.test_dataset, "--threads", str(args.latency_threads)]
    argv += ["--output", str(Path(args.output) / "latency")]
    if args.latency_images:
        argv += ["--num-images", str(args.latency_images)]
    if args.latency_rounds:
        argv += ["--rounds", str(args.latency_rounds)]
    if args.no_train_timing:
        argv += ["--batch-size", "0", "--iters", "0"]
    n = str(args.num_classes)
    return argv + ["MODEL.RETINANET.NUM_CLASSES", n, "MODEL.ROI_HEADS.NUM_CLASSES", n, *args.opts]


def _time_side_by_side(args: argparse.Namespace) -> int:
    """Batch-1 latency of every config, side by side: ``OUTPUT/latency/latency.{json,md}``."""
    setup_logger(name="bmc_detectron")
    n = str(args.num_classes)
    opts = ["MODEL.RETINANET.NUM_CLASSES", n, "MODEL.ROI_HEADS.NUM_CLASSES", n, *args.opts]
    try:
        entries = load_configs(args.configs, opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    timing = TimingInputs(
        dataset=args.test_dataset,
        num_images=args.latency_images or 10,
        rounds=args.latency_rounds or 6,
    )
    command = BENCHMARK + shell_join(_benchmark_argv(args))
    with torch_threads(args.latency_threads):
        rec = side_by_side_latency(entries, timing, reference=REFERENCE.stem, command=command)
    write_side_by_side(Path(args.output) / "latency", rec)
    print(rec["markdown"])
    return 0


def _report(args: argparse.Namespace, rc: int) -> int:
    """The tables and, with ``--report``, the page, from the runs and the latency table."""
    latency = Path(args.output) / "latency" / "latency.md"
    latency_json = latency.with_suffix(".json")
    page = PageSpec(
        full=Path(args.full).stem,
        extra=[str(latency)],
        latency_from=str(latency_json) if latency_json.is_file() else None,
        report=args.report,
        notes=args.notes,
        manifest=args.manifest,
        **({"title": TITLE} if args.report else {}),
    )
    argv = _ablation_argv(args, args.configs, args.seeds) + ["--no-run"]
    argv += ["--full", page.full, "--extra", str(latency)]
    if page.latency_from:
        argv += ["--latency-from", page.latency_from]
    if args.report:
        argv += ["--report", args.report, "--title", TITLE]
    if args.notes:
        argv += ["--notes", args.notes]
    if args.manifest:
        argv += ["--manifest", args.manifest]
    plan = _plan(args, args.configs, args.seeds)
    argv += list(args.opts)
    return rc | run_ablation(
        plan, shown_path(REFERENCE), page, argv=argv, no_run=True, in_process=args.in_process
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 when every run (and the timing) succeeded."""
    args = parse_args(argv)
    if args.tasks:
        rc = 0
        for task in args.tasks:
            name, _, seed = task.rpartition(":")
            rc |= _train(args, [args.names[name]], [int(seed)])
        return rc
    rc = 0
    if not args.no_run:
        rc = _train(args, args.configs, args.seeds)
    latency = Path(args.output) / "latency" / "latency.md"
    if not (args.reuse_latency and latency.is_file()):
        rc |= _time_side_by_side(args)
    return _report(args, rc)


if __name__ == "__main__":
    sys.exit(main())
