"""RTMDet's dynamic soft label assigner."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import Tensor

from bmc_detectron.modeling.assigners.base import (
    ASSIGNER_REGISTRY,
    AnchorLayout,
    AssignResult,
    PredictionAssigner,
)
from bmc_detectron.modeling.assigners.candidates import (
    Candidates,
    candidate_ious,
    select_candidates,
)
from bmc_detectron.modeling.assigners.costs import gather_gt_logits, one_hot_class_cost
from bmc_detectron.modeling.assigners.matching import dynamic_k, topk_matching

_IOU_EPS = 1e-7


def soft_cls_cost(gt_logits: Tensor, ious: Tensor, all_negative: Tensor) -> Tensor:
    """RTMDet's soft classification cost of each (gt, candidate) pair, summed over classes.

    The gt class has target IoU, the other classes target 0; each class costs
    BCE(logit, target) x |target - sigmoid(logit)|^2. The other classes are folded into
    ``all_negative`` (their sum at target 0 for every class), so only the gt-class logit is used.

    Args:
        gt_logits: (G, M) logit of the gt's class at each candidate.
        ious: (G, M) IoU(decoded prediction, gt), the soft target.
        all_negative: (G, M) sum over the K classes of softplus(l) x sigmoid(l)^2 at the anchor.
    """
    p = gt_logits.sigmoid()
    pos = (F.softplus(gt_logits) - ious * gt_logits) * (ious - p).pow(2)
    neg = F.softplus(gt_logits) * p.pow(2)
    return one_hot_class_cost(all_negative, neg, pos)


@ASSIGNER_REGISTRY.register()
class DynamicSoft(PredictionAssigner):
    """Dynamic soft label assignment of RTMDet (Lyu et al., "RTMDet: An Empirical Study of
    Designing Real-Time Object Detectors", 2022).

    *Fully dynamic label assignment* in this project means: the positives of every gt are chosen
    anew at each training iteration from the model's current predictions (the IoU of its decoded
    boxes with the gt and its class scores), how many positives a gt gets (its dynamic k) follows
    the quality of those predictions, and there is no fixed IoU threshold and no fixed number of
    positives per gt. OTA, SimOTA and this assigner are fully dynamic in that sense.

    - candidates of a gt: the anchors whose centre is strictly inside **that gt's** box, at most
      ``max_candidates`` (the closest in units of stride). **Fallback:** a gt containing no
      anchor centre (smaller than the grid spacing) takes its ``fallback_k`` nearest anchors (by
      distance / stride), so it is never left without positives;
    - cost = soft centre prior ``soft_center_power ** (distance / stride - soft_center_shift)``
      (distance between anchor centre and gt centre) + ``iou_weight`` x -log(IoU + 1e-7)
      + soft classification cost: the BCE of each class's logit against the soft target
      (IoU for the gt class, 0 for the others) scaled by |target - sigmoid(logit)|^2, summed
      over the classes, computed exactly from the gt-class logit alone (:func:`soft_cls_cost`);
    - k_i = max(1, floor(sum of the top-``dynamic_topq`` candidate IoUs)), ``dynamic_topq`` = 13
      by default as RTMDet's ``topk``; each gt takes its k_i lowest-cost candidates; an anchor
      taken by several gts goes to the lowest cost (:func:`~.matching.topk_matching`).

    Departures from RTMDet's ``DynamicSoftLabelAssigner`` (mmdetection): there, the candidate
    anchors are those whose centre lies strictly inside *any* gt box (one set shared by all gts),
    and every gt's cost row, and the IoUs its dynamic k sums, cover that whole set; so an anchor
    inside gt A can become a positive of a neighbouring gt B, held back only by B's soft centre
    prior. Here each gt's candidates are the anchors inside its own box, which keeps costs
    (G, M) instead of (G, anchors inside any gt); the two differ only for anchors inside one gt
    and near another. RTMDet has no fallback: a gt without an anchor centre inside it competes
    for the anchors inside the other gts (or gets nothing if there are none).

    Memory O(G x M) with M <= ``max_candidates``; no (G, R, K) tensor. Built from
    ``MODEL.BMC.ASSIGNER.DYNAMIC_SOFT``, or directly from keyword arguments.
    """

    @configurable
    def __init__(
        self,
        *,
        iou_weight: float = 3.0,
        dynamic_topq: int = 13,
        fallback_k: int = 10,
        max_candidates: int = 1000,
        soft_center_power: float = 10.0,
        soft_center_shift: float = 3.0,
    ) -> None:
        """
        Args:
            iou_weight: weight of -log(IoU) relative to the classification cost.
            dynamic_topq: IoUs summed for the dynamic k of a gt (RTMDet's ``topk``).
            fallback_k: candidates of a gt with no anchor centre inside its box.
            max_candidates: candidates per gt at most.
            soft_center_power: base of the soft centre prior.
            soft_center_shift: distance (in strides) at which the centre prior costs 1.
        """
        self.iou_weight = iou_weight
        self.dynamic_topq = dynamic_topq
        self.fallback_k = fallback_k
        self.max_candidates = max_candidates
        self.soft_center_power = soft_center_power
        self.soft_center_shift = soft_center_shift

    @classmethod
    def from_config(cls, cfg) -> dict:
        node = cfg.MODEL.BMC.ASSIGNER.DYNAMIC_SOFT
        return {
            "iou_weight": node.IOU_WEIGHT,
            "dynamic_topq": node.DYNAMIC_TOPQ,
            "fallback_k": node.FALLBACK_K,
            "max_candidates": node.MAX_CANDIDATES,
            "soft_center_power": node.SOFT_CENTER_POWER,
            "soft_center_shift": node.SOFT_CENTER_SHIFT,
        }

    def costs(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> Tuple[Candidates, Tensor, Tensor]:
        """Candidates, their (G, M) IoUs (0 on padding) and (G, M) costs (+inf on padding).

        Args:
            anchors: the image's R anchors.
            gt_boxes: (G, 4) float32 gt boxes, G >= 1.
            gt_classes: (G,) int64 classes.
            pred_logits: (R, K) float32 logits.
            pred_boxes: (R, 4) float32 decoded boxes.
        """
        cand = select_candidates(
            anchors,
            gt_boxes,
            center_radius=None,
            max_candidates=self.max_candidates,
            fallback_k=self.fallback_k,
        )
        ious = candidate_ious(cand, pred_boxes, gt_boxes)
        all_negative = (F.softplus(pred_logits) * pred_logits.sigmoid().pow(2)).sum(dim=1)
        cls = soft_cls_cost(
            gather_gt_logits(pred_logits, cand.anchor_idx, gt_classes),
            ious,
            all_negative[cand.anchor_idx],
        )
        # Clamped so that far in-box candidates of huge gts stay finite in float32 (10^38 max).
        prior = torch.pow(self.soft_center_power, cand.distance - self.soft_center_shift)
        cost = cls + self.iou_weight * -torch.log(ious + _IOU_EPS) + prior.clamp(max=1e30)
        return cand, ious, cost.masked_fill(~cand.valid, float("inf"))

    def match(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> AssignResult:
        """Each gt takes its dynamic-k cheapest candidates (see :class:`PredictionAssigner`)."""
        cand, ious, cost = self.costs(anchors, gt_boxes, gt_classes, pred_logits, pred_boxes)
        k = dynamic_k(ious, self.dynamic_topq)
        return topk_matching(cost, cand.anchor_idx, k, len(anchors.boxes))
