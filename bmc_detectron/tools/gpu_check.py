"""The GPU check: the R-50 reference and full model on a CUDA machine, in one budgeted command.

    python -m bmc_detectron.tools.gpu_check --output OUT [--work-dir DIR] [--budget-s 420] \
        [--configs REF.yaml FULL.yaml] [--dcn-config DCN.yaml] [--max-iter 1000] \
        [--min-iter 100] [--ims-per-batch 16] [--device cuda] [KEY VALUE ...]
    python -m bmc_detectron.tools.gpu_check --report-from OUT/gpu_check.json \
        --report docs/RESULTS_gpu.md

``scripts/gpu_check.sh`` prepares and runs it on a lent machine (GPU time is short: one call).
The steps, each saved to ``OUT/gpu_check.json`` as soon as it ends, so that a lease cut short
still returns what was measured (:mod:`bmc_detectron.bench.gpu_check`):

1. ``environment``: GPU, CUDA, cuDNN, torch / torchvision / detectron2 versions.
2. ``dcn``: a DCNv1 and a DCNv2 layer, output and gradients on every path (CUDA float32, CUDA
   fp16 autocast, the CPU path) against a float64 reference, and the kernels each path ran.
3. ``dcn_model``: the ops one training step of ``--dcn-config``'s detector runs.
4. ``step``: one training step of the full model in float32 and in AMP on one batch of the
   trainer's loader (median of ``--step-iters``); the AMP time sizes the schedule.
5. ``schedule``: the longest schedule (<= ``--max-iter``) that lets both models train, be
   evaluated and be timed within ``--budget-s`` (:func:`~.gpu_check.choose_max_iter`).
6. ``runs``: both models trained from scratch with AMP on ``--train-dataset``, evaluated on
   ``--test-dataset`` and timed at batch 1 (:mod:`bmc_detectron.bench.runs`).
7. ``cpu_agreement``: the full model's trained weights in float32 on the GPU and on the CPU:
   detection agreement on ``--agreement-images`` test images, then AP on the CPU when time is left.

Then ``OUT/gpu_check.md`` (:mod:`bmc_detectron.bench.gpu_report`), marked as measured on the GPU.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from bmc_detectron.bench import gpu_check as gc
from bmc_detectron.bench.gpu_report import page
from bmc_detectron.bench.measure import build_subject, evaluate_coco
from bmc_detectron.bench.precision import loader_batches
from bmc_detectron.bench.precision_runs import read_run
from bmc_detectron.bench.report import shell_join
from bmc_detectron.bench.runs import execute, plan_runs
from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic

CONFIGS = ("configs/retinanet_R_50_FPN_1x.yaml", "configs/retinanet_R_50_full_1x.yaml")
DCN_CONFIG = "configs/retinanet_R_50_PAN_SE_DCN_1x.yaml"
COMMAND = "python -m bmc_detectron.tools.gpu_check "


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", help="folder of gpu_check.json / .md (small: what comes back)")
    p.add_argument("--work-dir", help="where runs/ (checkpoints) go; default OUTPUT")
    p.add_argument("--configs", nargs=2, default=list(CONFIGS), metavar=("REFERENCE", "FULL"))
    p.add_argument("--dcn-config", default=DCN_CONFIG, help="'' skips the step")
    p.add_argument("--train-dataset", default="bccd_trainval")
    p.add_argument("--test-dataset", default="bccd_test")
    p.add_argument("--num-classes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=420.0, help="seconds for all the steps")
    p.add_argument("--max-iter", type=int, default=1000, help="longest schedule")
    p.add_argument("--min-iter", type=int, default=100, help="shorter than this: skip training")
    p.add_argument("--iter-multiple", type=int, default=50, help="schedule length rounds to it")
    p.add_argument("--run-overhead-s", type=float, default=60.0, help="build + eval + timing")
    p.add_argument("--ims-per-batch", type=int, default=16, help="BASE_LR scales with it")
    p.add_argument("--workers", type=int, default=8, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--step-iters", type=int, default=5, help="timed training steps per precision")
    p.add_argument("--latency-images", type=int, default=20)
    p.add_argument("--agreement-images", type=int, default=8)
    p.add_argument("--report-from", help="render the page from this gpu_check.json only")
    p.add_argument("--report", help="also write the page here (e.g. docs/RESULTS_gpu.md)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every model")
    return p


class Checkpointed:
    """The result dict, saved to ``path`` after every step; a step's exception is recorded
    under its name and the next step goes on."""

    def __init__(self, path: Path, result: Dict[str, object], deadline: float):
        self.path, self.result, self.deadline = path, result, deadline

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def step(self, name: str, fn, *args, **kwargs) -> object:
        t0 = time.monotonic()
        print(f"[gpu_check] {name} ({self.left():.0f} s left)", flush=True)
        try:
            value = fn(*args, **kwargs)
        except Exception as e:  # recorded, the check goes on (a lease is short)
            value = {"error": f"{type(e).__name__}: {e}"[:1000]}
            print(f"[gpu_check] {name} failed: {value['error']}", flush=True)
        self.result[name] = value
        self.result.setdefault("step_seconds", {})[name] = round(time.monotonic() - t0, 1)
        write_json_atomic(self.result, self.path, indent=2)
        return value


def model_opts(args: argparse.Namespace) -> List[str]:
    """Overrides every model gets: device, data, AMP, batch (linear LR), workers, no eval hook."""
    lr = 0.01 * args.ims_per_batch / 16
    return [
        *("MODEL.DEVICE", args.device, "SOLVER.AMP.ENABLED", "True", "SEED", str(args.seed)),
        *("DATASETS.TRAIN", f"('{args.train_dataset}',)"),
        *("DATASETS.TEST", f"('{args.test_dataset}',)"),
        *("MODEL.RETINANET.NUM_CLASSES", str(args.num_classes)),
        *("SOLVER.IMS_PER_BATCH", str(args.ims_per_batch), "SOLVER.BASE_LR", str(lr)),
        *("DATALOADER.NUM_WORKERS", str(args.workers), "TEST.EVAL_PERIOD", "0"),
        *args.opts,
    ]


def schedule(iters: int) -> List[str]:
    """MAX_ITER ``iters``, LR drops at 75 % and 90 %, warm-up a fifth (at most 200)."""
    steps = tuple(sorted({round(0.75 * iters), round(0.9 * iters)} - {0, iters}))
    return [
        *("SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str(steps)),
        *("SOLVER.WARMUP_ITERS", str(min(200, iters // 5))),
        *("SOLVER.CHECKPOINT_PERIOD", str(iters + 1)),
    ]


def step_times(args: argparse.Namespace) -> Dict[str, object]:
    """Training-step time of the full model in float32 and in AMP on one loader batch."""
    amp = build_cfg(args.configs[1], model_opts(args) + schedule(1000))
    fp32 = build_cfg(
        args.configs[1], [*model_opts(args), *schedule(1000), "SOLVER.AMP.ENABLED", "False"]
    )
    batch = next(loader_batches(amp))
    rec = gc.train_step_times({"float32": fp32, "amp": amp}, batch, args.step_iters)
    for r in rec.values():
        r.pop("seconds", None)
    return {"config": args.configs[1], "batch_size": len(batch), "precisions": rec}


def train_runs(args: argparse.Namespace, iters: int) -> List[Dict[str, object]]:
    """Both models trained, evaluated and timed (in this process); one record per model."""
    ns = argparse.Namespace(
        configs=list(args.configs),
        train_dataset=args.train_dataset,
        seeds=[args.seed],
        test_dataset=args.test_dataset,
        num_classes=args.num_classes,
        max_iter=None,
        output=str(args.runs_root),
        latency_images=args.latency_images,
        threads=None,
        opts=model_opts(args) + schedule(iters),
    )
    records = []
    for spec in plan_runs(ns):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        info = execute(spec, in_process=True, timeout=None)
        rec = {k: info.get(k) for k in ("name", "config_file", "status", "error", "train_s")}
        rec.update({k: info.get(k) for k in ("latency_ms", "latency_p90_ms", "gflops", "params_m")})
        rec.update(iterations=iters, train_net_command=spec["train_net_command"])
        if torch.cuda.is_available():
            rec["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if info.get("status") == "ok":
            run = read_run(
                spec["name"], Path(spec["run_dir"]), args.test_dataset, warmup=min(20, iters // 5)
            )
            rec.update(
                metrics=run.metrics,
                final_loss=run.final_loss,
                sec_per_iter=run.sec_per_iter,
                run_dir=str(run.run_dir),
            )
        records.append(rec)
    return records


def cpu_agreement(args: argparse.Namespace, run: Dict[str, object], left) -> Dict[str, object]:
    """The full model's final weights in float32 on ``--device`` and on the CPU: detection
    agreement on a few test images, then the CPU's AP on the test set when ``left()`` allows."""
    weights = Path(run["run_dir"]) / "model_final.pth"
    opts = model_opts(args) + ["MODEL.WEIGHTS", str(weights), "SOLVER.AMP.ENABLED", "False"]
    cfgs = {
        dev: build_cfg(args.configs[1], [*opts, "MODEL.DEVICE", dev])
        for dev in (args.device, "cpu")
    }
    models = {dev: build_subject(cfg, dev).model.eval() for dev, cfg in cfgs.items()}
    prepare_dataset(args.test_dataset)
    records = DatasetCatalog.get(args.test_dataset)[: args.agreement_images]
    from detectron2.data import DatasetMapper

    mapper = DatasetMapper(cfgs["cpu"], is_train=False)
    rows = []
    t_cpu = 0.0
    with torch.no_grad():
        for rec in records:
            inp = mapper(copy.deepcopy(rec))
            out = models[args.device]([inp])[0]["instances"]
            t0 = time.perf_counter()
            ref = models["cpu"]([inp])[0]["instances"]
            t_cpu += time.perf_counter() - t0
            rows.append(gc.detection_agreement(out, ref))
    result: Dict[str, object] = {"images": len(rows), "per_image": rows}
    result["reproduced"] = min(r["reproduced"] for r in rows) if rows else float("nan")
    result["max_score_diff"] = max(r["max_score_diff"] for r in rows) if rows else float("nan")
    need = t_cpu / max(len(rows), 1) * len(DatasetCatalog.get(args.test_dataset)) + 30
    if left() > need:
        out_dir = Path(args.runs_root) / "cpu_eval"
        result["cpu_metrics"] = evaluate_coco(
            cfgs["cpu"], models["cpu"], args.test_dataset, out_dir
        )
        result["device_metrics"] = run.get("metrics")
    else:
        result["cpu_metrics"] = f"skipped: {left():.0f} s left, about {need:.0f} s needed"
    return result


