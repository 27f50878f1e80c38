"""The main job on the embedded default data (``make demo``).

Generates the synthetic marrow smear dataset (once), trains the CPU-sized detector for a few
minutes, evaluates it with COCOEvaluator and draws detections on test images with detectron2's
Visualizer, then prints where everything is.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from detectron2.utils.logger import setup_logger

from ..config import ConfigError, build_cfg
from ..data.paths import datasets_root
from ..engine import BMCTrainer
from .demo import run_demo

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "cpu" / "demo_synth.yaml"


def ensure_synthetic(root: Path, num_train: int, num_test: int, size: int, seed: int) -> None:
    """Generate ``root/{train,test}`` and their COCO json unless they already exist."""
    from ..data.synthetic import generate_dataset

    for split, n, s in (("train", num_train, seed), ("test", num_test, seed + 1)):
        ann = root / "annotations" / f"{split}.json"
        if ann.is_file() and len(json.loads(ann.read_text())["images"]) == n:
            print(f"[demo] synthetic {split} split present: {ann}", flush=True)
            continue
        t0 = time.perf_counter()
        generate_dataset(root, split, n, seed=s, height=size, width=size)
        print(
            f"[demo] generated {n} synthetic {split} images in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default=str(DEFAULT_CONFIG))
    p.add_argument("--output", default="output/demo")
    p.add_argument("--num-train", type=int, default=240)
    p.add_argument("--num-test", type=int, default=40)
    p.add_argument("--size", type=int, default=256, help="synthetic image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-vis", type=int, default=8, help="test images to draw")
    p.add_argument("--confidence-threshold", type=float, default=0.4, help="for the drawings")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logger(name="detectron2")
    setup_logger(name="bmc_detectron")
    logging.getLogger("detectron2").setLevel(logging.INFO)
    out = Path(args.output).resolve()
    synth_root = datasets_root() / "bmc_synth"
    t_start = time.perf_counter()
    ensure_synthetic(synth_root, args.num_train, args.num_test, args.size, args.seed)
    try:
        cfg = build_cfg(
            args.config_file,
            ["OUTPUT_DIR", str(out), "SEED", str(args.seed), *args.opts],
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.dump())

    t0 = time.perf_counter()
    trainer = BMCTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    t_train = time.perf_counter() - t0
    # detectron2's EvalHook evaluates once training ends; evaluate here only if it did not
    results = getattr(trainer, "_last_eval_results", None) or BMCTrainer.test(cfg, trainer.model)
    bbox = results.get("bbox", results)

    test_dir = synth_root / "test"
    images = sorted(test_dir.glob("*.png"))[: args.num_vis]
    vis_cfg = cfg.clone()
    vis_cfg.defrost()
    vis_cfg.MODEL.WEIGHTS = str(out / "model_final.pth")
    vis_cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.confidence_threshold
    vis_cfg.freeze()
    run_demo(vis_cfg, images, out / "vis")
    metrics = out / "inference" / cfg.DATASETS.TEST[0] / cfg.BMC.EVAL.METRICS_FILE
    print("\n========== bmc-detectron demo ==========")
    print(f"config:        {args.config_file}")
    print(f"training:      {cfg.SOLVER.MAX_ITER} iterations in {t_train / 60:.1f} min")
    print(f"COCO AP:       {bbox['AP']:.1f}   AP50: {bbox['AP50']:.1f}   AP75: {bbox['AP75']:.1f}")
    print(f"metrics:       {metrics}")
    print(f"model:         {out / 'model_final.pth'}")
    print(f"drawings:      {out / 'vis'}  ({len(images)} test images + detections.json)")
    print(f"total time:    {(time.perf_counter() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
