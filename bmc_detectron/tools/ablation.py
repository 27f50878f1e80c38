"""Train and evaluate several configs with one schedule, seeds and data; tabulate and plot.

    python -m bmc_detectron.tools.ablation --configs configs/cpu/retinanet_R_18_FPN_cpu.yaml \
        configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml --reference --train-dataset bccd_trainval \
        --test-dataset bccd_test --num-classes 3 --seeds 0 1 --output output/ablation \
        [--max-iter 780] [--report docs/RESULTS.md] [KEY VALUE ...]

Every run (config x seed) trains in its own subprocess (``--in-process`` to stay in this one)
into ``OUTPUT/runs/<config>/seed<S>``, is evaluated by ``BMCTrainer.test`` and timed at batch 1
with :func:`bmc_detectron.tools.benchmark.measure_latency`. A failing run is recorded as failed
and the others go on; a run whose ``coco_metrics.json`` exists is not run again (resume).

The schedule (SOLVER.MAX_ITER, STEPS, WARMUP_ITERS, IMS_PER_BATCH, BASE_LR) is read from the first
config (after the overrides) and passed to every run; ``--max-iter N`` scales STEPS and
WARMUP_ITERS by N / MAX_ITER. ``--reference`` adds detectron2's stock ``RetinaNet`` with
``build_retinanet_resnet_fpn_backbone`` on the first config. Writes ``ablation.csv``,
``ablation.md``, ``ap_per_config.png``, ``ap_vs_latency.png`` and, with ``--report``, a
self-contained results page.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Sequence

from detectron2.data import MetadataCatalog
from detectron2.engine import hooks
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.engine import BMCTrainer
from bmc_detectron.tools import _bench_utils as U
from bmc_detectron.tools import benchmark as B
from bmc_detectron.tools._ablation_report import (
    REFERENCE_NAME,
    REFERENCE_OPTS,
    markdown_tables,
    plot,
    summarize,
    write_csv,
    write_report,
)


class _TrainOnlyTrainer(BMCTrainer):
    """BMCTrainer without the end-of-training evaluation hook (evaluated and timed separately)."""

    def build_hooks(self):
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]


# ----------------------------------------------------------------------------- one run (worker)
def run_one(spec: Dict[str, object]) -> Dict[str, object]:
    """Train, evaluate and time one run described by ``spec``; writes and returns ``run.json``."""
    with U.torch_threads(spec.get("threads")):
        return _run_one(spec)


def _run_one(spec: Dict[str, object]) -> Dict[str, object]:
    U.register_datasets(spec["datasets"])
    cfg = build_cfg(spec["config_file"], spec["opts"])
    run_dir = Path(cfg.OUTPUT_DIR)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.dump())
    seed_all_rng(cfg.SEED)
    info = {k: spec[k] for k in ("name", "config_file", "seed", "command", "train_net_command")}
    info["threads"] = spec.get("threads")
    trainer = _TrainOnlyTrainer(cfg)
    # an interrupted run continues from its last checkpoint in OUTPUT_DIR (none: from scratch)
    trainer.resume_or_load(resume=True)
    t0 = time.perf_counter()
    trainer.train()
    info.update(status="trained", train_s=time.perf_counter() - t0)
    U.write_json(run_dir / "run.json", info)
    t0 = time.perf_counter()
    BMCTrainer.test(cfg, trainer.model)
    info["eval_s"] = time.perf_counter() - t0
    size = (int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST))
    inputs = B.latency_inputs([], int(spec["latency_images"]), size, cfg.INPUT.FORMAT)
    lat = B.measure_latency(trainer.model, inputs, warmup=2)
    info.update(B.count_parameters(trainer.model))
    info.update(
        status="ok", latency_ms=lat["median_ms"], latency_p90_ms=lat["p90_ms"],
        latency_input=list(size), gflops=B.count_gflops(trainer.model, size)["gflops"],
    )  # fmt: skip
    U.write_json(run_dir / "run.json", info)
    return info


def _worker_main(spec_path: str) -> int:
    setup_logger(name="detectron2")
    setup_logger(name="bmc_detectron")
    run_one(json.loads(Path(spec_path).read_text()))
    return 0


# ----------------------------------------------------------------------------- planning
def metrics_path(spec: Dict[str, object]) -> Path:
    """Where the evaluator writes the run's COCO metrics (its presence means 'done')."""
    return Path(spec["run_dir"]) / "inference" / spec["test_dataset"] / "coco_metrics.json"


