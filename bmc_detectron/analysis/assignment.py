"""What the label assigners do on real images: positives per gt and level, ATSS' per-level
statistics, and per-gt records for dataset statistics.

Assigners are built through the registry (:func:`build_assigners`) and fed exactly what
:class:`~bmc_detectron.modeling.meta_arch.BMCRetinaNet` feeds them in training
(:meth:`BMCRetinaNet.assignment_inputs`: the anchor layout, detached logits and decoded boxes).
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from torch import Tensor

from bmc_detectron.modeling.assigners import (
    AnchorLayout,
    AssignResult,
    BaseAssigner,
    build_assigner,
)
from bmc_detectron.structures.boxes import box_area, overlap_counts, points_in_boxes

#: every registered assigner, in the order of the figures
ASSIGNER_NAMES = ("MaxIoU", "ATSS", "OTA", "SimOTA", "PAA", "DynamicSoft", "TaskAligned")


def build_assigners(cfg: CfgNode, names: Sequence[str]) -> Dict[str, BaseAssigner]:
    """name -> assigner built by ``build_assigner`` from ``cfg`` with that ``ASSIGNER.NAME``
    (each reads its own ``MODEL.BMC.ASSIGNER.<NODE>``)."""
    out = {}
    for name in names:
        c = cfg.clone()
        c.defrost()
        c.MODEL.BMC.ASSIGNER.NAME = name
        out[name] = build_assigner(c)
    return out


class ImageAssignment(NamedTuple):
    """Every assigner's labels for one image.

    Attributes:
        layout: the image's R anchors.
        gt_boxes: (G, 4) float32 XYXY gt boxes in model-input pixels; gt_classes: (G,) int64.
        results: assigner name -> :class:`AssignResult` ((R,) matched_idxs, (R,) labels).
    """

    layout: AnchorLayout
    gt_boxes: Tensor
    gt_classes: Tensor
    results: Dict[str, AssignResult]


@torch.no_grad()
def assign_image(
    model: torch.nn.Module, assigners: Dict[str, BaseAssigner], inputs: dict
) -> ImageAssignment:
    """Run every assigner on one model input (a dict with ``image`` and ``instances``).

    Returns an :class:`ImageAssignment`; tensors on the CPU.
    """
    if not hasattr(model, "assignment_inputs"):
        raise TypeError(f"{type(model).__name__} has no assignment_inputs: use BMCRetinaNet")
    layout, logits, boxes = model.assignment_inputs([inputs])
    device = layout.boxes.device
    gt = inputs["instances"].gt_boxes.tensor.to(device).float()
    cls = inputs["instances"].gt_classes.to(device)
    results = {}
    for name, assigner in assigners.items():
        pred = assigner.needs_predictions
        res = assigner(layout, gt, cls, logits[0] if pred else None, boxes[0] if pred else None)
        results[name] = AssignResult(res.matched_idxs.cpu(), res.labels.cpu())
    cpu_layout = layout._replace(boxes=layout.boxes.cpu())
    return ImageAssignment(cpu_layout, gt.cpu(), cls.cpu(), results)


def anchor_levels(layout: AnchorLayout) -> np.ndarray:
    """(R,) int level index of every anchor."""
    return np.repeat(np.arange(len(layout.num_per_level)), layout.num_per_level)


def per_level_counts(
    result: AssignResult, layout: AnchorLayout, num_gt: int, label: int = 1
) -> np.ndarray:
    """(G, L) int: anchors with ``label`` (1 positive, -1 ignored) matched to each gt, per level."""
    out = np.zeros((num_gt, len(layout.num_per_level)), np.int64)
    sel = (result.labels == label).numpy()
    if num_gt == 0 or not sel.any():
        return out
    np.add.at(out, (result.matched_idxs.numpy()[sel], anchor_levels(layout)[sel]), 1)
    return out


class ATSSStats(NamedTuple):
    """ATSS' statistics of each gt (G gts, L levels), computed as ATSS computes them.

    Attributes:
        candidates: (G, C) int64 candidate anchor indices, level after level.
        num_candidates: (G, L) candidates per level.
        level_mean_iou: (G, L) mean IoU of the gt's candidates on each level (NaN if none).
        mean, std, threshold: (G,) mean and unbiased std of all its candidates' IoUs, and their sum.
        rule_positives: (G, L) candidates with IoU >= threshold whose centre lies inside the gt
            by more than 0.01 px, per level (before an anchor claimed by several gts is given
            to one of them).
    """

    candidates: Tensor
    num_candidates: np.ndarray
    level_mean_iou: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    threshold: np.ndarray
    rule_positives: np.ndarray


def _iou(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise IoU of broadcastable (..., 4) XYXY boxes."""
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter).clamp(min=1e-12)


def atss_candidates(
    layout: AnchorLayout, gt_boxes: Tensor, topk: int, per_location: bool
) -> Tensor:
    """(G, C) int64: on each level the anchors whose centres are nearest each gt centre — k
    anchors, or with ``per_location`` k locations x A anchors (ATSS' ``TOPK_PER_LOCATION``).
    Ties in distance go to the lower anchor index (a stable sort)."""
    centers = layout.centers().float()
    gt_c = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    k_anchors = topk * layout.num_per_location if per_location else topk
    out, start = [], 0
    for count in layout.num_per_level:
        d = centers[start : start + count][None] - gt_c[:, None]  # (G, n, 2)
        dist = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]
        order = torch.sort(dist, dim=1, stable=True).indices[:, : min(k_anchors, count)]
        out.append(order + start)
        start += count
    return torch.cat(out, dim=1)


