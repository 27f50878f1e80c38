"""SimOTA: OTA's costs and dynamic k, solved by a per-gt top-k instead of Sinkhorn.

:class:`SimOTA` also holds what it shares with :class:`~.ota.OTA` (its subclass): the settings,
the input checks, and the candidates, cost table and dynamic k (:meth:`SimOTA.candidate_costs`).
"""

from __future__ import annotations

from typing import Tuple

from detectron2.config import configurable
from torch import Tensor

from ._cost import (
    CenterPriorCosts,
    as_float32,
    center_prior_costs,
    check_predictions,
    dynamic_k,
    topk_matching,
)
from .base import ASSIGNER_REGISTRY, AnchorLayout, AssignResult, BaseAssigner, empty_result


@ASSIGNER_REGISTRY.register()
class SimOTA(BaseAssigner):
    """Simplified optimal transport assignment (Ge et al., "YOLOX: Exceeding YOLO Series in
    2021", 2021).

    Candidates, cost and dynamic k are those of :class:`~.ota.OTA` (see there): candidates are
    anchors whose centre is inside the gt box or its centre square of half-side
    ``center_radius x stride`` (at most ``max_candidates``); cost = focal loss for the gt's
    one-hot target + ``iou_weight`` x -log(IoU + 1e-8) + ``outside_cost`` unless the centre is in
    both the box and the centre square; k_i = max(1, floor(sum of the top-``dynamic_topq``
    candidate IoUs)). Instead of the Sinkhorn iterations, each gt takes its k_i lowest-cost
    candidates (one vectorised ``topk`` over the (G, M) cost table), and an anchor taken by
    several gts goes to the one with the lowest cost (ties: lowest gt index). Costs are not
    normalised here: the conflicts compare costs of different gts.

    Memory O(G x M) with M <= ``max_candidates``; no (G, R, K) tensor.

    Subclasses (:class:`~.ota.OTA`) reuse :meth:`assign`'s checks and :meth:`candidate_costs`,
    and replace the top-k step by overriding :meth:`match`.
    """

    needs_predictions = True

    @configurable
    def __init__(
        self,
        *,
        iou_weight: float = 3.0,
        center_radius: float = 2.5,
        dynamic_topq: int = 10,
        outside_cost: float = 1.0e5,
        max_candidates: int = 1000,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        """
        Args:
            iou_weight: weight of -log(IoU) relative to the classification cost.
            center_radius: half-side of the centre square, in strides of the anchor's level.
            dynamic_topq: IoUs summed for the dynamic k of a gt.
            outside_cost: added to pairs not in both the box and the centre square.
            max_candidates: candidates per gt at most.
            focal_alpha, focal_gamma: focal loss parameters of the classification cost.
        """
        self.iou_weight = iou_weight
        self.center_radius = center_radius
        self.dynamic_topq = dynamic_topq
        self.outside_cost = outside_cost
        self.max_candidates = max_candidates
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, cfg):
        a = cfg.MODEL.BMC.ASSIGNER
        return {
            "iou_weight": a.IOU_WEIGHT,
            "center_radius": a.CENTER_RADIUS,
            "dynamic_topq": a.DYNAMIC_TOPQ,
            "outside_cost": a.OUTSIDE_COST,
            "max_candidates": a.MAX_CANDIDATES,
            "focal_alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "focal_gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
        }

    def candidate_costs(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> Tuple[CenterPriorCosts, Tensor]:
        """The candidates and cost pieces of one image (:func:`~._cost.center_prior_costs` with
        this assigner's settings; ``outside_cost`` not yet added), and the (G,) int64 dynamic k.

        Args: float32 gt_boxes (G, 4) with G >= 1, gt_classes (G,), pred_logits (R, K),
        pred_boxes (R, 4).
        """
        pc = center_prior_costs(
            anchors,
            gt_boxes,
            gt_classes,
            pred_logits,
            pred_boxes,
            center_radius=self.center_radius,
            max_candidates=self.max_candidates,
            fallback_k=self.dynamic_topq,
            iou_weight=self.iou_weight,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
        )
        return pc, dynamic_k(pc.ious, self.dynamic_topq)

    def assign(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor | None = None,
        pred_boxes: Tensor | None = None,
    ) -> AssignResult:
        """Args: gt_boxes (G, 4), gt_classes (G,), pred_logits (R, K), pred_boxes (R, 4).

        No gt gives all background; otherwise the inputs are cast to float32 for :meth:`match`.
        """
        if len(gt_boxes) == 0:
            return empty_result(len(anchors.boxes), anchors.boxes.device)
        check_predictions(type(self).__name__, pred_logits, pred_boxes)
        gt_boxes, pred_logits, pred_boxes = as_float32(gt_boxes, pred_logits, pred_boxes)
        return self.match(anchors, gt_boxes, gt_classes, pred_logits, pred_boxes)

    def match(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> AssignResult:
        """Top-k matching of one image with G >= 1 gts.

        Args: float32 gt_boxes (G, 4), gt_classes (G,), pred_logits (R, K), pred_boxes (R, 4).
        """
        pc, k = self.candidate_costs(anchors, gt_boxes, gt_classes, pred_logits, pred_boxes)
        cost = pc.cost + self.outside_cost * pc.outside.float()
        return topk_matching(cost, pc.cand.anchor_idx, k, len(anchors.boxes))