def schedule_opts(config_file: str, opts: Sequence[str], max_iter: int | None) -> List[str]:
    """Solver keys of the first config (scaled to ``max_iter``) that every run receives."""
    s = build_cfg(config_file, opts).SOLVER
    iters, steps, warmup = s.MAX_ITER, list(s.STEPS), s.WARMUP_ITERS
    if max_iter:
        scaled = [round(x * max_iter / iters) for x in steps]
        # detectron2 needs strictly increasing steps, fewer than MAX_ITER
        steps = sorted({x for x in scaled if 0 < x < max_iter})
        warmup = min(round(warmup * max_iter / iters), max_iter)
        iters = max_iter
    return [
        "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str(tuple(steps)),
        "SOLVER.WARMUP_ITERS", str(warmup), "SOLVER.IMS_PER_BATCH", str(s.IMS_PER_BATCH),
        "SOLVER.BASE_LR", str(s.BASE_LR),
    ]  # fmt: skip


def plan_runs(args: argparse.Namespace) -> List[Dict[str, object]]:
    """One spec per (config, seed), reference included; a config that does not load gets
    ``error`` set instead of being run."""
    data = ["DATASETS.TRAIN", f"('{args.train_dataset}',)", "DATASETS.TEST"]
    data += [f"('{args.test_dataset}',)", "MODEL.RETINANET.NUM_CLASSES", str(args.num_classes)]
    stems = [Path(c).stem for c in args.configs]
    configs = [
        (s if stems.count(s) == 1 else f"{Path(c).parent.name}_{s}", c, [])
        for s, c in zip(stems, args.configs)
    ]
    if args.reference:
        configs.append((REFERENCE_NAME, args.configs[0], list(REFERENCE_OPTS)))
    sched: List[str] = []
    for _, cfg_file, _ in configs:  # the schedule of the first config that loads
        try:
            sched = schedule_opts(cfg_file, data + list(args.opts), args.max_iter)
            break
        except ConfigError:
            continue
    names = [
        n
        for n in (args.train_dataset, args.test_dataset)
        if MetadataCatalog.get(n).get("json_file")
    ]
    datasets = {n: U.dataset_registration(n) for n in names}  # re-registered by subprocesses
    specs = []
    for name, cfg_file, extra in configs:
        for seed in args.seeds:
            run_dir = Path(args.output).resolve() / "runs" / name / f"seed{seed}"
            opts = data + list(args.opts) + sched + extra
            opts += ["SEED", str(seed), "OUTPUT_DIR", str(run_dir)]
            spec = {
                "name": name, "config_file": cfg_file, "seed": seed, "opts": opts,
                "run_dir": str(run_dir), "test_dataset": args.test_dataset,
                "datasets": datasets, "latency_images": args.latency_images, "error": None,
                "schedule": sched, "threads": args.threads,
                "train_net_command": f"python train_net.py --config-file {cfg_file} "
                + U.shell_join(opts),
            }  # fmt: skip
            spec["command"] = "python -m bmc_detectron.tools.ablation --worker " + str(
                run_dir / "run_spec.json"
            )
            try:
                build_cfg(cfg_file, opts)
            except ConfigError as e:
                spec["error"] = f"ConfigError: {e}"
            specs.append(spec)
    return specs


# ----------------------------------------------------------------------------- execution
def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errs = [ln for ln in lines if "Error" in ln or "Exception" in ln]
    return (errs or lines or ["no output"])[-1][:500]


