"""Max-IoU assignment: the RetinaNet baseline."""

from __future__ import annotations

from typing import List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou
from torch import Tensor

from bmc_detectron.modeling.assigners.base import (
    ASSIGNER_REGISTRY,
    AnchorLayout,
    AssignResult,
    BaseAssigner,
)
from bmc_detectron.modeling.assigners.chunked_iou import anchors_at_gt_max, chunked_max_iou


def detectron2_iou(gt_boxes: Tensor, anchor_boxes: Tensor) -> Tensor:
    """(G, r) IoU block by detectron2's ``pairwise_iou`` of (G, 4) gts and (r, 4) anchors."""
    return pairwise_iou(Boxes(gt_boxes), Boxes(anchor_boxes))


@ASSIGNER_REGISTRY.register()
class MaxIoU(BaseAssigner):
    """Each anchor takes the gt it overlaps most; IoU thresholds split foreground, ignore and
    background (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    The result is exactly that of detectron2's :class:`~detectron2.modeling.matcher.Matcher` on
    the dense (G, R) ``pairwise_iou`` matrix, so that with this assigner :class:`BMCRetinaNet`
    labels anchors exactly as detectron2's ``RetinaNet``; but the IoU is computed in anchor chunks
    (:mod:`.chunked_iou`), so time and memory grow linearly in G. ``chunk_elements`` (not a
    config option) sets the size of one (G, chunk) IoU block; None means the module default.

    Built from ``MODEL.BMC.ASSIGNER.MAX_IOU`` and detectron2's ``MODEL.RETINANET.IOU_THRESHOLDS``
    / ``IOU_LABELS`` (the keys detectron2's ``RetinaNet`` reads, so both label anchors alike), or
    directly from keyword arguments.
    """

    chunk_elements: Optional[int] = None

    @configurable
    def __init__(
        self,
        *,
        thresholds: List[float],
        labels: List[int],
        allow_low_quality_matches: bool = True,
    ) -> None:
        """
        Args:
            thresholds: increasing IoU thresholds, e.g. [0.4, 0.5].
            labels: label of each interval they define, e.g. [0, -1, 1].
            allow_low_quality_matches: keep each gt's best anchors even below the thresholds.
        """
        self.matcher = Matcher(thresholds, labels, allow_low_quality_matches)

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {
            "thresholds": cfg.MODEL.RETINANET.IOU_THRESHOLDS,
            "labels": cfg.MODEL.RETINANET.IOU_LABELS,
            "allow_low_quality_matches": cfg.MODEL.BMC.ASSIGNER.MAX_IOU.ALLOW_LOW_QUALITY_MATCHES,
        }

    def assign(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Optional[Tensor] = None,
        pred_boxes: Optional[Tensor] = None,
    ) -> AssignResult:
        boxes = anchors.boxes
        num, device = len(boxes), boxes.device
        if len(gt_boxes) == 0 or num == 0:  # Matcher's answer for an empty IoU matrix
            labels = torch.full((num,), self.matcher.labels[0], dtype=torch.int8, device=device)
            return AssignResult(torch.zeros(num, dtype=torch.int64, device=device), labels)
        maxima = chunked_max_iou(gt_boxes, boxes, detectron2_iou, self.chunk_elements)
        labels = torch.ones(num, dtype=torch.int8, device=device)
        m = self.matcher
        for label, low, high in zip(m.labels, m.thresholds[:-1], m.thresholds[1:]):
            labels[(maxima.anchor_max >= low) & (maxima.anchor_max < high)] = label
        if m.allow_low_quality_matches:
            labels[anchors_at_gt_max(gt_boxes, boxes, detectron2_iou, maxima)] = 1
        return AssignResult(maxima.anchor_argmax, labels)
