"""The runs of the GPU check (:mod:`studies.gpu_check.gpu_check`): overrides, schedule, float32
vs AMP training steps, the trained models and their CPU agreement; each takes the check's
:class:`GpuCheckSetup`, and :class:`Checkpointed` saves the result after every step."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch
from detectron2.data import DatasetCatalog, DatasetMapper

from bmc_detectron.bench.measure import build_subject, evaluate_coco
from bmc_detectron.config import build_cfg
from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.utils.io import write_json_atomic
from studies.ablation.runs import RunPlan, execute, plan_runs
from studies.gpu_check import checks as gc
from studies.precision.precision import loader_batches
from studies.precision.runs_report import read_run


@dataclass(frozen=True)
class GpuCheckSetup:
    """What the check's models are and where they run.

    ``configs``: the reference's and the full model's config (trained, in that order; the full
    model's also times steps and is compared with the CPU); ``dcn_config``: the detector whose
    deformable ops are listed; data: ``train_dataset``, ``test_dataset``, ``num_classes``;
    ``ims_per_batch`` (BASE_LR scales with it), ``workers`` (loader), ``step_iters`` (timed
    training steps per precision), ``latency_images`` (batch-1 timing), ``agreement_images``
    (GPU vs CPU); ``runs_root``: where ``runs/`` and ``cpu_eval/`` go; ``opts``: KEY VALUE
    overrides for every model.
    """

    configs: Sequence[str]
    dcn_config: str
    train_dataset: str
    test_dataset: str
    num_classes: int
    runs_root: Path
    seed: int = 0
    device: str = "cuda"
    ims_per_batch: int = 16
    workers: int = 8
    step_iters: int = 5
    latency_images: int = 20
    agreement_images: int = 8
    opts: Sequence[str] = ()


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


def model_opts(setup: GpuCheckSetup) -> List[str]:
    """Overrides every model gets: device, data, AMP, batch (linear LR), workers, no eval hook."""
    lr = 0.01 * setup.ims_per_batch / 16
    return [
        *("MODEL.DEVICE", setup.device, "SOLVER.AMP.ENABLED", "True", "SEED", str(setup.seed)),
        *("DATASETS.TRAIN", f"('{setup.train_dataset}',)"),
        *("DATASETS.TEST", f"('{setup.test_dataset}',)"),
        *("MODEL.RETINANET.NUM_CLASSES", str(setup.num_classes)),
        *("SOLVER.IMS_PER_BATCH", str(setup.ims_per_batch), "SOLVER.BASE_LR", str(lr)),
        *("DATALOADER.NUM_WORKERS", str(setup.workers), "TEST.EVAL_PERIOD", "0"),
        *setup.opts,
    ]


def schedule(iters: int) -> List[str]:
    """MAX_ITER ``iters``, LR drops at 75 % and 90 %, warm-up a fifth (at most 200)."""
    steps = tuple(sorted({round(0.75 * iters), round(0.9 * iters)} - {0, iters}))
    return [
        *("SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str(steps)),
        *("SOLVER.WARMUP_ITERS", str(min(200, iters // 5))),
        *("SOLVER.CHECKPOINT_PERIOD", str(iters + 1)),
    ]


def step_times(setup: GpuCheckSetup) -> Dict[str, object]:
    """Training-step time of the full model in float32 and in AMP on one loader batch."""
    amp = build_cfg(setup.configs[1], model_opts(setup) + schedule(1000))
    fp32 = build_cfg(
        setup.configs[1], [*model_opts(setup), *schedule(1000), "SOLVER.AMP.ENABLED", "False"]
    )
    batch = next(loader_batches(amp))
    rec = gc.train_step_times({"float32": fp32, "amp": amp}, batch, setup.step_iters)
    for r in rec.values():
        r.pop("seconds", None)
    return {"config": setup.configs[1], "batch_size": len(batch), "precisions": rec}


def train_runs(setup: GpuCheckSetup, iters: int) -> List[Dict[str, object]]:
    """Both models trained, evaluated and timed (in this process); one record per model."""
    plan = RunPlan(
        configs=list(setup.configs),
        train_dataset=setup.train_dataset,
        seeds=[setup.seed],
        test_dataset=setup.test_dataset,
        num_classes=setup.num_classes,
        max_iter=None,
        output=str(setup.runs_root),
        latency_images=setup.latency_images,
        threads=None,
        opts=model_opts(setup) + schedule(iters),
    )
    records = []
    for spec in plan_runs(plan):
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
                spec["name"], Path(spec["run_dir"]), setup.test_dataset, warmup=min(20, iters // 5)
            )
            rec.update(
                metrics=run.metrics,
                final_loss=run.final_loss,
                sec_per_iter=run.sec_per_iter,
                run_dir=str(run.run_dir),
            )
        records.append(rec)
    return records


def cpu_agreement(
    setup: GpuCheckSetup, run: Dict[str, object], left: Callable[[], float]
) -> Dict[str, object]:
    """The full model's final weights in float32 on ``setup.device`` and on the CPU: detection
    agreement on a few test images, then the CPU's AP on the test set when ``left()`` allows."""
    weights = Path(run["run_dir"]) / "model_final.pth"
    opts = model_opts(setup) + ["MODEL.WEIGHTS", str(weights), "SOLVER.AMP.ENABLED", "False"]
    cfgs = {
        dev: build_cfg(setup.configs[1], [*opts, "MODEL.DEVICE", dev])
        for dev in (setup.device, "cpu")
    }
    models = {dev: build_subject(cfg, dev).model.eval() for dev, cfg in cfgs.items()}
    prepare_dataset(setup.test_dataset)
    dataset = DatasetCatalog.get(setup.test_dataset)
    records = dataset[: setup.agreement_images]
    mapper = DatasetMapper(cfgs["cpu"], is_train=False)
    rows = []
    t_cpu = 0.0
    with torch.no_grad():
        for rec in records:
            inp = mapper(copy.deepcopy(rec))
            out = models[setup.device]([inp])[0]["instances"]
            t0 = time.perf_counter()
            ref = models["cpu"]([inp])[0]["instances"]
            t_cpu += time.perf_counter() - t0
            rows.append(gc.detection_agreement(out, ref))
    result: Dict[str, object] = {"images": len(rows), "per_image": rows}
    result["reproduced"] = min(r["reproduced"] for r in rows) if rows else float("nan")
    result["max_score_diff"] = max(r["max_score_diff"] for r in rows) if rows else float("nan")
    need = t_cpu / max(len(rows), 1) * len(dataset) + 30
    if left() > need:
        out_dir = Path(setup.runs_root) / "cpu_eval"
        result["cpu_metrics"] = evaluate_coco(
            cfgs["cpu"], models["cpu"], setup.test_dataset, out_dir
        )
        result["device_metrics"] = run.get("metrics")
    else:
        result["cpu_metrics"] = f"skipped: {left():.0f} s left, about {need:.0f} s needed"
    return result


def dcn_model_ops(setup: GpuCheckSetup) -> Dict[str, object]:
    """The deformable ops and kernels one training step of ``setup.dcn_config``'s detector runs
    (two images of the trainer's loader)."""
    cfg = build_cfg(setup.dcn_config, model_opts(setup) + schedule(1000))
    batch = next(loader_batches(cfg))[:2]
    return {"config": setup.dcn_config, "ops": gc.model_ops(cfg, batch)}
