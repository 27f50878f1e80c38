"""The main job on the embedded default data (``make demo``): detect, recognise, count.

    bmc demo [--data synth | marrow_real] [--output DIR] [--count DIR] ...

1. generates the synthetic marrow smears (once); with ``--data marrow_real`` (``make
   demo-real``, needs the shared PBC and BCCD data) the marrow-like fields of real PBC cells
   instead (:mod:`bmc_detectron.data.synthetic.marrow`, about 5 min once);
2. trains the class-agnostic detector (the full CPU model, all 11 classes merged into "cell")
   and evaluates it with COCOEvaluator;
3. trains the cell classifier on crops of the annotated cells and evaluates it;
4. counts the held-out fields (synthetic test; composite val) with both models (as ``count``
   does): differential, M:E ratio, report.html; or the fields of ``--count DIR`` (your own marrow
   photographs); the held-out fields are scored against their truth (``count-eval``: recall,
   precision, recall of touching and overlapping cells, the differential's error per case);
5. exports both models to ONNX for ``make serve``;

then prints where everything is. On a CPU with native bfloat16 (AVX-512 BF16 / AMX) both models
train with ``BMC.PRECISION.CPU_BF16`` and ``CHANNELS_LAST``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from detectron2.utils.logger import setup_logger

from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.counting import CounterSpec, prepare_count, summary_lines
from bmc_detectron.data.datasets import register_builtin_datasets
from bmc_detectron.data.paths import datasets_root
from bmc_detectron.data.synthetic.marrow import MARROW_SPLIT_SIZES
from bmc_detectron.engine import trainer_class
from bmc_detectron.engine.precision import cpu_supports_bf16
from bmc_detectron.pipeline.report_eval import score_lines
from bmc_detectron.pipeline.run import run_count
from bmc_detectron.pipeline.run_io import OutputExistsError
from bmc_detectron.pipeline.scale_plan import ScaleOptions
from bmc_detectron.structures.differential import Lineage
from bmc_detectron.utils.io import expand_inputs

REPO_ROOT = Path(__file__).resolve().parents[2]
DETECTOR_CONFIG = REPO_ROOT / "configs/cpu/agnostic/retinanet_R_18_full_agnostic_synth_cpu.yaml"
CLASSIFIER_CONFIG = REPO_ROOT / "configs/recognition/demo_classifier_synth.yaml"
#: per ``--data``: the detector and classifier configs, the held-out split and its dataset name
DATA = {
    "synth": (DETECTOR_CONFIG, CLASSIFIER_CONFIG, "test", "bmc_synth_test"),
    "marrow_real": (
        REPO_ROOT / "configs/cpu/agnostic/retinanet_R_18_full_agnostic_marrow_real_cpu.yaml",
        REPO_ROOT / "configs/recognition/cell_classifier_R_18_marrow_real_cpu.yaml",
        "val",
        "marrow_real_val",
    ),
}
#: fields per case when the held-out fields are scored (about 300 cells on marrow_real)
FIELDS_PER_CASE = 10


def ensure_synthetic(root: Path, num_train: int, num_test: int, size: int, seed: int) -> None:
    """Generate ``root/{train,test}`` and their COCO json unless they already exist."""
    from bmc_detectron.data.synthetic import generate_dataset

    for split, n, s in (("train", num_train, seed), ("test", num_test, seed + 1)):
        ann = root / "annotations" / f"{split}.json"
        if ann.is_file() and len(json.loads(ann.read_text())["images"]) == n:
            print(f"[demo] synthetic {split} split present: {ann}", flush=True)
            continue
        t0 = time.perf_counter()
        generate_dataset(root, split, n, seed=s, height=size, width=size)
        print(f"[demo] generated {n} synthetic {split} images in {time.perf_counter() - t0:.1f}s")


def ensure_marrow_real(root: Path, sizes: Dict[str, int], seed: int) -> None:
    """Generate ``root/{train,val}`` (the real-cell composites, ``sizes[split]`` fields each)
    unless they already exist."""
    from bmc_detectron.data.synthetic.marrow import generate_dataset

    for split, n in sizes.items():
        ann = root / "annotations" / f"{split}.json"
        if ann.is_file() and len(json.loads(ann.read_text())["images"]) == n:
            print(f"[demo] real-cell composites, {split} split present: {ann}", flush=True)
            continue
        t0 = time.perf_counter()
        generate_dataset(root, split, n, seed)
        print(
            f"[demo] composed {n} {split} fields of real cells in {time.perf_counter() - t0:.0f}s"
        )


def train_and_evaluate(config: Path, out: Path, opts: List[str]) -> Dict[str, Dict[str, float]]:
    """Train ``config`` into ``out`` (config.yaml + model_final.pth) and return its metrics,
    by test dataset."""
    cfg = build_cfg(str(config), ["OUTPUT_DIR", str(out), *opts])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.dump())
    trainer_cls = trainer_class(cfg)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # detectron2's EvalHook evaluates once training ends; evaluate here only if it did not
    results = getattr(trainer, "_last_eval_results", None) or trainer_cls.test(cfg, trainer.model)
    if len(cfg.DATASETS.TEST) == 1:  # detectron2 nests the results only for several datasets
        results = {cfg.DATASETS.TEST[0]: results}
    return {k: dict(v.get("bbox", v.get("classification", v))) for k, v in results.items()}


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=tuple(DATA), default="synth", help="what to train on")
    p.add_argument("--output", help="default: output/demo (synth), output/demo_real")
    p.add_argument("--count", help="count this folder of fields instead of the held-out ones")
    p.add_argument("--num-train", type=int, help="training images (240 synth, 400 marrow_real)")
    p.add_argument("--num-test", type=int, help="held-out images (40 synth, 100 marrow_real)")
    p.add_argument("--size", type=int, default=256, help="synthetic image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detector-iters", type=int, help="override the detector's SOLVER.MAX_ITER")
    p.add_argument("--classifier-iters", type=int, help="override the classifier's MAX_ITER")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    return p


def _schedule(iters: Optional[int]) -> List[str]:
    if not iters:
        return []
    steps = sorted({s for s in (int(iters * 0.75), int(iters * 0.9)) if 0 < s < iters})
    warmup = str(min(10, iters // 2))
    return [
        "SOLVER.MAX_ITER",
        str(iters),
        "SOLVER.STEPS",
        str(tuple(steps)),
        "SOLVER.WARMUP_ITERS",
        warmup,
    ]


def _precision_opts(choice: str) -> List[str]:
    bf16 = choice == "bf16" or (choice == "auto" and cpu_supports_bf16())
    print(f"[demo] precision: {'bfloat16 + channels-last' if bf16 else 'float32'}", flush=True)
    flag = str(bf16)
    return ["BMC.PRECISION.CPU_BF16", flag, "BMC.PRECISION.CHANNELS_LAST", flag]


def count_test_fields(spec: CounterSpec, folder: Path, output: Path) -> int:
    """``count`` on the test fields with its default settings (the automatic scale on); its exit
    status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        inputs = expand_inputs([str(folder)])
        if not inputs:
            raise ValueError(f"no input images in {folder}")
        counter, setup = prepare_count(spec, output, ScaleOptions(auto=True), overwrite=True)
    except (ConfigError, FileNotFoundError, ValueError, OutputExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lineage = Lineage.from_options()
    summary = run_count(
        counter, inputs, output, lineage=lineage, overwrite=True, progress=False, scale=setup
    )
    print("\n".join(summary_lines(summary, output)))
    return 1 if summary["skipped"] else 0


def export_checked(config: str, weights: str, output: Path) -> bool:
    """``export_onnx``: the model exported to ONNX and checked; False when that failed."""
    from bmc_detectron.deploy import export_onnx
    from bmc_detectron.deploy.verify import check_passed, describe_export

    try:
        meta = export_onnx(config, weights, str(output), [], verify=True)
    except ImportError as e:
        print(f"error: {e}: pip install -e '.[deploy]'", file=sys.stderr)
        return False
    except (ConfigError, OSError, ValueError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        print(f"error: {lines[0]}", file=sys.stderr)
        return False
    print(describe_export(meta, output))
    return check_passed(meta)


def prepare_data(args: argparse.Namespace) -> Path:
    """The training data of ``--data`` generated where missing; the held-out fields' folder."""
    if args.data == "marrow_real":
        root = datasets_root() / "marrow_real"
        sizes = {"train": args.num_train or MARROW_SPLIT_SIZES["train"]}
        sizes["val"] = args.num_test or MARROW_SPLIT_SIZES["val"]
        ensure_marrow_real(root, sizes, args.seed)
    else:
        root = datasets_root() / "bmc_synth"
        ensure_synthetic(root, args.num_train or 240, args.num_test or 40, args.size, args.seed)
    return root / DATA[args.data][2]


def score_count(report: Path, dataset: str) -> Optional[Dict]:
    """``count-eval`` of the held-out fields' report (None, with the reason, if it failed)."""
    from bmc_detectron.pipeline.report_eval import evaluate_report

    try:
        return evaluate_report(report, dataset, fields_per_case=FIELDS_PER_CASE)
    except (ValueError, OSError) as e:
        print(f"[demo] the count was not scored: {e}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    out = Path(args.output or ("output/demo" if args.data == "synth" else "output/demo_real"))
    out = out.resolve()
    register_builtin_datasets()  # honour $BMC_DATASETS as it is now
    t_start = time.perf_counter()
    held_out = prepare_data(args)
    det_config, cls_config, _, held_out_name = DATA[args.data]
    common = ["SEED", str(args.seed), *_precision_opts(args.precision)]
    times: Dict[str, float] = {}

    t0 = time.perf_counter()
    det = train_and_evaluate(det_config, out / "detector", common + _schedule(args.detector_iters))
    times["detector"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cls = train_and_evaluate(
        cls_config, out / "classifier", common + _schedule(args.classifier_iters)
    )
    times["classifier"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    files = ("config.yaml", "model_final.pth")
    models = [str(out / m / f) for m in ("detector", "classifier") for f in files]
    spec = CounterSpec(
        detector_config=models[0],
        detector_weights=models[1],
        classifier_config=models[2],
        classifier_weights=models[3],
    )
    fields = Path(args.count) if args.count else held_out
    status = count_test_fields(spec, fields, out / "count")
    times["count"] = time.perf_counter() - t0
    if status not in (0, 1):
        return status
    scored = None if args.count else score_count(out / "count", held_out_name)
    t0 = time.perf_counter()
    for name, (config, weights) in (("detector", models[:2]), ("classifier", models[2:])):
        if not export_checked(config, weights, out / "onnx" / f"{name}.onnx"):
            print(f"[demo] ONNX export of the {name} failed", file=sys.stderr)
            return 1
    times["onnx"] = time.perf_counter() - t0
    print_summary(out, det, cls, times, time.perf_counter() - t_start)
    if scored:
        print("\n".join(score_lines(scored)))
    return 0


def print_summary(
    out: Path,
    det: Dict[str, Dict[str, float]],
    cls: Dict[str, Dict[str, float]],
    times: Dict[str, float],
    total: float,
) -> None:
    summary = json.loads((out / "count" / "summary.json").read_text())
    minutes = {k: f"{v / 60:.1f} min" for k, v in times.items()}
    print("\n========== bmc-detectron demo: detect, recognise, count ==========")
    for name, m in det.items():
        det_line = f"AP {m['AP']:.1f}  AP50 {m['AP50']:.1f} on {name}  ({minutes['detector']})"
        print(f"detector (class-agnostic): {det_line}  {out / 'detector'}")
    for name, m in cls.items():
        cls_line = f"top-1 {100 * m['accuracy']:.1f} %  macro-F1 {100 * m['macro_f1']:.1f} %"
        cls_line += f" on {name}  ({minutes['classifier']})"
        print(f"cell classifier:           {cls_line}  {out / 'classifier'}")
    print(f"count report:              {out / 'count' / 'report.html'}  ({minutes['count']})")
    print(f"  {summary['counted']} cells counted, M:E ratio {summary['me']['ratio']}")
    print(f"ONNX models (make serve):  {out / 'onnx'}  ({minutes['onnx']})")
    print(f"total time:                {total / 60:.1f} min")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logger(name="detectron2")
    setup_logger(name="bmc_detectron")
    logging.getLogger("detectron2").setLevel(logging.INFO)
    try:
        return run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
