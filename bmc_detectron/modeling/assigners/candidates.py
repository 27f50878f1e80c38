"""Per-gt candidate anchors of the prediction-aware assigners (OTA, SimOTA, DynamicSoft).

A gt's candidates are a few hundred anchors near it, stored as a padded ``(G, M)`` table of anchor
indices (``M <= max_candidates``), so that the costs built on them (:mod:`.costs`) are ``(G, M)``
tensors: memory is ``O(G x M)`` and no ``(G, R, K)`` or even ``(G, R)`` float tensor is built. The
only ``G x`` anything over the image is the geometric pre-filter, computed per feature-map
*location* (``R / A`` of them) rather than per anchor.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from bmc_detectron.modeling.assigners.base import AnchorLayout, paired_iou


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
    center_radius: Optional[float],
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
        center_radius: half-side of the centre square in strides, or None for no centre square.
        max_candidates: candidates per gt at most.
        fallback_k: candidates of a gt that has none inside its box or centre square.
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
    in_box, in_center = in_box[gt_rows, loc_idx] & valid, in_center[gt_rows, loc_idx] & valid
    return _expand_locations(loc_idx, a, Candidates(loc_idx, valid, in_box, in_center, distance))


def _expand_locations(loc_idx: Tensor, a: int, per_location: Candidates) -> Candidates:
    """Per-location candidates ((G, W) tensors) to per-anchor ones ((G, W x a)): each location
    stands for its ``a`` consecutive anchors, which share its centre."""

    def per_anchor(t: Tensor) -> Tensor:  # (G, W) -> (G, W * a)
        return t.unsqueeze(2).expand(-1, -1, a).flatten(1)

    offsets = torch.arange(a, device=loc_idx.device)
    anchor_idx = (loc_idx.unsqueeze(2) * a + offsets).flatten(1)
    valid = per_anchor(per_location.valid)
    return Candidates(
        anchor_idx=anchor_idx.masked_fill(~valid, 0),
        valid=valid,
        in_box=per_anchor(per_location.in_box),
        in_center=per_anchor(per_location.in_center),
        distance=per_anchor(per_location.distance),
    )


def candidate_ious(cand: Candidates, pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    """(G, M) IoU between each gt and the decoded predictions of its candidates (0 on padding).

    Args:
        cand: the (G, M) candidates.
        pred_boxes: (R, 4) float32 decoded XYXY boxes.
        gt_boxes: (G, 4) float32 XYXY boxes.
    """
    iou = paired_iou(pred_boxes[cand.anchor_idx], gt_boxes[:, None, :])
    return iou.masked_fill(~cand.valid, 0.0)
