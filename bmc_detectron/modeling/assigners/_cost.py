"""Shared pieces of the prediction-aware assigners (OTA, SimOTA, DynamicSoft).

Everything here works on **per-gt candidate lists**: a gt's candidates are a few hundred anchors
near it, stored as a padded ``(G, M)`` table of anchor indices (``M <= max_candidates``). Costs,
IoUs and transport plans are ``(G, M)`` tensors, so memory is ``O(G x M)`` and no
``(G, R, K)`` or even ``(G, R)`` float cost tensor is ever built: the only ``G x`` anything over the
image is the geometric pre-filter, computed per feature-map *location* (``R / A`` of them) rather
than per anchor.

Two tricks keep the classification costs exact while touching one logit per (gt, anchor) pair:

- a loss summed over the K classes with a one-hot (or one-hot x IoU) target equals the loss of
  "all classes negative" (a per-anchor number, ``(R,)``) minus the negative term of the gt class
  plus the positive term of the gt class: :func:`one_hot_class_cost`;
- the gt-class logit is gathered with one index per pair: :func:`gather_gt_logits`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import AnchorLayout, AssignResult, paired_iou

_INF = float("inf")


class Candidates(NamedTuple):
    """Per-gt candidate anchors, padded to a common width M.

    Attributes:
        anchor_idx: (G, M) int64 anchor indices (0 on padding).
        valid: (G, M) bool, False on padding.
        in_box: (G, M) bool, anchor centre strictly inside the gt box.
        in_center: (G, M) bool, anchor centre inside the gt's centre square (False if none).
        distance: (G, M) float32 distance anchor centre -> gt centre in units of the anchor's
            stride (inf on padding).
    """

    anchor_idx: Tensor
    valid: Tensor
    in_box: Tensor
    in_center: Tensor
    distance: Tensor


def anchors_per_location(anchors: AnchorLayout) -> int:
    """``A`` if the A anchors of each location are contiguous and share their centre, else 1.

    Detectron2 orders a level's anchors (H, W, A) and centres all A anchors of a location on the
    same point, so geometry can be computed once per location and repeated A times.
    """
    a = int(anchors.num_per_location)
    if a <= 1 or any(n % a for n in anchors.num_per_level):
        return 1
    centers = anchors.centers().float().view(-1, a, 2)
    shared = (centers - centers[:, :1]).abs().amax() <= 1e-3
    return a if bool(shared) else 1


def _pack_rows(mask: Tensor) -> Tuple[Tensor, Tensor]:
    """The True columns of each row of a (G, L) mask, left-aligned: (G, W) indices and validity."""
    row, col = mask.nonzero(as_tuple=True)
    counts = torch.bincount(row, minlength=mask.shape[0])
    slot = torch.arange(len(row), device=mask.device) - (counts.cumsum(0) - counts)[row]
    width = max(int(counts.max()), 1)
    idx = torch.zeros((mask.shape[0], width), dtype=torch.int64, device=mask.device)
    valid = torch.zeros((mask.shape[0], width), dtype=torch.bool, device=mask.device)
    idx[row, slot] = col
    valid[row, slot] = True
    return idx, valid


def _keep_nearest(
    candidate: Tensor,
    rows: Tensor,
    limit: int,
    geometry: Tuple[Tensor, Tensor, Tensor],
    among_candidates: bool = True,
) -> None:
    """In place: the selected rows of the (G, L) mask keep only their ``limit`` locations nearest
    (by distance / stride) to the gt centre, among their candidates or among all locations.

    Args:
        rows: (G,) bool rows to change.
        geometry: location centres (L, 2), location strides (L,), gt centres (G, 2).
    """
    if not bool(rows.any()):
        return
    loc_centers, loc_strides, gt_center = geometry
    d = (loc_centers[None] - gt_center[rows][:, None]) / loc_strides[None, :, None]
    key = (d * d).sum(dim=-1)  # (rows, L) squared distance / stride
    if among_candidates:
        key = key.masked_fill(~candidate[rows], float("inf"))
    nearest = key.topk(min(limit, key.shape[1]), dim=1, largest=False).indices
    candidate[rows] = torch.zeros_like(key, dtype=torch.bool).scatter_(1, nearest, True)


def select_candidates(
    anchors: AnchorLayout,
    gt_boxes: Tensor,
    *,
    center_radius: float | None,
    max_candidates: int,
    fallback_k: int,
) -> Candidates:
    """Candidates of each gt: anchors whose centre is inside the box or its centre square.

    The centre square of a gt has half-side ``center_radius x stride`` of the anchor's level
    (YOLOX / OTA centre sampling); ``center_radius=None`` keeps in-box anchors only (DynamicSoft).
    At most ``max_candidates`` per gt are kept, the closest by distance / stride. A gt with no
    candidate at all (tiny, or off the anchor grid) takes its ``fallback_k`` nearest anchors by
    distance / stride, so that every gt has at least one candidate. Geometry is computed once per
    location (see :func:`anchors_per_location`) in a few boolean passes over (G, R / A).

    Args:
        anchors: the image's R anchors.
        gt_boxes: (G, 4) float32 XYXY gt boxes, G >= 1.
    """
    a = anchors_per_location(anchors)
    loc_centers = anchors.centers().float()[::a]  # (L, 2)
    loc_strides = anchors.level_strides()[::a]  # (L,)
    gt_center = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    half_wh = (gt_boxes[:, 2:] - gt_boxes[:, :2]) / 2
    adx = (loc_centers[None, :, 0] - gt_center[:, None, 0]).abs()  # (G, L)
    ady = (loc_centers[None, :, 1] - gt_center[:, None, 1]).abs()
    in_box = (adx < half_wh[:, 0:1]) & (ady < half_wh[:, 1:2])
    if center_radius is None:
        in_center = torch.zeros_like(in_box)
    else:
        in_center = torch.maximum(adx, ady) < center_radius * loc_strides[None]
    candidate = in_box | in_center
    counts = candidate.sum(dim=1)
    geometry = (loc_centers, loc_strides, gt_center)
    _keep_nearest(
        candidate, counts == 0, math.ceil(fallback_k / a), geometry, among_candidates=False
    )
    _keep_nearest(candidate, counts > max_candidates // a, max(1, max_candidates // a), geometry)
    loc_idx, valid = _pack_rows(candidate)
    gt_rows = torch.arange(len(gt_boxes), device=loc_idx.device)[:, None]
    rel = (loc_centers[loc_idx] - gt_center[:, None]) / loc_strides[loc_idx][..., None]
    distance = rel.norm(dim=-1).masked_fill(~valid, float("inf"))

    def per_anchor(t: Tensor) -> Tensor:  # (G, W) -> (G, W * a)
        return t.unsqueeze(2).expand(-1, -1, a).flatten(1)

    offsets = torch.arange(a, device=loc_idx.device)
    anchor_idx = (loc_idx.unsqueeze(2) * a + offsets).flatten(1)
    return Candidates(
        anchor_idx=anchor_idx.masked_fill(~per_anchor(valid), 0),
        valid=per_anchor(valid),
        in_box=per_anchor(in_box[gt_rows, loc_idx] & valid),
        in_center=per_anchor(in_center[gt_rows, loc_idx] & valid),
        distance=per_anchor(distance),
    )


def candidate_ious(cand: Candidates, pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    """(G, M) IoU between each gt and the decoded predictions of its candidates (0 on padding).

    Args:
        pred_boxes: (R, 4) float32 decoded XYXY boxes.
        gt_boxes: (G, 4) float32 XYXY boxes.
    """
    iou = paired_iou(pred_boxes[cand.anchor_idx], gt_boxes[:, None, :])
    return iou.masked_fill(~cand.valid, 0.0)


def dynamic_k(ious: Tensor, topq: int) -> Tensor:
    """(G,) int64 k_i = max(1, floor(sum of the top-``topq`` IoUs of gt i)).

    Args:
        ious: (G, M) candidate IoUs, 0 on padding (so k_i never exceeds gt i's candidates).
    """
    q = min(topq, ious.shape[1])
    return ious.topk(q, dim=1).values.sum(dim=1).int().clamp(min=1).long()


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


class CenterPriorCosts(NamedTuple):
    """Pieces of the OTA / SimOTA cost of each (gt, candidate) pair, all (G, M) but ``bg``.

    Attributes:
        cand: the candidates.
        ious: IoU(decoded prediction, gt), 0 on padding.
        cost: focal classification cost + iou_weight x -log(IoU + 1e-8); +inf on padding.
        outside: True where the anchor centre is not in both the box and the centre square
            (the pairs that pay ``OUTSIDE_COST``).
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
    one-hot target, computed exactly from the gt-class logit alone (:func:`one_hot_class_cost`).

    Args:
        gt_boxes: (G, 4), gt_classes: (G,), pred_logits: (R, K), pred_boxes: (R, 4).
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
    return CenterPriorCosts(cand, ious, cost.masked_fill(~cand.valid, _INF), outside, bg)


def topk_matching(cost: Tensor, anchor_idx: Tensor, k: Tensor, num_anchors: int) -> AssignResult:
    """Each gt takes its k lowest-cost candidates; an anchor taken twice goes to the cheaper gt.

    Vectorised over gts: one ``topk`` with the largest k, then a mask keeps k_i per row. Ties in
    the conflict go to the lowest gt index.

    Args:
        cost: (G, M) float32 costs, +inf on padding (k_i never exceeds a row's finite entries).
        anchor_idx: (G, M) anchor indices.
        k: (G,) int64 number of positives per gt.
        num_anchors: R.
    """
    g = cost.shape[0]
    kmax = int(k.max())
    top_cost, top_pos = cost.topk(kmax, dim=1, largest=False)
    take = torch.arange(kmax, device=cost.device)[None, :] < k[:, None]
    take &= torch.isfinite(top_cost)
    rows = torch.arange(g, device=cost.device)[:, None].expand(-1, kmax)[take]
    anchor = anchor_idx.gather(1, top_pos)[take]
    c = top_cost[take]
    best = torch.full((num_anchors,), _INF, device=cost.device)
    best.scatter_reduce_(0, anchor, c, reduce="amin")
    win = c == best[anchor]
    owner = torch.full((num_anchors,), g, dtype=torch.int64, device=cost.device)
    owner.scatter_reduce_(0, anchor[win], rows[win], reduce="amin")
    fg = owner < g
    return AssignResult(torch.where(fg, owner, torch.zeros_like(owner)), fg.to(torch.int8))


def as_float32(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """The tensors in float32 (costs are always computed in float32, even for half inputs)."""
    return tuple(t.float() for t in tensors)


def check_predictions(name: str, pred_logits: Tensor | None, pred_boxes: Tensor | None) -> None:
    """Raise if an assigner that needs predictions did not get them."""
    if pred_logits is None or pred_boxes is None:
        raise ValueError(f"{name} needs pred_logits and pred_boxes (needs_predictions=True)")
