"""Max-IoU assignment: the RetinaNet baseline."""

from __future__ import annotations

from typing import List, Optional

from detectron2.config import configurable
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou
from torch import Tensor

from .base import ASSIGNER_REGISTRY, AnchorLayout, AssignResult, BaseAssigner, empty_result


@ASSIGNER_REGISTRY.register()
class MaxIoU(BaseAssigner):
    """Each anchor takes the gt it overlaps most; IoU thresholds split foreground, ignore and
    background (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    A thin wrapper over detectron2's :class:`~detectron2.modeling.matcher.Matcher`, so that with
    this assigner :class:`BMCRetinaNet` labels anchors exactly as detectron2's ``RetinaNet``.
    """

    @configurable
    def __init__(
        self,
        *,
        thresholds: List[float],
        labels: List[int],
        allow_low_quality_matches: bool = True,
    ):
        """
        Args:
            thresholds: increasing IoU thresholds, e.g. [0.4, 0.5].
            labels: label of each interval they define, e.g. [0, -1, 1].
            allow_low_quality_matches: keep each gt's best anchors even below the thresholds.
        """
        self.matcher = Matcher(thresholds, labels, allow_low_quality_matches)

    @classmethod
    def from_config(cls, cfg):
        return {
            "thresholds": cfg.MODEL.RETINANET.IOU_THRESHOLDS,
            "labels": cfg.MODEL.RETINANET.IOU_LABELS,
            "allow_low_quality_matches": cfg.MODEL.BMC.ASSIGNER.ALLOW_LOW_QUALITY_MATCHES,
        }

    def assign(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Optional[Tensor] = None,
        pred_boxes: Optional[Tensor] = None,
    ) -> AssignResult:
        if len(gt_boxes) == 0:
            return empty_result(len(anchors.boxes), anchors.boxes.device)
        iou = pairwise_iou(Boxes(gt_boxes), Boxes(anchors.boxes))
        matched_idxs, labels = self.matcher(iou)
        return AssignResult(matched_idxs, labels)
