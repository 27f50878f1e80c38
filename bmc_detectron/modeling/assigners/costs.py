"""Classification costs of (gt, candidate) pairs, exact while touching one logit per pair.

A loss summed over the K classes with a one-hot (or one-hot x IoU) target equals the loss of "all
classes negative" (a per-anchor number, ``(R,)``) minus the negative term of the gt class plus the
positive term of the gt class (:func:`one_hot_class_cost`); the gt-class logit is gathered with one
index per pair (:func:`gather_gt_logits`). So no ``(G, M, K)`` tensor is built.
"""

from __future__ import annotations

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor


def gather_gt_logits(pred_logits: Tensor, anchor_idx: Tensor, gt_classes: Tensor) -> Tensor:
    """(G, M) logit of gt i's class at each of its candidate anchors; one index per pair.

    Args:
        pred_logits: (R, K) logits.
        anchor_idx: (G, M) candidate anchor indices.
        gt_classes: (G,) int64 classes.
    """
    return pred_logits[anchor_idx, gt_classes[:, None].expand_as(anchor_idx)]


def focal_negative(logits: Tensor, alpha: float, gamma: float) -> Tensor:
    """Sigmoid focal loss of ``logits`` for target 0, element-wise."""
    return -(1 - alpha) * logits.sigmoid().pow(gamma) * F.logsigmoid(-logits)


def focal_terms(logits: Tensor, alpha: float, gamma: float) -> Tuple[Tensor, Tensor]:
    """Sigmoid focal loss of ``logits`` for target 1 and for target 0 (same shape as input)."""
    pos = -alpha * (1 - logits.sigmoid()).pow(gamma) * F.logsigmoid(logits)
    return pos, focal_negative(logits, alpha, gamma)


def one_hot_class_cost(all_negative: Tensor, neg_gt_class: Tensor, pos_gt_class: Tensor) -> Tensor:
    """Sum over classes of a per-class loss whose target is non-zero only at the gt class.

    ``sum_k loss(l_k, t_k) = sum_k loss(l_k, 0) - loss(l_c, 0) + loss(l_c, t_c)``: exact, with
    one gathered logit per pair instead of a (G, M, K) tensor.

    Args:
        all_negative: (G, M) per-anchor sum over classes of the target-0 loss, gathered per pair.
        neg_gt_class: (G, M) target-0 loss of the gt-class logit.
        pos_gt_class: (G, M) loss of the gt-class logit for its real target.
    """
    return all_negative - neg_gt_class + pos_gt_class
