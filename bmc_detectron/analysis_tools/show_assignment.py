"""Show what each label assigner does: positives per gt, per level, ATSS statistics, dataset
statistics and the band-cell case.

    python -m bmc_detectron.analysis_tools.show_assignment --config-file C [--weights W] \
        --dataset D \
        [--images N | FILE ...] --assigners MaxIoU ATSS OTA SimOTA PAA DynamicSoft TaskAligned \
        --output DIR [KEY VALUE ...]

Per image: ``<name>_assign.png`` (one panel per assigner), ``<name>_levels.png`` (positives per
gt and level), ``<name>_atss.png`` (ATSS' per-level mean IoU and threshold per gt),
``<name>_assignment.json``. Over the dataset (``--stats-images``): ``assignment_stats.json`` /
``.md`` / ``.png``. The band-cell case: ``band_cell.png`` and ``band_cell.json``.

OTA, SimOTA, PAA, DynamicSoft and TaskAligned look at the model's predictions: those of
``--weights`` (or ``MODEL.WEIGHTS``), or of an untrained model when none is given; the panel
titles say which.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import CfgNode

from bmc_detectron.analysis.assignment import (
    ASSIGNER_NAMES,
    ATSSStats,
    ImageAssignment,
    assign_image,
    atss_statistics,
    build_assigners,
    gt_records,
    merge_records,
    per_level_counts,
    summarize_records,
)
from bmc_detectron.analysis.assignment_plots import (
    draw_assignment_figure,
    draw_atss_chart,
    draw_dataset_statistics,
    draw_level_counts,
    level_names,
    panel_title,
)
from bmc_detectron.analysis.band_cell import draw_band_cell, positive_pixel_kinds, render_band_cell
from bmc_detectron.analysis.inference import (
    class_names,
    dataset_records,
    record_input,
    select_records,
)
from bmc_detectron.analysis.report import assignment_markdown
from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.engine.loading import load_model
from bmc_detectron.modeling.assigners import BaseAssigner
from bmc_detectron.reporting.plots import save_figure
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic

logger = logging.getLogger("bmc_detectron.show_assignment")
Assigners = Dict[str, BaseAssigner]


def _titles(assigners: Assigners, assignment: ImageAssignment, weights: str) -> Dict[str, str]:
    out = {}
    for name, a in assigners.items():
        res = assignment.results[name]
        counts = (int((res.labels == 1).sum()), int((res.labels == -1).sum()))
        out[name] = panel_title(name, a.needs_predictions, weights, counts)
    return out


def _atss(cfg: CfgNode, assignment: ImageAssignment) -> ATSSStats:
    node = cfg.MODEL.BMC.ASSIGNER.ATSS
    return atss_statistics(
        assignment.layout, assignment.gt_boxes, node.TOPK, node.TOPK_PER_LOCATION
    )


def image_json(cfg: CfgNode, assignment: ImageAssignment, gt_labels: Sequence[str]) -> dict:
    """Per assigner and gt: positives per level and ignored anchors; ATSS' statistics."""
    num_gt = len(assignment.gt_boxes)
    out = {"levels": level_names(assignment.layout), "gts": list(gt_labels), "assigners": {}}
    for name, res in assignment.results.items():
        out["assigners"][name] = {
            "positives_per_level": per_level_counts(res, assignment.layout, num_gt).tolist(),
            "ignored_per_level": per_level_counts(res, assignment.layout, num_gt, -1).tolist(),
        }
    if num_gt:
        s = _atss(cfg, assignment)
        out["atss_statistics"] = {
            "level_mean_iou": s.level_mean_iou.tolist(),
            "num_candidates": s.num_candidates.tolist(),
            "mean": s.mean.tolist(),
            "std": s.std.tolist(),
            "threshold": s.threshold.tolist(),
            "rule_positives_per_level": s.rule_positives.tolist(),
        }
    return out


