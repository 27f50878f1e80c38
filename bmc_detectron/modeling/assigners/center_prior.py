"""What OTA and SimOTA share: centre-prior candidates, the focal + IoU cost and the dynamic k.

:class:`CenterPriorAssigner` is the common base of the two siblings :class:`~.ota.OTA` (Sinkhorn
transport) and :class:`~.simota.SimOTA` (top-k cheapest); each implements only its matching,
:meth:`CenterPriorAssigner.match`.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
from detectron2.config import configurable
from torch import Tensor

from bmc_detectron.modeling.assigners.base import AnchorLayout, PredictionAssigner
from bmc_detectron.modeling.assigners.candidates import (
    Candidates,
    candidate_ious,
    select_candidates,
)
from bmc_detectron.modeling.assigners.costs import (
    focal_negative,
    focal_terms,
    gather_gt_logits,
    one_hot_class_cost,
)
from bmc_detectron.modeling.assigners.matching import dynamic_k


class CenterPriorCosts(NamedTuple):
    """Pieces of the OTA / SimOTA cost of each (gt, candidate) pair, all (G, M) but ``bg``.

    Attributes:
        cand: the candidates.
        ious: IoU(decoded prediction, gt), 0 on padding.
        cost: focal classification cost + iou_weight x -log(IoU + 1e-8); +inf on padding.
        outside: True where the anchor centre is not in both the box and the centre square
            (the pairs that pay ``outside_cost``).
        bg: (R,) focal cost of predicting background (all K classes 0) at each anchor.
    """

    cand: Candidates
    ious: Tensor
    cost: Tensor
    outside: Tensor
    bg: Tensor


def center_prior_costs(
    anchors: AnchorLayout,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    pred_logits: Tensor,
    pred_boxes: Tensor,
    *,
    center_radius: float,
    max_candidates: int,
    fallback_k: int,
    iou_weight: float,
    focal_alpha: float,
    focal_gamma: float,
) -> CenterPriorCosts:
    """OTA / SimOTA costs (Ge et al., CVPR 2021; YOLOX 2021) on float32 inputs.

    The classification cost is the sigmoid focal loss summed over the K classes with the gt's
    one-hot target, computed exactly from the gt-class logit alone (:func:`.one_hot_class_cost`).

    Args:
        anchors: the image's R anchors.
        gt_boxes: (G, 4) XYXY gt boxes, G >= 1.
        gt_classes: (G,) int64 classes.
        pred_logits: (R, K) logits.
        pred_boxes: (R, 4) decoded XYXY boxes.
        center_radius, max_candidates, fallback_k: see :func:`.select_candidates`.
        iou_weight: weight of -log(IoU) relative to the classification cost.
        focal_alpha, focal_gamma: focal loss parameters of the classification cost.
    """
    cand = select_candidates(
        anchors,
        gt_boxes,
        center_radius=center_radius,
        max_candidates=max_candidates,
        fallback_k=fallback_k,
    )
    ious = candidate_ious(cand, pred_boxes, gt_boxes)
    bg = focal_negative(pred_logits, focal_alpha, focal_gamma).sum(dim=1)
    pos_c, neg_c = focal_terms(
        gather_gt_logits(pred_logits, cand.anchor_idx, gt_classes), focal_alpha, focal_gamma
    )
    cls = one_hot_class_cost(bg[cand.anchor_idx], neg_c, pos_c)
    cost = cls + iou_weight * -torch.log(ious + 1e-8)
    outside = ~(cand.in_box & cand.in_center) & cand.valid
    return CenterPriorCosts(cand, ious, cost.masked_fill(~cand.valid, float("inf")), outside, bg)


class CenterPriorAssigner(PredictionAssigner):
    """Base of :class:`~.ota.OTA` and :class:`~.simota.SimOTA` (Ge et al., "OTA: Optimal
    Transport Assignment for Object Detection", CVPR 2021; Ge et al., "YOLOX: Exceeding YOLO
    Series in 2021", 2021): everything but the matching.

    - candidates of a gt: anchors whose centre is inside the box or inside the centre square of
      half-side ``center_radius x stride``, at most ``max_candidates`` (the closest in units of
      stride); a gt with neither takes its ``fallback_k`` nearest anchors;
    - cost(gt, anchor) = focal loss of the anchor's logits for the gt's one-hot target (summed
      over the K classes, computed exactly from the gt-class logit alone) + ``iou_weight`` x
      -log(IoU(decoded box, gt) + 1e-8), and ``outside_cost`` for a pair whose anchor centre is
      not in both the box and the centre square (the ``is_in_boxes_and_center`` prior of the
      OTA / YOLOX code; each subclass decides how to add it);
    - dynamic k: k_i = max(1, floor(sum of the top-``dynamic_topq`` candidate IoUs of gt i)).

    :meth:`assign` handles the empty image and the input checks, casts to float32 and calls the
    subclass's :meth:`match`. Memory O(G x M) with M <= ``max_candidates``; no (G, R, K) tensor.
    """

    @configurable
    def __init__(
        self,
        *,
        iou_weight: float = 3.0,
        center_radius: float = 2.5,
        dynamic_topq: int = 10,
        fallback_k: int = 10,
        outside_cost: float = 1.0e5,
        max_candidates: int = 1000,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        """
        Args:
            iou_weight: weight of -log(IoU) relative to the classification cost.
            center_radius: half-side of the centre square, in strides of the anchor's level.
            dynamic_topq: IoUs summed for the dynamic k of a gt.
            fallback_k: candidates of a gt with no anchor centre in its box or centre square.
            outside_cost: cost of pairs not in both the box and the centre square.
            max_candidates: candidates per gt at most.
            focal_alpha, focal_gamma: focal loss parameters of the classification cost.
        """
        self.iou_weight = iou_weight
        self.center_radius = center_radius
        self.dynamic_topq = dynamic_topq
        self.fallback_k = fallback_k
        self.outside_cost = outside_cost
        self.max_candidates = max_candidates
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, cfg) -> dict:
        raise NotImplementedError(f"{cls.__name__}.from_config reads its own config node")

    def candidate_costs(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> Tuple[CenterPriorCosts, Tensor]:
        """The candidates and cost pieces of one image (:func:`center_prior_costs` with this
        assigner's settings; ``outside_cost`` not yet added), and the (G,) int64 dynamic k.

        Args:
            anchors: the image's R anchors.
            gt_boxes: (G, 4) float32 gt boxes, G >= 1.
            gt_classes: (G,) int64 classes.
            pred_logits: (R, K) float32 logits.
            pred_boxes: (R, 4) float32 decoded boxes.
        """
        pc = center_prior_costs(
            anchors,
            gt_boxes,
            gt_classes,
            pred_logits,
            pred_boxes,
            center_radius=self.center_radius,
            max_candidates=self.max_candidates,
            fallback_k=self.fallback_k,
            iou_weight=self.iou_weight,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
        )
        return pc, dynamic_k(pc.ious, self.dynamic_topq)
