"""Train and evaluate several configs with one schedule, seeds and data; tabulate and plot.

    python -m studies.ablation.ablation --configs configs/cpu/retinanet_R_18_FPN_cpu.yaml \
        configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml --reference --train-dataset bccd_trainval \
        --test-dataset bccd_test --num-classes 3 --seeds 0 1 --output output/ablation \
        [--max-iter 780] [--report docs/results/index.md] [KEY VALUE ...]

Every run (config x seed) trains in its own subprocess (``--in-process`` to stay in this one)
into ``OUTPUT/runs/<config stem>/seed<S>``, resuming from its last checkpoint there, is
evaluated by ``BMCTrainer.test`` and timed at batch 1 (:mod:`studies.ablation.runs`). A
failing run is recorded as failed and the others go on; a run whose ``coco_metrics.json`` exists
is not run again.

The schedule (SOLVER.MAX_ITER, STEPS, WARMUP_ITERS, IMS_PER_BATCH, BASE_LR) is read from the first
config (after the overrides) and passed to every run; ``--max-iter N`` scales STEPS and
WARMUP_ITERS by N / MAX_ITER. The reference is the config ``--reference-config`` (default:
detectron2's stock RetinaNet, ``configs/cpu/d2_retinanet_R_18_FPN_cpu.yaml``): the run named by
its stem is the one component effects and the accuracy target are measured against;
``--reference`` adds it to ``--configs``. Writes ``ablation.csv``, ``ablation.md``,
``ap_per_config.png``, ``ap_vs_latency.png`` and, with ``--report``, a self-contained page.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from detectron2.utils.logger import setup_logger

from bmc_detectron.utils.io import shown_path
from studies.ablation.runs import RunPlan, run_one
from studies.ablation.study import PageSpec, run_ablation

REFERENCE_CONFIG = (
    Path(__file__).resolve().parents[2] / "configs/cpu/d2_retinanet_R_18_FPN_cpu.yaml"
)


def default_reference_config() -> str:
    """The stock-RetinaNet config of this checkout, relative to the working directory if below."""
    return shown_path(REFERENCE_CONFIG)


def _worker_main(spec_path: str) -> int:
    setup_logger(name="detectron2")
    setup_logger(name="bmc_detectron")
    run_one(json.loads(Path(spec_path).read_text()))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", required=True)
    p.add_argument("--reference", action="store_true", help="add --reference-config to --configs")
    p.add_argument(
        "--reference-config",
        default=default_reference_config(),
        help="the reference model's config; its stem names the reference run",
    )
    p.add_argument("--train-dataset", required=True)
    p.add_argument("--test-dataset", required=True)
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--output", default="output/ablation")
    p.add_argument("--max-iter", type=int, help="scale the first config's schedule to N iters")
    p.add_argument("--latency-images", type=int, default=20, help="batch-1 timing images")
    p.add_argument("--in-process", action="store_true", help="no subprocess per run")
    p.add_argument("--threads", type=int, help="torch.set_num_threads in every run")
    p.add_argument("--timeout", type=float, help="seconds per run (subprocess mode)")
    p.add_argument("--report", help="also regenerate this markdown page (e.g. docs/results/X.md)")
    p.add_argument("--extra", nargs="*", default=[], help="markdown files to include in the report")
    p.add_argument("--no-run", action="store_true", help="train nothing: tabulate what exists")
    p.add_argument(
        "--parent",
        nargs="*",
        default=[],
        metavar="CONFIG=PARENT",
        help="config names whose paired change is shown against another config",
    )
    p.add_argument("--full", help="config name of the full model, judged against the reference")
    p.add_argument(
        "--target",
        type=float,
        nargs="+",
        default=(1.5, 2.0),
        metavar="AP [AP50]",
        help="gain over the reference the full model must reach (AP, then AP50 if given)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="paired differences also get a bootstrap interval over test images (N draws; 0: no)",
    )
    p.add_argument(
        "--latency-from",
        metavar="LATENCY_JSON",
        help="take batch-1 latency (median) from a side-by-side tools/benchmark latency.json "
        "instead of each run's own timing, for the configs it has",
    )
    p.add_argument("--notes", help="markdown file placed under the report's setup section")
    p.add_argument(
        "--manifest", help="the study's study.yaml: the report's status section (planned runs)"
    )
    p.add_argument("--title", default="Ablation results", help="the report's heading")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="overrides KEY VALUE ... for all runs")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    bad = [x for x in args.parent if x.count("=") != 1]
    if bad:
        p.error(f"--parent takes CONFIG=PARENT pairs, got {bad}")
    if len(args.target) > 2:
        p.error(f"--target takes AP [AP50], got {len(args.target)} values")
    args.parents = dict(x.split("=") for x in args.parent)
    if args.reference:
        args.configs = [*args.configs, args.reference_config]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 when every run succeeded, 1 otherwise (2: an input is
    missing)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return _worker_main(argv[1])
    args = parse_args(argv)
    plan = RunPlan(
        configs=args.configs,
        train_dataset=args.train_dataset,
        test_dataset=args.test_dataset,
        num_classes=args.num_classes,
        seeds=args.seeds,
        output=args.output,
        max_iter=args.max_iter,
        latency_images=args.latency_images,
        threads=args.threads,
        opts=args.opts,
    )
    page = PageSpec(
        parents=args.parents,
        full=args.full,
        targets=tuple(args.target),
        bootstrap=args.bootstrap,
        latency_from=args.latency_from,
        report=args.report,
        title=args.title,
        notes=args.notes,
        manifest=args.manifest,
        extra=args.extra,
    )
    return run_ablation(
        plan,
        args.reference_config,
        page,
        argv=args.argv,
        no_run=args.no_run,
        in_process=args.in_process,
        timeout=args.timeout,
    )


if __name__ == "__main__":
    sys.exit(main())