def execute(spec: Dict[str, object], in_process: bool, timeout: float | None) -> Dict:
    """Run one spec; returns its record with ``status`` 'ok' or 'failed' (never raises)."""
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    U.write_json(run_dir / "run_spec.json", spec)
    base = {k: spec[k] for k in ("name", "config_file", "seed", "command", "train_net_command")}
    t0 = time.perf_counter()
    if spec["error"]:
        info = {**base, "status": "failed", "error": spec["error"]}
    elif in_process:
        try:
            info = run_one(spec)
        except Exception as e:
            (run_dir / "log.txt").write_text(traceback.format_exc())
            info = {**base, "status": "failed", "error": f"{type(e).__name__}: {e}"[:500]}
        gc.collect()
    else:
        cmd = [sys.executable, "-m", "bmc_detectron.tools.ablation", "--worker"]
        cmd.append(str(run_dir / "run_spec.json"))
        with (run_dir / "log.txt").open("w") as log:
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
                rc = rc.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        if rc == 0:
            info = json.loads((run_dir / "run.json").read_text())
        else:
            err = f"timed out after {timeout} s" if rc == "timeout" else _last_error(Path(log.name))
            info = {**base, "status": "failed", "error": f"exit {rc}: {err}"}
    info["wall_s"] = time.perf_counter() - t0
    U.write_json(run_dir / "run.json", info)
    return info


def collect(spec: Dict[str, object]) -> Dict[str, object]:
    """The record of a finished run (``run.json`` plus its COCO metrics)."""
    run_json = Path(spec["run_dir"]) / "run.json"
    info = json.loads(run_json.read_text()) if run_json.is_file() else dict(spec)
    if metrics_path(spec).is_file():
        info["metrics"] = json.loads(metrics_path(spec).read_text()).get("bbox", {})
        info["status"] = "ok"
    elif not run_json.is_file():
        info["status"] = "not run"
    if "threads" not in info:  # runs made before the thread count was recorded
        spec_json = Path(spec["run_dir"]) / "run_spec.json"
        saved = json.loads(spec_json.read_text()) if spec_json.is_file() else {}
        info["threads"] = saved.get("threads")
    info["run_dir"] = spec["run_dir"]
    return info


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", required=True)
    p.add_argument("--reference", action="store_true", help="add detectron2's stock RetinaNet")
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
    p.add_argument("--report", help="also regenerate this markdown page (e.g. docs/RESULTS.md)")
    p.add_argument(
        "--extra", nargs="*", default=[],
        help="markdown from other runs (benchmark.md, assign_bench.md) to include in the report",
    )  # fmt: skip
    p.add_argument(
        "--no-run",
        action="store_true",
        help="train nothing: tabulate the runs that exist (the others as 'not run')",
    )
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
    p.add_argument("--notes", help="markdown file placed under the report's setup section")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="overrides KEY VALUE ... for all runs")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    bad = [x for x in args.parent if x.count("=") != 1]
    if bad:
        p.error(f"--parent takes CONFIG=PARENT pairs, got {bad}")
    args.parents = dict(x.split("=") for x in args.parent)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 when every run succeeded, 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return _worker_main(argv[1])
    args = parse_args(argv)
    setup_logger(name="bmc_detectron")
    t_start = time.perf_counter()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "commands.txt").open("a") as f:
        f.write("python -m bmc_detectron.tools.ablation " + U.shell_join(args.argv) + "\n")
    try:
        for name in (args.train_dataset, args.test_dataset):
            prepare_dataset(name)
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    records = []
    specs = plan_runs(args)
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
    classes = MetadataCatalog.get(args.test_dataset).get("thing_classes") or []
    summary = summarize(records, classes)
    write_csv(out / "ablation.csv", records, summary, classes)
    tables = markdown_tables(records, summary, classes, args.parents, args.full, args.target)
    (out / "ablation.md").write_text("# Ablation\n\n" + tables)
    plot(out, summary)
    if args.report:
        wall = time.perf_counter() - t_start
        sched = specs[0]["schedule"] if specs else []
        write_report(Path(args.report), out, tables, records, args, wall, sched)
    print(tables)
    return 0 if all(r.get("status") in ("ok", "not run") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