def _check(args: argparse.Namespace, argv: Sequence[str]) -> Dict[str, object]:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    args.runs_root = Path(args.work_dir or out)
    result: Dict[str, object] = {"command": COMMAND + shell_join(argv)}
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ck = Checkpointed(out / "gpu_check.json", result, time.monotonic() + args.budget_s)
    ck.step("environment", gc.environment)
    ck.step("dcn", lambda: [gc.dcn_parity(args.device, modulated=m) for m in (False, True)])
    if args.dcn_config:
        ck.step("dcn_model", _dcn_model_ops, args)
    steps = ck.step("step", step_times, args)
    amp = (steps or {}).get("precisions", {}).get("amp", {}) if isinstance(steps, dict) else {}
    step_s = amp.get("median_ms", float("nan")) / 1000.0
    if not step_s > 0:
        ck.step("schedule", lambda: {"error": "no step time measured: nothing trained"})
        return result
    reserve = 90.0  # the CPU agreement and the page
    iters = gc.choose_max_iter(
        ck.left() - reserve,
        step_s,
        len(args.configs),
        requested=args.max_iter,
        minimum=args.min_iter,
        multiple=args.iter_multiple,
        overhead_s=args.run_overhead_s,
    )
    ck.step("schedule", lambda: {"iterations": iters, "step_s": step_s, "budget_left_s": ck.left()})
    if not iters:
        return result
    runs = ck.step("runs", train_runs, args, iters)
    full = runs[-1] if isinstance(runs, list) and runs else {}
    if full.get("run_dir"):
        ck.step("cpu_agreement", cpu_agreement, args, full, ck.left)
    return result


def _dcn_model_ops(args: argparse.Namespace) -> Dict[str, object]:
    cfg = build_cfg(args.dcn_config, model_opts(args) + schedule(1000))
    batch = next(loader_batches(cfg))[:2]
    return {"config": args.dcn_config, "ops": gc.model_ops(cfg, batch)}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logger(name="detectron2")
    setup_logger(name="bmc_detectron")
    if args.report_from:
        import json

        result = json.loads(Path(args.report_from).read_text())
    else:
        if not args.output:
            build_parser().error("--output is needed to run the check")
        try:
            result = _check(args, argv)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        atomic_write_text(Path(args.output) / "gpu_check.md", page(result))
    if args.report:
        atomic_write_text(Path(args.report), page(result))
        print(f"[gpu_check] wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
