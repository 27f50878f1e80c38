"""Matching: from per-gt claims on anchors to one gt per anchor, shared by the assigners.

Every assigner settles an anchor claimed by several gts with the same rule,
:func:`resolve_claims`: the claim with the best score wins (the lowest cost, or the highest IoU /
transport mass), and exact ties go to the lowest gt index, so the result is deterministic and does
not depend on the order of the claims. On top of it:

- :func:`resolve_by_max_iou`: the highest IoU wins (ATSS, PAA);
- :func:`topk_matching`: each gt takes its k cheapest candidates, the cheapest claim wins (SimOTA,
  DynamicSoft), with k from :func:`dynamic_k`;
- OTA resolves its transport plan's columns with :func:`resolve_claims` too (see ``ota.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bmc_detectron.modeling.assigners.base import AssignResult


class Resolved(NamedTuple):
    """The winning claim of every anchor (:func:`resolve_claims`)."""

    owner: Tensor  # (R,) int64 winning gt index, -1 for an anchor nobody claims
    best: Tensor  # (R,) the winning score; -inf (largest) or +inf (smallest) if unclaimed


def resolve_claims(
    anchor_idx: Tensor, gt_idx: Tensor, score: Tensor, num_anchors: int, *, largest: bool
) -> Resolved:
    """Give every claimed anchor to its best claim; exact ties go to the lowest gt index.

    Args:
        anchor_idx: (P,) int64 anchor of each (gt, anchor) claim.
        gt_idx: (P,) int64 gt of each claim.
        score: (P,) float score of each claim.
        num_anchors: R.
        largest: True: the highest score wins (IoU, mass); False: the lowest (cost).

    Returns:
        :class:`Resolved`.
    """
    device = anchor_idx.device
    fill = float("-inf") if largest else float("inf")
    best = torch.full((num_anchors,), fill, dtype=score.dtype, device=device)
    best.scatter_reduce_(0, anchor_idx, score, reduce="amax" if largest else "amin")
    wins = score == best[anchor_idx]
    unclaimed = torch.iinfo(torch.int64).max
    owner = torch.full((num_anchors,), unclaimed, dtype=torch.int64, device=device)
    owner.scatter_reduce_(0, anchor_idx[wins], gt_idx[wins], reduce="amin")
    return Resolved(owner.masked_fill(owner == unclaimed, -1), best)


def owners_to_result(owner: Tensor) -> AssignResult:
    """The :class:`AssignResult` of (R,) int64 owners (-1: background); matched_idxs 0 there."""
    fg = owner >= 0
    return AssignResult(torch.where(fg, owner, torch.zeros_like(owner)), fg.to(torch.int8))


def resolve_by_max_iou(
    anchor_idx: Tensor, gt_idx: Tensor, ious: Tensor, num_anchors: int
) -> AssignResult:
    """Give each anchor claimed by one or more gts to the gt it overlaps most.

    Exact IoU ties go to the lowest gt index (:func:`resolve_claims`).

    Args:
        anchor_idx: (P,) int64 anchor index of each (anchor, gt) claim.
        gt_idx: (P,) int64 gt index of each claim.
        ious: (P,) IoU of each claim.
        num_anchors: R.

    Returns:
        matched_idxs (R,) int64 (0 for unclaimed anchors) and labels (R,) int8 in {0, 1}.
    """
    resolved = resolve_claims(anchor_idx, gt_idx, ious, num_anchors, largest=True)
    return owners_to_result(resolved.owner)


def dynamic_k(ious: Tensor, topq: int) -> Tensor:
    """(G,) int64 k_i = max(1, floor(sum of the top-``topq`` IoUs of gt i)).

    Args:
        ious: (G, M) candidate IoUs, 0 on padding (so k_i never exceeds gt i's candidates).
        topq: how many of a gt's highest IoUs are summed.
    """
    q = min(topq, ious.shape[1])
    return ious.topk(q, dim=1).values.sum(dim=1).int().clamp(min=1).long()


def topk_matching(cost: Tensor, anchor_idx: Tensor, k: Tensor, num_anchors: int) -> AssignResult:
    """Each gt takes its k lowest-cost candidates; an anchor taken twice goes to the cheaper gt.

    Vectorised over gts: one ``topk`` with the largest k, then a mask keeps k_i per row. Ties in
    the conflict go to the lowest gt index (:func:`resolve_claims`). The conflict is settled among
    the gts that took the anchor; the YOLOX and RTMDet code take the cheapest of *all* gts for
    it, which differs only when a gt that did not take the anchor (beyond its k) is cheaper there.

    Args:
        cost: (G, M) float32 costs, +inf on padding (k_i never exceeds a row's finite entries).
        anchor_idx: (G, M) anchor indices.
        k: (G,) int64 number of positives per gt.
        num_anchors: R.
    """
    kmax = int(k.max())
    top_cost, top_pos = cost.topk(kmax, dim=1, largest=False)
    take = torch.arange(kmax, device=cost.device)[None, :] < k[:, None]
    take &= torch.isfinite(top_cost)
    rows = torch.arange(cost.shape[0], device=cost.device)[:, None].expand(-1, kmax)[take]
    anchor = anchor_idx.gather(1, top_pos)[take]
    resolved = resolve_claims(anchor, rows, top_cost[take], num_anchors, largest=False)
    return owners_to_result(resolved.owner)
