"""The GPU check: the R-50 reference and full model on a CUDA machine, in one budgeted command.

    python -m studies.gpu_check.gpu_check --output OUT [--work-dir DIR] [--budget-s 480] \
        [--configs REF.yaml FULL.yaml] [--dcn-config DCN.yaml] [--max-iter 1000] \
        [--min-iter 100] [--ims-per-batch 16] [--device cuda] [KEY VALUE ...]
    python -m studies.gpu_check.gpu_check --report-from OUT/gpu_check.json \
        --report docs/results/gpu_check/RESULTS_gpu.md

``studies/gpu_check/gpu_check.sh`` prepares and runs it on a lent machine
(GPU time is short: one call).
The steps, each saved to ``OUT/gpu_check.json`` as soon as it ends, so that a lease cut short
still returns what was measured (:mod:`studies.gpu_check.checks`,
:mod:`studies.gpu_check.runs`):

1. ``environment``: GPU, CUDA, cuDNN, torch / torchvision / detectron2 versions.
2. ``dcn``: a DCNv1 and a DCNv2 layer, output and gradients on every path (CUDA float32, CUDA
   fp16 autocast, the CPU path) against a float64 reference, and the kernels each path ran.
3. ``dcn_model``: the ops one training step of ``--dcn-config``'s detector runs.
4. ``step``: one training step of the full model in float32 and in AMP on one batch of the
   trainer's loader (median of ``--step-iters``); the AMP time sizes the schedule.
5. ``schedule``: the longest schedule (<= ``--max-iter``) that lets both models train, be
   evaluated and be timed within ``--budget-s`` (:func:`~.gpu_check.choose_max_iter`).
6. ``runs``: both models trained from scratch with AMP on ``--train-dataset``, evaluated on
   ``--test-dataset`` and timed at batch 1 (:mod:`studies.ablation.runs`).
7. ``cpu_agreement``: the full model's trained weights in float32 on the GPU and on the CPU:
   detection agreement on ``--agreement-images`` test images, then AP on the CPU when time is left.

Then ``OUT/gpu_check.md`` (:mod:`studies.gpu_check.report`), marked as measured on the GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Dict, Sequence

from detectron2.utils.logger import setup_logger

from bmc_detectron.config import ConfigError
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.utils.io import atomic_write_text
from studies.gpu_check import checks as gc
from studies.gpu_check import runs as gr
from studies.gpu_check.report import page

CONFIGS = ("configs/retinanet_R_50_FPN_1x.yaml", "configs/retinanet_R_50_full_1x.yaml")
DCN_CONFIG = "configs/retinanet_R_50_PAN_SE_DCN_1x.yaml"
COMMAND = "python -m studies.gpu_check.gpu_check "


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
    p.add_argument("--budget-s", type=float, default=480.0, help="seconds for all the steps")
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
    p.add_argument(
        "--report", help="also write the page here (e.g. docs/results/gpu_check/RESULTS_gpu.md)"
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every model")
    return p


def _setup(args: argparse.Namespace, runs_root: Path) -> gr.GpuCheckSetup:
    return gr.GpuCheckSetup(
        configs=list(args.configs),
        dcn_config=args.dcn_config,
        train_dataset=args.train_dataset,
        test_dataset=args.test_dataset,
        num_classes=args.num_classes,
        runs_root=runs_root,
        seed=args.seed,
        device=args.device,
        ims_per_batch=args.ims_per_batch,
        workers=args.workers,
        step_iters=args.step_iters,
        latency_images=args.latency_images,
        agreement_images=args.agreement_images,
        opts=list(args.opts),
    )


def _check(args: argparse.Namespace, argv: Sequence[str]) -> Dict[str, object]:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    setup = _setup(args, Path(args.work_dir or out))
    result: Dict[str, object] = {"command": COMMAND + shell_join(argv)}
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ck = gr.Checkpointed(out / "gpu_check.json", result, time.monotonic() + args.budget_s)
    ck.step("environment", gc.environment)
    ck.step("dcn", lambda: [gc.dcn_parity(setup.device, modulated=m) for m in (False, True)])
    if setup.dcn_config:
        ck.step("dcn_model", gr.dcn_model_ops, setup)
    steps = ck.step("step", gr.step_times, setup)
    amp = (steps or {}).get("precisions", {}).get("amp", {}) if isinstance(steps, dict) else {}
    step_s = amp.get("median_ms", float("nan")) / 1000.0
    if not step_s > 0:
        ck.step("schedule", lambda: {"error": "no step time measured: nothing trained"})
        return result
    reserve = 90.0  # the CPU agreement and the page
    iters = gc.choose_max_iter(
        ck.left() - reserve,
        step_s,
        len(setup.configs),
        requested=args.max_iter,
        minimum=args.min_iter,
        multiple=args.iter_multiple,
        overhead_s=args.run_overhead_s,
    )
    ck.step("schedule", lambda: {"iterations": iters, "step_s": step_s, "budget_left_s": ck.left()})
    if not iters:
        return result
    runs = ck.step("runs", gr.train_runs, setup, iters)
    full = runs[-1] if isinstance(runs, list) and runs else {}
    if full.get("run_dir"):
        ck.step("cpu_agreement", gr.cpu_agreement, setup, full, ck.left)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logger(name="detectron2")
    setup_logger(name="bmc_detectron")
    if args.report_from:
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
