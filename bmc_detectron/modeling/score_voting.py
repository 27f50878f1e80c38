"""Score voting: each kept detection's box becomes a weighted mean of the candidates around it.

After NMS a dense detector keeps one box per object and drops its neighbours, although they
hold evidence about where the object's edges are. PAA (Kim & Lee, "Probabilistic Anchor
Assignment with IoU Prediction for Object Detection", ECCV 2020, section 3.4) moves every kept
box to the mean of the same class's pre-NMS candidates, each weighted by its score and by a
Gaussian of its IoU with the kept box, ``exp(-(1 - IoU)^2 / sigma)``; scores and the set of
detections are unchanged, so only localisation (AP at high IoU) can change.
"""

from __future__ import annotations

import torch
from detectron2.structures import Boxes, Instances, pairwise_iou
from torch import Tensor

__all__ = ["score_voting", "vote_instances"]


def score_voting(
    kept_boxes: Tensor,
    kept_classes: Tensor,
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    sigma: float,
) -> Tensor:
    """The kept boxes, each replaced by the vote of the candidates of its class that overlap it.

    Args:
        kept_boxes: (K, 4) XYXY boxes kept by NMS (each is also one of ``boxes``).
        kept_classes: (K,) int64 their classes.
        boxes: (M, 4) XYXY candidate boxes before NMS.
        scores: (M,) their scores.
        classes: (M,) int64 their classes.
        sigma: width of the IoU weight ``exp(-(1 - IoU)^2 / sigma)`` (PAA: 0.025); > 0.

    Returns:
        (K, 4) float boxes; a kept box without any overlapping candidate of its class (none, if
        it is one of ``boxes``) is returned unchanged.
    """
    if sigma <= 0:
        raise ValueError(f"score voting sigma must be > 0, got {sigma}")
    if len(kept_boxes) == 0 or len(boxes) == 0:
        return kept_boxes.clone()
    iou = pairwise_iou(Boxes(kept_boxes.float()), Boxes(boxes.float()))  # (K, M)
    same = kept_classes[:, None] == classes[None, :]
    weights = torch.exp(-((1 - iou) ** 2) / sigma) * scores.float()[None, :]
    weights = weights * (same & (iou > 0)).to(weights.dtype)
    total = weights.sum(dim=1, keepdim=True)  # (K, 1)
    voted = weights @ boxes.float() / total.clamp(min=1e-12)
    return torch.where(total > 0, voted, kept_boxes.float())


def vote_instances(candidates: Instances, keep: Tensor, sigma: float) -> Instances:
    """``candidates[keep]`` (detections with ``pred_boxes``, ``scores``, ``pred_classes``) with
    their boxes voted by all of ``candidates`` (:func:`score_voting`)."""
    kept = candidates[keep]
    kept.pred_boxes = Boxes(
        score_voting(
            kept.pred_boxes.tensor,
            kept.pred_classes,
            candidates.pred_boxes.tensor,
            candidates.scores,
            candidates.pred_classes,
            sigma,
        )
    )
    return kept
