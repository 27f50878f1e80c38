"""Run a trained detector on images and draw its detections with detectron2's Visualizer.

    bmc visualize --config-file CONFIG --input 'slides/*.png' \
        --output out/ --score-threshold 0.5 MODEL.WEIGHTS output/model_final.pth

Writes one annotated image per input and ``detections.json`` (boxes XYXY in input pixels).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import UnidentifiedImageError

from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.data.classes import marrow_metadata
from bmc_detectron.utils.io import expand_inputs, write_json_atomic, write_png_atomic

logger = logging.getLogger("bmc_detectron.demo")


def _metadata(cfg):
    for name in cfg.DATASETS.TEST:
        meta = MetadataCatalog.get(name)
        if meta.get("thing_classes"):
            return meta
    meta = MetadataCatalog.get("__bmc_demo_marrow")
    if not meta.get("thing_classes"):
        meta.set(**marrow_metadata())
    return meta


def detections_to_json(instances, class_names: Sequence[str]) -> List[Dict]:
    """Per-detection dicts: ``bbox`` XYXY, ``score``, ``category_id`` (0-based), ``category``."""
    boxes = instances.pred_boxes.tensor.numpy().tolist()
    scores = instances.scores.numpy().tolist()
    classes = instances.pred_classes.numpy().tolist()
    return [
        {
            "bbox": [round(v, 2) for v in b],
            "score": round(s, 4),
            "category_id": c,
            "category": class_names[c] if c < len(class_names) else str(c),
        }
        for b, s, c in zip(boxes, scores, classes)
    ]


def draw_detections(
    cfg, inputs: Sequence[Path], output: Path, *, predictor: Optional[DefaultPredictor] = None
) -> Dict[str, object]:
    """Predict, draw and save; unreadable images are reported and skipped.

    Returns the ``detections.json`` payload: ``{"images": [...], "failed": [...]}``.
    """
    predictor = predictor or DefaultPredictor(cfg)
    meta = _metadata(cfg)
    output.mkdir(parents=True, exist_ok=True)
    results, failed = [], []
    for path in inputs:
        try:
            image = read_image(str(path), format="BGR")
        except (OSError, UnidentifiedImageError, ValueError) as e:
            logger.error("%s: cannot read image (%s); skipped", path, e)
            failed.append({"file": str(path), "error": str(e)})
            continue
        instances = predictor(image)["instances"].to("cpu")
        # SEGMENTATION mode draws each class in its fixed metadata colour (thing_colors)
        vis = Visualizer(image[:, :, ::-1], meta, scale=1.0, instance_mode=ColorMode.SEGMENTATION)
        drawn = vis.draw_instance_predictions(instances).get_image()
        out_file = output / (path.stem + "_det.png")
        write_png_atomic(out_file, drawn)
        results.append(
            {
                "file": str(path),
                "visualization": str(out_file),
                "height": image.shape[0],
                "width": image.shape[1],
                "detections": detections_to_json(instances, meta.thing_classes),
            }
        )
    payload = {"images": results, "failed": failed}
    write_json_atomic(payload, output / "detections.json", indent=1)
    return payload


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, help="model config (yaml)")
    parser.add_argument("--input", nargs="+", required=True, help="images, folders or globs")
    parser.add_argument("--output", required=True, help="folder for drawings and detections.json")
    parser.add_argument(
        "--score-threshold", type=float, default=0.5, help="detections scoring below: not drawn"
    )
    parser.add_argument(  # the old spelling, still read
        "--confidence-threshold",
        dest="score_threshold",
        type=float,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    opts = list(args.opts) + [
        "MODEL.RETINANET.SCORE_THRESH_TEST",
        str(args.score_threshold),
        "MODEL.DEVICE",
        args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
    ]
    try:
        cfg = build_cfg(args.config_file, opts)
        inputs = expand_inputs(args.input)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    payload = draw_detections(cfg, inputs, Path(args.output))
    n = len(payload["images"])
    print(f"{n} image(s) annotated in {args.output}; detections in {args.output}/detections.json")
    return 1 if payload["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
