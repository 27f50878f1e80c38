"""Generalized Focal Loss's distribution box regression (the box half of GFL).

Li, Wang, Wu, Chen, Hu, Li, Tang, Yang, "Generalized Focal Loss: Learning Qualified and
Distributed Bounding Boxes for Dense Object Detection", NeurIPS 2020.

Each side of a box (left, top, right, bottom distance from the anchor centre, in strides of the
anchor's level) is predicted as a discrete distribution over the ``reg_max + 1`` bins
``0, 1, ..., reg_max``; the distance is its expectation (the integral). Training adds the
distribution focal loss (DFL), the cross-entropy towards the two bins around the continuous
target weighted by the distance to each, to the IoU-type loss of the integral box; GFL weights
both by the detached best class score of each positive. The box transform of the integral box is
detectron2's ``Box2BoxTransformLinear(normalize_by_size=False)``: pixel distances from the centre.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch
from detectron2.layers import ciou_loss, diou_loss
from detectron2.modeling.box_regression import Box2BoxTransformLinear
from fvcore.nn import giou_loss
from torch import Tensor
from torch.nn import functional as F

from bmc_detectron.modeling.assigners import AnchorLayout

__all__ = [
    "BOX_LOSSES",
    "DistributionBoxLosses",
    "dense_distances",
    "distance_targets",
    "distribution_focal_loss",
    "distribution_integral",
]

#: IoU-type losses the integral box can be trained with (``MODEL.RETINANET.BBOX_REG_LOSS_TYPE``)
BOX_LOSSES: Dict[str, Callable[..., Tensor]] = {
    "giou": giou_loss,
    "diou": diou_loss,
    "ciou": ciou_loss,
}


def distribution_integral(logits: Tensor, reg_max: int, dim: int = -1) -> Tensor:
    """The expectation of each distribution: softmax over each group of ``reg_max + 1``
    consecutive entries of ``dim``, then ``sum_j j * p_j``.

    Args:
        logits: e.g. (..., S * (reg_max + 1)) or (N, S * (reg_max + 1), H, W) bin logits, the
            bins of one distribution consecutive along ``dim``.
        reg_max: the last bin.

    Returns:
        ``logits`` with ``dim`` of size S: each distribution's expectation, in bins (0..reg_max).
    """
    n = reg_max + 1
    dim = dim % logits.dim()
    shape = logits.shape  # sizes from the tensor (not unflatten): dynamic in an ONNX trace
    probs = logits.reshape(*shape[:dim], -1, n, *shape[dim + 1 :]).softmax(dim + 1)
    bins = torch.arange(n, dtype=probs.dtype, device=probs.device)
    bins = bins.view([n] + [1] * (probs.dim() - dim - 2))
    return (probs * bins).sum(dim + 1)


def dense_distances(box_logits: Sequence[Tensor], strides: Sequence[int], reg_max: int):
    """Per level (N, A * 4 * (reg_max + 1), H, W) head outputs -> (N, A * 4, H, W) distances in
    pixels (l, t, r, b of each anchor, the layout of detectron2's box deltas)."""
    return [distribution_integral(x, reg_max, dim=1) * s for x, s in zip(box_logits, strides)]


def distance_targets(layout: AnchorLayout, gt_boxes: Tensor, mask: Tensor, reg_max: int) -> Tensor:
    """(P, 4) target distances (l, t, r, b) in strides of the ``mask`` anchors to their gt,
    clamped to [0, reg_max - 0.01] (the DFL needs a bin on each side of a target).

    Args:
        layout: the R anchors.
        gt_boxes: (N, R, 4) matched gt box of each anchor.
        mask: (N, R) bool, the P positives.
    """
    centres = layout.centers().expand(len(mask), -1, -1)[mask]  # (P, 2)
    strides = layout.level_strides().expand(len(mask), -1)[mask]  # (P,)
    gt = gt_boxes[mask]
    d = torch.cat([centres - gt[:, :2], gt[:, 2:] - centres], dim=1) / strides[:, None]
    return d.clamp(min=0.0, max=reg_max - 0.01)


def distribution_focal_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """DFL of each distribution: with ``i = floor(y)``,
    ``-((i + 1 - y) * log p_i + (y - i) * log p_{i+1})``; minimal when the mass sits on bins
    ``i`` and ``i + 1`` in proportions ``(i + 1 - y, y - i)``, whose expectation is ``y``.

    Args:
        logits: (M, reg_max + 1) bin logits.
        targets: (M,) continuous targets in [0, reg_max).

    Returns:
        (M,) losses.
    """
    left = targets.floor().long()
    w_right = targets - left.to(targets.dtype)
    loss_left = F.cross_entropy(logits, left, reduction="none")
    loss_right = F.cross_entropy(logits, left + 1, reduction="none")
    return loss_left * (1.0 - w_right) + loss_right * w_right


class DistributionBoxLosses:
    """The box losses of GFL (Li et al., NeurIPS 2020) on the positives of a batch: the IoU-type
    loss of the integral box (``loss_box_reg``) and ``dfl_weight`` x the DFL of the four side
    distributions, mean over the sides (``loss_dfl``). Each positive is weighted by its detached
    best class score (``score_weights``, GFL) or by 1; both sums are divided by the weight sum,
    at least 1 (unweighted: the positive count).
    """

    def __init__(
        self,
        reg_max: int,
        box_loss_type: str,
        score_weights: bool = True,
        dfl_weight: float = 0.25,
    ) -> None:
        if reg_max < 1:
            raise ValueError(f"MODEL.BMC.HEAD.REG_MAX must be >= 1 for distributions: {reg_max}")
        if box_loss_type not in BOX_LOSSES:
            raise ValueError(
                f"MODEL.BMC.HEAD.REG_MAX {reg_max} (box distributions) needs an IoU-type box "
                f"loss: MODEL.RETINANET.BBOX_REG_LOSS_TYPE one of {sorted(BOX_LOSSES)}, "
                f"got {box_loss_type!r}"
            )
        self.reg_max = reg_max
        self.box_loss = BOX_LOSSES[box_loss_type]
        self.score_weights = score_weights
        self.dfl_weight = dfl_weight
        self.transform = Box2BoxTransformLinear(normalize_by_size=False)

    def __call__(
        self,
        layout: AnchorLayout,
        distances: List[Tensor],
        distributions: List[Tensor],
        pred_logits: List[Tensor],
        gt_boxes: List[Tensor],
        pos_mask: Tensor,
    ) -> Dict[str, Tensor]:
        """
        Args:
            layout: the R anchors of the batch's images.
            distances: per level (N, Ri, 4) integral distances in pixels.
            distributions: per level (N, Ri, 4 * (reg_max + 1)) bin logits.
            pred_logits: per level (N, Ri, K) classification logits.
            gt_boxes: N (R, 4) matched gt boxes.
            pos_mask: (N, R) bool positives.

        Returns:
            ``loss_box_reg`` and ``loss_dfl``, scalars.
        """
        gt_boxes = torch.stack(gt_boxes)
        pos_dist = torch.cat(distances, dim=1)[pos_mask]  # (P, 4)
        anchors = layout.boxes.expand(len(pos_mask), -1, -1)[pos_mask]
        pred_boxes = self.transform.apply_deltas(pos_dist, anchors.to(pos_dist.dtype))
        if self.score_weights:
            scores = torch.cat(pred_logits, dim=1).detach()[pos_mask].float().sigmoid()
            weights = scores.max(dim=1).values
        else:
            weights = pos_dist.new_ones(len(pos_dist))
        target = gt_boxes[pos_mask].to(pred_boxes.dtype)
        loss_box = (self.box_loss(pred_boxes, target, reduction="none") * weights).sum()
        bins = torch.cat(distributions, dim=1)[pos_mask].reshape(-1, self.reg_max + 1)
        goal = distance_targets(layout, gt_boxes, pos_mask, self.reg_max).reshape(-1)
        dfl = distribution_focal_loss(bins, goal.to(bins.dtype)).view(-1, 4).mean(dim=1)
        normalizer = weights.sum().clamp(min=1.0)
        return {
            "loss_box_reg": loss_box / normalizer,
            "loss_dfl": (dfl * weights).sum() * self.dfl_weight / normalizer,
        }