def atss_statistics(
    layout: AnchorLayout, gt_boxes: Tensor, topk: int, per_location: bool, margin: float = 0.01
) -> ATSSStats:
    """ATSS' candidates, per-level mean IoUs and mean + std threshold of each (G, 4) gt box."""
    gt = gt_boxes.float()
    cand = atss_candidates(layout, gt, topk, per_location)  # (G, C)
    boxes = layout.boxes.float()[cand]  # (G, C, 4)
    ious = _iou(boxes, gt[:, None])  # (G, C)
    mean = ious.mean(dim=1)
    std = ious.std(dim=1, correction=1) if ious.shape[1] > 1 else torch.zeros_like(mean)
    thr = mean + std
    ctr = (boxes[..., :2] + boxes[..., 2:]) / 2
    inside = torch.cat([ctr - gt[:, None, :2], gt[:, None, 2:] - ctr], -1).amin(-1) > margin
    passed = ((ious >= thr[:, None]) & inside).numpy()
    level = anchor_levels(layout)[cand.numpy()]  # (G, C)
    num_levels = len(layout.num_per_level)
    n_cand = np.zeros((len(gt), num_levels), np.int64)
    sums = np.zeros((len(gt), num_levels))
    n_pos = np.zeros((len(gt), num_levels), np.int64)
    rows = np.repeat(np.arange(len(gt)), cand.shape[1])
    np.add.at(n_cand, (rows, level.ravel()), 1)
    np.add.at(sums, (rows, level.ravel()), ious.numpy().ravel())
    np.add.at(n_pos, (rows, level.ravel()), passed.ravel().astype(np.int64))
    with np.errstate(invalid="ignore", divide="ignore"):
        level_mean = np.where(n_cand > 0, sums / np.maximum(n_cand, 1), np.nan)
    return ATSSStats(cand, n_cand, level_mean, mean.numpy(), std.numpy(), thr.numpy(), n_pos)


def gt_records(assignment: ImageAssignment) -> Dict[str, Dict[str, np.ndarray]]:
    """Per assigner, per gt of the image: ``positives``, ``ignored``, ``outside`` (positives
    whose anchor centre lies outside the gt box), ``size`` (sqrt of the box area, model-input
    pixels) and ``crowding`` (how many other gts' boxes overlap it)."""
    gt = assignment.gt_boxes.numpy().astype(np.float64)
    num_gt = len(gt)
    size = np.sqrt(box_area(gt))
    crowding = overlap_counts(gt)
    centers = assignment.layout.centers().numpy()
    out = {}
    for name, res in assignment.results.items():
        idx = res.matched_idxs.numpy()
        pos = (res.labels == 1).numpy()
        outside = pos.copy()
        outside[pos] = ~points_in_boxes(centers[pos], gt[idx[pos]])
        out[name] = {
            "positives": _count_per_gt(idx, pos, num_gt),
            "ignored": _count_per_gt(idx, (res.labels == -1).numpy(), num_gt),
            "outside": _count_per_gt(idx, outside, num_gt),
            "size": size,
            "crowding": crowding,
        }
    return out


def _count_per_gt(matched: np.ndarray, mask: np.ndarray, num_gt: int) -> np.ndarray:
    """(G,) int64: anchors in ``mask`` matched to each gt."""
    return np.bincount(matched[mask], minlength=num_gt)[:num_gt].astype(np.int64)


def merge_records(
    records: List[Dict[str, Dict[str, np.ndarray]]],
) -> Dict[str, Dict[str, np.ndarray]]:
    """Concatenate :func:`gt_records` of several images, per assigner and field."""
    merged: Dict[str, Dict[str, list]] = {}
    for rec in records:
        for name, fields in rec.items():
            for key, value in fields.items():
                merged.setdefault(name, {}).setdefault(key, []).append(np.asarray(value))
    return {n: {k: np.concatenate(v) for k, v in f.items()} for n, f in merged.items()}


def summarize_records(records: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, dict]:
    """Dataset statistics per assigner (JSON-ready): positives per gt overall, by crowding
    (0, 1, 2+ overlapping gts) and by size tertile, the share of gts left without a positive
    and the share of positives whose anchor centre lies outside the gt box."""
    out = {}
    for name, r in records.items():
        pos, n = r["positives"], len(r["positives"])
        total = int(pos.sum())
        entry = {
            "num_gts": n,
            "num_positives": total,
            "positives_per_gt_mean": float(pos.mean()) if n else None,
            "positives_per_gt_median": float(np.median(pos)) if n else None,
            "share_gts_without_positive": float((pos == 0).mean()) if n else None,
            "share_positives_centre_outside_box": float(r["outside"].sum() / total)
            if total
            else None,
            "ignored_per_gt_mean": float(r["ignored"].mean()) if n else None,
        }
        crowd = np.minimum(r["crowding"], 2)
        entry["by_crowding"] = _grouped(pos, crowd, {0: "isolated", 1: "1 neighbour", 2: "2+"})
        edges = np.quantile(r["size"], [1 / 3, 2 / 3]) if n else np.zeros(2)
        bins = np.searchsorted(edges, r["size"], side="right")
        entry["by_size"] = _grouped(pos, bins, {0: "small", 1: "medium", 2: "large"})
        entry["size_tertile_edges_px"] = [float(e) for e in edges]
        out[name] = entry
    return out


def _grouped(pos: np.ndarray, group: np.ndarray, labels: Dict[int, str]) -> Dict[str, dict]:
    """Mean positives per gt and share without positive, for each group value."""
    out = {}
    for value, label in labels.items():
        sel = group == value
        n = int(sel.sum())
        out[label] = {
            "num_gts": n,
            "positives_per_gt_mean": float(pos[sel].mean()) if n else None,
            "share_gts_without_positive": float((pos[sel] == 0).mean()) if n else None,
        }
    return out
