"""SimOTA: OTA's candidates, costs and dynamic k, matched by a per-gt top-k instead of Sinkhorn."""

from __future__ import annotations

from torch import Tensor

from bmc_detectron.modeling.assigners.base import ASSIGNER_REGISTRY, AnchorLayout, AssignResult
from bmc_detectron.modeling.assigners.center_prior import CenterPriorAssigner
from bmc_detectron.modeling.assigners.matching import topk_matching


@ASSIGNER_REGISTRY.register()
class SimOTA(CenterPriorAssigner):
    """Simplified optimal transport assignment (Ge et al., "YOLOX: Exceeding YOLO Series in
    2021", 2021), the simplification of :class:`~.ota.OTA` (Ge et al., CVPR 2021).

    Candidates, cost and dynamic k are those of :class:`~.center_prior.CenterPriorAssigner` (see
    there); the cost is the focal + ``iou_weight`` x -log(IoU) cost plus ``outside_cost`` for every
    pair whose anchor centre is not in both the box and the centre square. Instead of the Sinkhorn
    iterations, each gt takes its k_i lowest-cost candidates (one vectorised ``topk`` over the
    (G, M) cost table), and an anchor taken by several gts goes to the one with the lowest cost
    (ties: lowest gt index; :func:`~.matching.topk_matching`). Costs are not normalised here: the
    conflicts compare costs of different gts.

    Built from ``MODEL.BMC.ASSIGNER.SIMOTA`` (and the focal loss's ``MODEL.RETINANET``
    alpha / gamma), or directly from the keyword arguments of
    :class:`~.center_prior.CenterPriorAssigner`.
    """

    @classmethod
    def from_config(cls, cfg) -> dict:
        node = cfg.MODEL.BMC.ASSIGNER.SIMOTA
        return {
            "iou_weight": node.IOU_WEIGHT,
            "center_radius": node.CENTER_RADIUS,
            "dynamic_topq": node.DYNAMIC_TOPQ,
            "fallback_k": node.FALLBACK_K,
            "outside_cost": node.OUTSIDE_COST,
            "max_candidates": node.MAX_CANDIDATES,
            "focal_alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "focal_gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
        }

    def match(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> AssignResult:
        """Top-k matching of one image with G >= 1 gts.

        Args:
            anchors: the image's R anchors.
            gt_boxes: (G, 4) float32 gt boxes.
            gt_classes: (G,) int64 classes.
            pred_logits: (R, K) float32 logits.
            pred_boxes: (R, 4) float32 decoded boxes.
        """
        pc, k = self.candidate_costs(anchors, gt_boxes, gt_classes, pred_logits, pred_boxes)
        cost = pc.cost + self.outside_cost * pc.outside.float()
        return topk_matching(cost, pc.cand.anchor_idx, k, len(anchors.boxes))
