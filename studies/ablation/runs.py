"""The training runs of an ablation: plan them (config x seed), run one, read their records.

A run lives in ``OUTPUT/runs/<config stem>/seed<S>/``: ``run_spec.json`` (what to run),
``log.txt``, detectron2's checkpoints and ``config.yaml``, ``run.json`` (status, timings, size,
cost) and ``inference/<test dataset>/coco_metrics.json``, whose presence means "done".
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

from detectron2.data import MetadataCatalog
from detectron2.engine import hooks
from detectron2.utils.env import seed_all_rng

from bmc_detectron.bench.inputs import default_input_size, latency_inputs
from bmc_detectron.bench.measure import Subject, measure_latency, torch_threads
from bmc_detectron.bench.model_cost import count_gflops, count_parameters
from bmc_detectron.bench.names import run_names
from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.data.datasets import dataset_registration, register_datasets
from bmc_detectron.engine import BMCTrainer
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic

WORKER = "python -m studies.ablation.ablation --worker"
RUN_KEYS = ("name", "config_file", "seed", "command", "train_net_command")


class TrainOnlyTrainer(BMCTrainer):
    """BMCTrainer without the end-of-training evaluation hook (evaluated and timed separately)."""

    def build_hooks(self):
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]


def write_json(path: Path, data: object) -> None:
    """Indented JSON, atomically (NaN as null)."""
    write_json_atomic(data, path, indent=2)


def run_one(spec: Dict[str, object]) -> Dict[str, object]:
    """Train (resuming from the run folder's last checkpoint), evaluate and time one run;
    writes and returns its ``run.json`` record."""
    with torch_threads(spec.get("threads")):
        register_datasets(spec["datasets"])
        cfg = build_cfg(spec["config_file"], spec["opts"])
        run_dir = Path(cfg.OUTPUT_DIR)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.dump())
        seed_all_rng(cfg.SEED)
        info = {k: spec[k] for k in RUN_KEYS}
        info["threads"] = spec.get("threads")
        trainer = TrainOnlyTrainer(cfg)
        # an interrupted run continues from its last checkpoint in OUTPUT_DIR (none: from scratch)
        trainer.resume_or_load(resume=True)
        t0 = time.perf_counter()
        trainer.train()
        info.update(status="trained", train_s=time.perf_counter() - t0)
        write_json(run_dir / "run.json", info)
        t0 = time.perf_counter()
        BMCTrainer.test(cfg, trainer.model)
        info["eval_s"] = time.perf_counter() - t0
        size = default_input_size(cfg)
        inputs = latency_inputs([], int(spec["latency_images"]), size, cfg.INPUT.FORMAT)
        subject = Subject(spec["name"], trainer.model, cfg)
        lat = measure_latency([subject], inputs, warmup=2)[subject.name]
        info.update(count_parameters(trainer.model))
        info.update(status="ok", latency_ms=lat["median_ms"], latency_p90_ms=lat["p90_ms"])
        info.update(latency_input=list(size), gflops=count_gflops(trainer.model, size)["gflops"])
        write_json(run_dir / "run.json", info)
        return info


def metrics_path(spec: Dict[str, object]) -> Path:
    """Where the evaluator writes the run's COCO metrics (its presence means 'done')."""
    return Path(spec["run_dir"]) / "inference" / spec["test_dataset"] / "coco_metrics.json"


def schedule_opts(config_file: str, opts: Sequence[str], max_iter: int | None) -> List[str]:
    """Solver keys of ``config_file`` (scaled to ``max_iter``) that every run receives."""
    s = build_cfg(config_file, opts).SOLVER
    iters, steps, warmup = s.MAX_ITER, list(s.STEPS), s.WARMUP_ITERS
    if max_iter:
        scaled = [round(x * max_iter / iters) for x in steps]
        # detectron2 needs strictly increasing steps, fewer than MAX_ITER
        steps = sorted({x for x in scaled if 0 < x < max_iter})
        warmup = min(round(warmup * max_iter / iters), max_iter)
        iters = max_iter
    return [
        *("SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str(tuple(steps))),
        *("SOLVER.WARMUP_ITERS", str(warmup), "SOLVER.IMS_PER_BATCH", str(s.IMS_PER_BATCH)),
        *("SOLVER.BASE_LR", str(s.BASE_LR)),
    ]


@dataclass(frozen=True)
class RunPlan:
    """What an ablation trains: every config x seed on one pair of datasets, into ``output``.

    ``max_iter`` scales the first config's schedule (None: as it is); ``latency_images`` are
    the batch-1 timing images of every run; ``threads`` is torch's thread count in every run
    (None: torch's default); ``opts`` are KEY VALUE overrides for every run.
    """

    configs: Sequence[str]
    train_dataset: str
    test_dataset: str
    num_classes: int
    seeds: Sequence[int] = (0,)
    output: str = "output/ablation"
    max_iter: int | None = None
    latency_images: int = 20
    threads: int | None = None
    opts: Sequence[str] = ()


def plan_runs(plan: RunPlan) -> List[Dict[str, object]]:
    """One spec per (config, seed) of ``plan``; a config that does not load gets ``error`` set
    instead of running."""
    data = ["DATASETS.TRAIN", f"('{plan.train_dataset}',)", "DATASETS.TEST"]
    data += [f"('{plan.test_dataset}',)", "MODEL.RETINANET.NUM_CLASSES", str(plan.num_classes)]
    # the two-stage detectors of the comparison read their class count from the ROI heads
    data += ["MODEL.ROI_HEADS.NUM_CLASSES", str(plan.num_classes)]
    configs = run_names(plan.configs)
    sched: List[str] = []
    for _, cfg_file in configs:  # the schedule of the first config that loads
        try:
            sched = schedule_opts(cfg_file, data + list(plan.opts), plan.max_iter)
            break
        except ConfigError:
            continue
    names = [n for n in (plan.train_dataset, plan.test_dataset) if _registered_json(n)]
    datasets = {n: dataset_registration(n) for n in names}  # re-registered by subprocesses
    specs = []
    for name, cfg_file in configs:
        for seed in plan.seeds:
            run_dir = Path(plan.output).resolve() / "runs" / name / f"seed{seed}"
            opts = data + list(plan.opts) + sched + ["SEED", str(seed), "OUTPUT_DIR", str(run_dir)]
            train_cmd = f"python train_net.py --config-file {cfg_file} " + shell_join(opts)
            spec = {"name": name, "config_file": cfg_file, "seed": seed, "opts": opts}
            spec.update(run_dir=str(run_dir), test_dataset=plan.test_dataset, datasets=datasets)
            spec.update(latency_images=plan.latency_images, error=None, schedule=sched)
            spec.update(threads=plan.threads, train_net_command=train_cmd)
            spec["command"] = f"{WORKER} {run_dir / 'run_spec.json'}"
            try:
                build_cfg(cfg_file, opts)
            except ConfigError as e:
                spec["error"] = f"ConfigError: {e}"
            specs.append(spec)
    return specs


def _registered_json(name: str) -> bool:
    return bool(MetadataCatalog.get(name).get("json_file"))


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errs = [ln for ln in lines if "Error" in ln or "Exception" in ln]
    return (errs or lines or ["no output"])[-1][:500]


def _run_subprocess(run_dir: Path, timeout: float | None) -> int | str:
    cmd = [sys.executable, "-m", "studies.ablation.ablation", "--worker"]
    cmd.append(str(run_dir / "run_spec.json"))
    with (run_dir / "log.txt").open("w") as log:
        try:
            return subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return "timeout"


def execute(spec: Dict[str, object], in_process: bool, timeout: float | None) -> Dict:
    """Run one spec (in a subprocess unless ``in_process``); returns its record with
    ``status`` 'ok' or 'failed' (never raises)."""
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "run_spec.json", spec)
    base = {k: spec[k] for k in RUN_KEYS}
    t0 = time.perf_counter()
    if spec["error"]:
        info = {**base, "status": "failed", "error": spec["error"]}
    elif in_process:
        try:
            info = run_one(spec)
        except Exception as e:
            atomic_write_text(run_dir / "log.txt", traceback.format_exc())
            info = {**base, "status": "failed", "error": f"{type(e).__name__}: {e}"[:500]}
        gc.collect()
    else:
        rc = _run_subprocess(run_dir, timeout)
        if rc == 0:
            info = json.loads((run_dir / "run.json").read_text())
        else:
            err = (
                f"timed out after {timeout} s"
                if rc == "timeout"
                else _last_error(run_dir / "log.txt")
            )
            info = {**base, "status": "failed", "error": f"exit {rc}: {err}"}
    info["wall_s"] = time.perf_counter() - t0
    write_json(run_dir / "run.json", info)
    return info


def collect(spec: Dict[str, object]) -> Dict[str, object]:
    """The record of a run (``run.json`` plus its COCO metrics; 'not run' without either)."""
    run_dir = Path(spec["run_dir"])
    run_json = run_dir / "run.json"
    info = json.loads(run_json.read_text()) if run_json.is_file() else dict(spec)
    if metrics_path(spec).is_file():
        info["metrics"] = json.loads(metrics_path(spec).read_text()).get("bbox", {})
        info["status"] = "ok"
    elif not run_json.is_file():
        info["status"] = "not run"
    if "threads" not in info:  # runs made before the thread count was recorded
        spec_json = run_dir / "run_spec.json"
        saved = json.loads(spec_json.read_text()) if spec_json.is_file() else {}
        info["threads"] = saved.get("threads")
    info["run_dir"] = spec["run_dir"]
    return info