def show_image(
    cfg: CfgNode,
    model: torch.nn.Module,
    assigners: Assigners,
    record: dict,
    names: List[str],
    args: argparse.Namespace,
) -> List[Path]:
    """Draw and save the figures and JSON of one dataset image; returns the files written."""
    mi = record_input(cfg, record)
    assignment = assign_image(model, assigners, mi.inputs)
    labels = [
        f"g{g} {names[c] if c < len(names) else c}"
        for g, c in enumerate(assignment.gt_classes.tolist())
    ]
    stem = Path(args.output) / Path(record["file_name"]).stem
    titles = _titles(assigners, assignment, model.bmc_weights)
    fig = draw_assignment_figure(mi.image_rgb, assignment, titles, labels, args.draw_boxes)
    files = [save_figure(fig, f"{stem}_assign.png")]
    files.append(save_figure(draw_level_counts(assignment, labels), f"{stem}_levels.png"))
    if "ATSS" in assignment.results and len(labels):
        chosen = per_level_counts(assignment.results["ATSS"], assignment.layout, len(labels))
        fig = draw_atss_chart(
            _atss(cfg, assignment), chosen, level_names(assignment.layout), labels
        )
        files.append(save_figure(fig, f"{stem}_atss.png"))
    payload = image_json(cfg, assignment, labels)
    payload.update(file_name=record["file_name"], weights=model.bmc_weights)
    files.append(write_json_atomic(payload, f"{stem}_assignment.json", indent=1))
    return files


def dataset_statistics(
    cfg: CfgNode,
    model: torch.nn.Module,
    assigners: Assigners,
    records: Sequence[dict],
    out: Path,
    dataset: str,
) -> List[Path]:
    """Per-gt records over ``records`` (images of ``dataset``), summarised as JSON, markdown
    and a figure."""
    per_image = []
    for i, rec in enumerate(records):
        per_image.append(gt_records(assign_image(model, assigners, record_input(cfg, rec).inputs)))
        if (i + 1) % 20 == 0:
            logger.info("assignment statistics: %d / %d images", i + 1, len(records))
    merged = merge_records(per_image)
    summary = summarize_records(merged)
    source = f"weights {model.bmc_weights}" if model.bmc_weights else "an untrained model"
    note = f"{len(records)} images of {dataset}; prediction-aware assigners see {source}."
    payload = {"images": len(records), "weights": model.bmc_weights, "assigners": summary}
    payload["per_gt"] = {n: {k: v.tolist() for k, v in f.items()} for n, f in merged.items()}
    files = [write_json_atomic(payload, out / "assignment_stats.json", indent=1)]
    files.append(atomic_write_text(out / "assignment_stats.md", assignment_markdown(summary, note)))
    fig = draw_dataset_statistics(merged, summary, note)
    files.append(save_figure(fig, out / "assignment_stats.png"))
    return files


def band_cell(
    cfg: CfgNode, model: torch.nn.Module, assigners: Assigners, out: Path, seed: int
) -> List[Path]:
    """The band-cell figure and the pixel kinds under each assigner's positives."""
    cell = render_band_cell(cfg, seed=seed, num_classes=cfg.MODEL.RETINANET.NUM_CLASSES)
    assignment = assign_image(model, assigners, cell.model_input.inputs)
    titles = _titles(assigners, assignment, model.bmc_weights)
    files = [save_figure(draw_band_cell(cell, assignment, titles), out / "band_cell.png")]
    payload = {
        "box": cell.box.tolist(),
        "centre_pixel": cell.centre_kind,
        "positives_by_pixel_kind": positive_pixel_kinds(cell, assignment),
    }
    files.append(write_json_atomic(payload, out / "band_cell.json", indent=1))
    return files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, help="model config (yaml)")
    p.add_argument("--weights", default=None, help="checkpoint (default: MODEL.WEIGHTS or none)")
    p.add_argument("--dataset", required=True, help="registered dataset name")
    p.add_argument("--images", nargs="+", default=["4"], help="N (the first N) or file names")
    p.add_argument("--assigners", nargs="+", default=list(ASSIGNER_NAMES))
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument(
        "--stats-images", type=int, default=None, help="statistics images (default all; 0 none)"
    )
    p.add_argument("--draw-boxes", action="store_true", help="draw positive anchor boxes too")
    p.add_argument("--no-band-cell", action="store_true", help="skip the band-cell case")
    p.add_argument("--seed", type=int, default=0, help="seed of the band cell")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = Path(args.output)
    try:
        cfg = build_cfg(args.config_file, args.opts)
        assigners = build_assigners(cfg, args.assigners)
        records = dataset_records(cfg, args.dataset)
        chosen = select_records(records, args.images)
    except (ConfigError, KeyError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = load_model(cfg, args.weights)
    names = class_names(args.dataset, cfg.MODEL.RETINANET.NUM_CLASSES)
    files: List[Path] = []
    for rec in chosen:
        files += show_image(cfg, model, assigners, rec, names, args)
    n_stats = len(records) if args.stats_images is None else args.stats_images
    if n_stats > 0:
        files += dataset_statistics(cfg, model, assigners, records[:n_stats], out, args.dataset)
    if not args.no_band_cell:
        files += band_cell(cfg, model, assigners, out, args.seed)
    for f in files:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
