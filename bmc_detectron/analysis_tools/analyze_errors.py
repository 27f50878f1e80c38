"""What each kind of detection error costs in AP (TIDE-style), overall and split by crowding,
with a confusion matrix and galleries of the worst cases.

    python -m bmc_detectron.analysis_tools.analyze_errors --config-file C --weights W --dataset D \
        --output DIR [--score-threshold 0.5] [--gallery 6] [KEY VALUE ...]

Writes ``errors.json`` / ``errors.md`` / ``errors.png`` (AP50, count and dAP50 of the
classification, localisation, cls+loc, duplicate, background and missed errors, for all cells,
crowded cells and isolated cells; :mod:`bmc_detectron.analysis.tide`), ``confusion.csv`` /
``confusion.png`` (at ``--score-threshold``) and ``gallery_<type>.png``. The dAPs use every
detection the model outputs (``MODEL.RETINANET.SCORE_THRESH_TEST``, at most 100 per image), as AP
does; ``--score-threshold`` is the operating point of the confusion matrix and the drawings.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.detection_utils import read_image

from bmc_detectron.analysis.confusion import confusion_matrix, draw_confusion, write_confusion_csv
from bmc_detectron.analysis.error_plots import draw_delta_ap
from bmc_detectron.analysis.gallery import case_caption, draw_case, stack_gallery, worst_cases
from bmc_detectron.analysis.inference import class_names, predict_dataset
from bmc_detectron.analysis.report import errors_markdown
from bmc_detectron.analysis.tide import (
    ERROR_TYPES,
    Attribution,
    ImageDetections,
    PredOutcome,
    analyse,
)
from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.data.checks import DatasetError
from bmc_detectron.engine.loading import load_model
from bmc_detectron.reporting.plots import save_figure
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic, write_png_atomic

logger = logging.getLogger("bmc_detectron.analyze_errors")


def error_list(
    attribution: Attribution, images: Sequence[ImageDetections], records: Sequence[dict]
) -> List[dict]:
    """Every error as a JSON-ready dict (type, file, boxes XYXY, classes, score, IoU)."""
    out = []
    for kind in ERROR_TYPES:
        for e in attribution.errors(kind):
            im = images[e.image]
            item = {"type": kind, "file_name": records[e.image]["file_name"], "gt": e.gt}
            if e.gt >= 0:
                item["gt_box"] = [float(v) for v in im.gt_boxes[e.gt]]
                item["gt_class"] = int(im.gt_classes[e.gt])
            if isinstance(e, PredOutcome):
                item.update(
                    box=[float(v) for v in im.pred_boxes[e.pred]],
                    category=e.cls,
                    score=e.score,
                    iou=e.iou,
                )
            out.append(item)
    return out


def write_galleries(
    report: dict,
    images: Sequence[ImageDetections],
    records: Sequence[dict],
    meta: Metadata,
    threshold: float,
    num: int,
    out: Path,
) -> List[Path]:
    """``gallery_<type>.png`` with the ``num`` worst cases of each error type that occurs."""
    attribution = report["attribution"]
    names = list(meta.get("thing_classes") or [])
    files = []
    for kind in ERROR_TYPES:
        cases = worst_cases(attribution, images, kind, num)
        panels, captions = [], []
        for case in cases:
            image = read_image(records[case.image]["file_name"], format="RGB")
            panels.append(draw_case(image, images[case.image], case, meta, threshold))
            captions.append(
                case_caption(case, images[case.image], names, records[case.image]["file_name"])
            )
        gallery = stack_gallery(panels, captions)
        if gallery is not None:
            files.append(write_png_atomic(out / f"gallery_{kind}.png", gallery))
    return files


def write_report(
    report: dict,
    images: Sequence[ImageDetections],
    records: Sequence[dict],
    note: str,
    out: Path,
) -> List[Path]:
    """errors.json, errors.md and errors.png."""
    payload: Dict[str, object] = {k: v for k, v in report.items() if k != "attribution"}
    payload["note"] = note
    payload["errors"] = error_list(report["attribution"], images, records)
    files = [write_json_atomic(payload, out / "errors.json", indent=1)]
    files.append(atomic_write_text(out / "errors.md", errors_markdown(report, note)))
    files.append(save_figure(draw_delta_ap(report, note), out / "errors.png"))
    return files


def analyze(
    cfg: CfgNode, weights: str, dataset: str, out: Path, threshold: float, gallery: int
) -> Tuple[dict, List[Path]]:
    """Run the model on ``dataset`` and write every output; returns (report, files)."""
    model = load_model(cfg, weights)
    images, records = predict_dataset(cfg, model, dataset)
    report = analyse(images)
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    names = class_names(dataset, num_classes)
    note = f"{Path(weights).name} on {dataset} ({len(images)} images)"
    files = write_report(report, images, records, note, out)
    matrix = confusion_matrix(images, num_classes, threshold)
    write_confusion_csv(matrix, names, out / "confusion.csv")
    files.append(out / "confusion.csv")
    title = f"{note}: detections >= {threshold:g}, IoU >= 0.5"
    files.append(save_figure(draw_confusion(matrix, names, title), out / "confusion.png"))
    meta = MetadataCatalog.get(dataset)
    files += write_galleries(report, images, records, meta, threshold, gallery, out)
    return report, files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, help="model config (yaml)")
    p.add_argument("--weights", required=True, help="trained checkpoint (.pth / .pkl)")
    p.add_argument("--dataset", required=True, help="registered dataset name")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.5, help="confusion matrix / drawings")
    p.add_argument("--gallery", type=int, default=6, help="worst cases drawn per error type")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        cfg = build_cfg(args.config_file, list(args.opts) + ["MODEL.WEIGHTS", args.weights])
        report, files = analyze(
            cfg, args.weights, args.dataset, Path(args.output), args.score_threshold, args.gallery
        )
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(errors_markdown(report))
    for f in files:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
