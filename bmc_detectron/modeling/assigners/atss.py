"""ATSS: adaptive training sample selection."""

from __future__ import annotations

from typing import Optional

import torch
from detectron2.config import configurable
from torch import Tensor

from bmc_detectron.modeling.assigners.base import (
    ASSIGNER_REGISTRY,
    AnchorLayout,
    AssignResult,
    BaseAssigner,
    empty_result,
    paired_iou,
)
from bmc_detectron.modeling.assigners.matching import resolve_by_max_iou


def squared_distances(points1: Tensor, points2: Tensor) -> Tensor:
    """Exact pairwise squared Euclidean distances (no matmul shortcut, so ranks are exact).

    Args:
        points1: (N, 2) points.
        points2: (M, 2) points.

    Returns:
        (N, M) squared distances.
    """
    dx = points1[:, None, 0] - points2[None, :, 0]
    dy = points1[:, None, 1] - points2[None, :, 1]
    return dx * dx + dy * dy


def mean_std_threshold(candidate_ious: Tensor) -> Tensor:
    """The ATSS IoU threshold of each gt: mean + standard deviation of its candidates' IoUs.

    The standard deviation is the **unbiased** one (divisor n - 1), as in the ATSS authors' code
    and mmdetection (``Tensor.std`` default). With a single candidate it is taken as 0.

    Args:
        candidate_ious: (G, C) IoU of each gt with each of its C candidates.

    Returns:
        (G,) thresholds.
    """
    mean = candidate_ious.mean(dim=1)
    if candidate_ious.shape[1] < 2:
        return mean
    return mean + candidate_ious.std(dim=1, correction=1)


#: an anchor centre must lie farther than this (in pixels) inside every side of the gt box, as in
#: the ATSS authors' code and mmdetection (``min(l, t, r, b) > 0.01``)
CENTER_MARGIN = 0.01


def centers_inside(points: Tensor, boxes: Tensor, margin: float = CENTER_MARGIN) -> Tensor:
    """Whether each point lies inside its box by more than ``margin`` (a purely geometric test).

    Args:
        points: (..., 2) points (x, y).
        boxes: (..., 4) XYXY boxes, broadcastable against ``points``.
        margin: the smallest distance from the point to a side must exceed it.

    Returns:
        (...) bool.
    """
    left_top = points - boxes[..., :2]
    right_bottom = boxes[..., 2:] - points
    return torch.cat([left_top, right_bottom], dim=-1).amin(dim=-1) > margin


