"""TOOD's task-aligned assigner and its normalised alignment target."""

from __future__ import annotations

from typing import Tuple

import torch
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
from bmc_detectron.modeling.assigners.costs import gather_gt_logits
from bmc_detectron.modeling.assigners.matching import owners_to_result, resolve_claims


def normalized_alignment(
    anchor_idx: Tensor, gt_idx: Tensor, metric: Tensor, ious: Tensor, num_gt: int, num_anchors: int
) -> Tensor:
    """(R,) TOOD's classification target of the positives, 0 elsewhere.

    Per gt, ``t_hat = t / max t x max IoU``, the maxima taken over that gt's positives: the
    best-aligned positive of a gt gets the best IoU of any of its positives, the others in
    proportion to their alignment. Unlike mmdetection's TOOD head (``max t + 1e-7``), the
    division is exact: every positive has t > 0, so the maximum is positive.

    Args:
        anchor_idx: (P,) int64 anchor of each positive (each anchor at most once).
        gt_idx: (P,) int64 gt it is assigned to.
        metric: (P,) alignment t of each positive with its gt.
        ious: (P,) IoU of its decoded box with its gt.
        num_gt: G.
        num_anchors: R.
    """
    max_t = metric.new_zeros(num_gt).scatter_reduce_(0, gt_idx, metric, "amax")
    max_iou = ious.new_zeros(num_gt).scatter_reduce_(0, gt_idx, ious, "amax")
    target = metric / max_t[gt_idx].clamp(min=torch.finfo(metric.dtype).tiny) * max_iou[gt_idx]
    return metric.new_zeros(num_anchors).index_put_((anchor_idx,), target)


@ASSIGNER_REGISTRY.register()
class TaskAligned(PredictionAssigner):
    """Task-aligned assignment of TOOD (Feng et al., "TOOD: Task-aligned One-stage Object
    Detection", ICCV 2021).

    - alignment of a (gt, anchor) pair: ``t = s ** alpha x u ** beta``, with s the predicted
      score (sigmoid) of the gt's class at the anchor and u the IoU of the anchor's decoded box
      with the gt; the defaults alpha 1, beta 6, k 13 are TOOD's;
    - candidates of a gt: the anchors whose centre is strictly inside that gt's box
      (:func:`~.candidates.select_candidates` without centre square), at most
      ``max_candidates``, the closest in strides; **fallback:** a gt that contains no anchor
      centre takes its ``fallback_k`` nearest anchors (TOOD leaves it without positives);
    - positives: each gt's top-k candidates by t, keeping only t > 0 (as TOOD: a candidate whose
      box misses the gt is never positive);
    - conflict: an anchor taken by several gts goes to the gt its decoded box overlaps most (the
      highest IoU, as TOOD's and mmdetection's ``TaskAlignedAssigner``; exact ties: lowest gt
      index, :func:`~.matching.resolve_claims`);
    - :attr:`AssignResult.quality`: TOOD's soft classification target of each positive,
      t / max t x max IoU per gt (:func:`normalized_alignment`), used by the model when
      ``MODEL.BMC.LOSS.SOFT_TARGET`` is "alignment".

    Departures from TOOD: the top-k is taken among the in-box candidates (TOOD takes the top-k
    over all anchors, then drops those outside the gt, so a gt may get fewer than k); there is
    no ATSS warm-up (TOOD assigns with ATSS for its first 4 epochs); the task-aligned head
    (T-head, TAP) and the alignment-weighted box loss are not part of the assigner.

    Memory O(G x M) with M <= ``max_candidates``; no (G, R, K) tensor. Built from
    ``MODEL.BMC.ASSIGNER.TASK_ALIGNED``, or directly from keyword arguments.
    """

    gives_quality = True

    @configurable
    def __init__(
        self,
        *,
        topk: int = 13,
        alpha: float = 1.0,
        beta: float = 6.0,
        fallback_k: int = 10,
        max_candidates: int = 1000,
    ) -> None:
        """
        Args:
            topk: positives per gt at most (TOOD's 13).
            alpha: exponent of the class score in the alignment (TOOD's 1).
            beta: exponent of the IoU in the alignment (TOOD's 6).
            fallback_k: candidates of a gt with no anchor centre inside its box.
            max_candidates: candidates per gt at most.
        """
        if topk < 1:
            raise ValueError(f"MODEL.BMC.ASSIGNER.TASK_ALIGNED.TOPK must be >= 1, got {topk}")
        self.topk = topk
        self.alpha = alpha
        self.beta = beta
        self.fallback_k = fallback_k
        self.max_candidates = max_candidates

    @classmethod
    def from_config(cls, cfg) -> dict:
        node = cfg.MODEL.BMC.ASSIGNER.TASK_ALIGNED
        return {"topk": node.TOPK, "alpha": node.ALPHA, "beta": node.BETA}

    def alignment(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> Tuple[Candidates, Tensor, Tensor]:
        """Candidates, their (G, M) IoUs and (G, M) alignments t (both 0 on padding).

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
        scores = gather_gt_logits(pred_logits, cand.anchor_idx, gt_classes).sigmoid()
        metric = scores.pow(self.alpha) * ious.pow(self.beta)
        return cand, ious, metric.masked_fill(~cand.valid, 0.0)

    def match(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> AssignResult:
        """Each gt's top-k candidates by alignment; conflicts to the highest IoU (see above)."""
        cand, ious, metric = self.alignment(anchors, gt_boxes, gt_classes, pred_logits, pred_boxes)
        k = min(self.topk, metric.shape[1])
        top_t, top_pos = metric.topk(k, dim=1)
        take = top_t > 0
        gt_idx = torch.arange(len(gt_boxes), device=metric.device)[:, None].expand(-1, k)[take]
        anchor = cand.anchor_idx.gather(1, top_pos)[take]
        iou = ious.gather(1, top_pos)[take]
        num_anchors = len(anchors.boxes)
        owner = resolve_claims(anchor, gt_idx, iou, num_anchors, largest=True).owner
        wins = owner[anchor] == gt_idx
        quality = normalized_alignment(
            anchor[wins], gt_idx[wins], top_t[take][wins], iou[wins], len(gt_boxes), num_anchors
        )
        return owners_to_result(owner).with_quality(quality)
