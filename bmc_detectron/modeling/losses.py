"""IoU-aware classification losses for soft labels.

Both take raw logits and a per-class target in [0, 1], where a positive anchor's target at its gt
class is the localisation quality (IoU of its decoded box with the gt) or 1 for hard labels, and
every other entry is 0. They return the summed loss, as
``sigmoid_focal_loss_jit(reduction="sum")`` does.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def varifocal_loss(
    logits: Tensor, targets: Tensor, *, alpha: float = 0.75, gamma: float = 2.0
) -> Tensor:
    """Varifocal loss (Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector", CVPR 2021).

    Positives (target q > 0) are weighted by q itself; negatives are down-weighted by
    ``alpha * p**gamma`` as in the focal loss. Only negatives are focal-weighted, so rare
    high-quality positives keep their full gradient.

    Args:
        logits: (M, K) classification logits.
        targets: (M, K) targets in [0, 1].
    """
    prob = logits.sigmoid()
    targets = targets.to(logits.dtype)
    positive = (targets > 0).to(logits.dtype)
    weight = targets * positive + alpha * prob.detach().pow(gamma) * (1.0 - positive)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (bce * weight).sum()


def quality_focal_loss(logits: Tensor, targets: Tensor, *, beta: float = 2.0) -> Tensor:
    """Quality focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020).

    Cross-entropy towards the continuous target, modulated by ``|target - p| ** beta``.

    Args:
        logits: (M, K) classification logits.
        targets: (M, K) targets in [0, 1].
    """
    prob = logits.sigmoid()
    targets = targets.to(logits.dtype)
    scale = (targets - prob.detach()).abs().pow(beta)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (bce * scale).sum()


def one_hot_quality_targets(labels: Tensor, quality: Tensor, num_classes: int) -> Tensor:
    """(M, K) targets: ``quality`` at each anchor's class, 0 elsewhere and for background.

    Args:
        labels: (M,) int class labels in 0..K (K = background).
        quality: (M,) target value of each anchor at its class (ignored for background).
    """
    targets = torch.zeros(
        labels.shape[0], num_classes + 1, dtype=quality.dtype, device=labels.device
    )
    targets.scatter_(1, labels.view(-1, 1), quality.view(-1, 1))
    return targets[:, :num_classes]