@ASSIGNER_REGISTRY.register()
class ATSS(BaseAssigner):
    """Adaptive Training Sample Selection (Zhang et al., "Bridging the Gap Between Anchor-based
    and Anchor-free Detection via Adaptive Training Sample Selection", CVPR 2020).

    For each gt:

    1. on every level, the anchors whose centres are nearest the gt centre are candidates;
    2. the gt's IoU threshold is mean + std of its candidates' IoUs (:func:`mean_std_threshold`,
       unbiased std);
    3. candidates with IoU >= threshold whose centre lies inside the gt box, more than 0.01 px
       from every side (:func:`centers_inside`; the authors' code and mmdetection test
       ``min(l, t, r, b) > 0.01``), are positive. The test is geometric: it does not care whether
       the pixels at the gt's centre belong to the cell (a U-shaped cell whose box centre is
       background works like any box).

    An anchor positive for several gts goes to the one with the highest IoU (lowest gt index on
    exact ties; :func:`~.matching.resolve_by_max_iou`). There is no ignore band: labels are only
    1 (positive) and 0 (negative), and ``matched_idxs`` is 0 for negatives.

    What ``k`` counts: the paper's k = 9 was tuned with one anchor per location (A = 1), where
    9 anchors are 9 locations. With A > 1, ``topk_per_location=False`` (the paper's text and
    mmdetection) takes the k nearest *anchors*, i.e. only about k / A locations, which shrinks the
    candidate region and the statistics behind the threshold; ``topk_per_location=True`` takes the
    k nearest *locations* and all A anchors of each (k x A anchors), which is what the ATSS
    authors' code does for multi-anchor settings and keeps the candidate region the paper tuned.
    Ties in distance at the k-th place are broken arbitrarily by ``torch.topk``, as in the
    reference code.

    Tiny gts: the candidates always exist (the k nearest centres), but if no candidate centre lies
    inside the box (a box smaller than the stride, falling between anchor centres), the gt gets no
    positive; every anchor near it stays negative (label 0). As in the paper, any gt can also end
    without a positive when mean + std exceeds all its candidates' IoUs (several candidates tied
    at the top); ATSS has no "best anchor" fallback.

    Built from ``MODEL.BMC.ASSIGNER.ATSS``, or directly from keyword arguments.
    """

    @configurable
    def __init__(self, *, topk: int = 9, topk_per_location: bool = False) -> None:
        """
        Args:
            topk: k, candidates per level and gt.
            topk_per_location: True: k locations (k x A anchors); False: k anchors.
        """
        if topk < 1:
            raise ValueError(f"ATSS topk must be >= 1, got {topk}")
        self.topk = topk
        self.topk_per_location = topk_per_location

    @classmethod
    def from_config(cls, cfg) -> dict:
        node = cfg.MODEL.BMC.ASSIGNER.ATSS
        return {"topk": node.TOPK, "topk_per_location": node.TOPK_PER_LOCATION}

    def select_candidates(self, anchors: AnchorLayout, gt_centers: Tensor) -> Tensor:
        """The candidate anchors of each gt, level by level.

        Args:
            anchors: the image's anchors.
            gt_centers: (G, 2) gt centres.

        Returns:
            (G, C) int64 anchor indices into ``anchors.boxes``; C is the same for every gt.
        """
        num_loc = anchors.num_per_location
        centers = anchors.centers().float()
        offsets = torch.arange(num_loc, device=centers.device)
        per_level = []
        start = 0
        for count in anchors.num_per_level:
            if count == 0:
                continue
            # The A anchors of a location share its centre, so distances are ranked per location
            # (an A-times smaller (G, HW) matrix) and then expanded to anchors. For k anchors this
            # takes the ceil(k / A) nearest locations and keeps the first k of their anchors,
            # which is the k-nearest-anchor set up to the order among equidistant anchors.
            loc_centers = centers[start : start + count].view(-1, num_loc, 2)[:, 0]
            dist = squared_distances(gt_centers, loc_centers)  # (G, count / A)
            want = self.topk if self.topk_per_location else -(-self.topk // num_loc)
            loc_idx = dist.topk(min(want, dist.shape[1]), dim=1, largest=False).indices
            idx = (loc_idx[:, :, None] * num_loc + offsets).flatten(1)  # (G, k_loc * A)
            if not self.topk_per_location:
                idx = idx[:, : min(self.topk, count)]
            per_level.append(idx + start)
            start += count
        return torch.cat(per_level, dim=1)

    def assign(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Optional[Tensor] = None,
        pred_boxes: Optional[Tensor] = None,
    ) -> AssignResult:
        """Label the anchors of one image (the predictions are not used).

        Args:
            anchors: the image's R anchors.
            gt_boxes: (G, 4) XYXY gt boxes.
            gt_classes: (G,) int64 classes (not used).
            pred_logits: unused.
            pred_boxes: unused.
        """
        num_anchors = len(anchors.boxes)
        device = anchors.boxes.device
        if len(gt_boxes) == 0 or num_anchors == 0:
            return empty_result(num_anchors, device)
        anchor_boxes = anchors.boxes.float()
        gt_boxes = gt_boxes.float()
        gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2

        cand = self.select_candidates(anchors, gt_centers)  # (G, C)
        cand_boxes = anchor_boxes[cand]  # (G, C, 4)
        cand_ious = paired_iou(cand_boxes, gt_boxes[:, None])  # (G, C)
        threshold = mean_std_threshold(cand_ious)  # (G,)
        cand_centers = (cand_boxes[..., :2] + cand_boxes[..., 2:]) / 2  # (G, C, 2)
        inside = centers_inside(cand_centers, gt_boxes[:, None])
        is_pos = (cand_ious >= threshold[:, None]) & inside  # (G, C)

        gt_idx = torch.arange(len(gt_boxes), device=device)[:, None].expand_as(cand)
        return resolve_by_max_iou(cand[is_pos], gt_idx[is_pos], cand_ious[is_pos], num_anchors)
