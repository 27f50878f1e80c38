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
import time
from pathlib import Path
from typing import List, Sequence

from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger

from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.utils.io import atomic_write_text
from studies.ablation.bootstrap import bootstrap_table
from studies.ablation.report import (
    markdown_tables,
    plot,
    summarize,
    write_csv,
    write_report,
)
from studies.ablation.runs import collect, execute, metrics_path, plan_runs, run_one

REFERENCE_CONFIG = (
    Path(__file__).resolve().parents[2] / "configs/cpu/d2_retinanet_R_18_FPN_cpu.yaml"
)


def default_reference_config() -> str:
    """The stock-RetinaNet config of this checkout, relative to the working directory if below."""
    try:
        return str(REFERENCE_CONFIG.relative_to(Path.cwd()))
    except ValueError:
        return str(REFERENCE_CONFIG)


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
        nargs=2,
        default=(1.5, 2.0),
        metavar=("AP", "AP50"),
        help="gain over the reference the full model must reach",
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
    p.add_argument("--title", default="Ablation results", help="the report's heading")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="overrides KEY VALUE ... for all runs")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    bad = [x for x in args.parent if x.count("=") != 1]
    if bad:
        p.error(f"--parent takes CONFIG=PARENT pairs, got {bad}")
    args.parents = dict(x.split("=") for x in args.parent)
    if args.reference:
        args.configs = [*args.configs, args.reference_config]
    return args


def _run_all(args: argparse.Namespace) -> tuple:
    """Plan, run (or skip) and collect every run; returns (specs, records)."""
    specs, records = plan_runs(args), []
    for spec in specs:
        tag = f"{spec['name']} seed {spec['seed']}"
        if metrics_path(spec).is_file():
            print(f"[ablation] skip {tag}: {metrics_path(spec)} exists")
        elif args.no_run:
            print(f"[ablation] no result for {tag} (--no-run)")
        else:
            print(f"[ablation] run {tag}")
            info = execute(spec, args.in_process, args.timeout)
            print(f"[ablation] {tag}: {info['status']} {info.get('error') or ''}".rstrip())
        records.append(collect(spec))
    return specs, records


def _missing_inputs(args: argparse.Namespace) -> List[str]:
    """Files named by --latency-from (with --report: --extra, --notes) that do not exist."""
    files = [args.latency_from, *((*args.extra, args.notes) if args.report else ())]
    return [f for f in files if f and not Path(f).is_file()]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 when every run succeeded, 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return _worker_main(argv[1])
    args = parse_args(argv)
    missing = _missing_inputs(args)
    if missing:
        print(f"error: file not found: {', '.join(missing)}; nothing written", file=sys.stderr)
        return 2
    setup_logger(name="bmc_detectron")
    t_start = time.perf_counter()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "commands.txt").open("a") as f:
        f.write("python -m studies.ablation.ablation " + shell_join(args.argv) + "\n")
    try:
        for name in (args.train_dataset, args.test_dataset):
            prepare_dataset(name)
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    specs, records = _run_all(args)
    reference = Path(args.reference_config).stem
    classes = MetadataCatalog.get(args.test_dataset).get("thing_classes") or []
    if args.latency_from:
        timed = json.loads(Path(args.latency_from).read_text())
        side_by_side = {m["name"]: m["median_ms"] for m in timed["models"]}
        for r in records:  # one latency per config: the interleaved median, for every seed
            r["latency_ms"] = side_by_side.get(r["name"], r.get("latency_ms"))
    summary = summarize(records, classes)
    write_csv(out / "ablation.csv", records, summary, classes)
    extra = []
    if args.bootstrap > 0:
        extra.append(
            bootstrap_table(
                records, summary, args.parents, reference, args.test_dataset, args.bootstrap
            )
        )
    tables = markdown_tables(
        records, summary, classes, args.parents, args.full, args.target, reference, extra
    )
    atomic_write_text(out / "ablation.md", "# Ablation\n\n" + tables)
    plot(out, summary)
    if args.report and not any(r.get("status") == "ok" for r in records):
        print(f"error: no finished run in {out}; {args.report} is left as it was", file=sys.stderr)
        return 2
    if args.report:
        wall = time.perf_counter() - t_start
        sched = specs[0]["schedule"] if specs else []
        write_report(Path(args.report), out, tables, records, args, wall, sched, reference)
    print(tables)
    return 0 if all(r.get("status") in ("ok", "not run") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
