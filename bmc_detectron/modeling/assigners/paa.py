"""PAA: probabilistic anchor assignment."""

from __future__ import annotations

import itertools
import math
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import Tensor

from bmc_detectron.modeling.assigners.base import (
    ASSIGNER_REGISTRY,
    AnchorLayout,
    AssignResult,
    PredictionAssigner,
    paired_iou,
)
from bmc_detectron.modeling.assigners.chunked_iou import chunked_max_iou, paired_iou_block
from bmc_detectron.modeling.assigners.matching import resolve_by_max_iou

#: floor added to every fitted variance (sklearn's ``reg_covar`` default), so that a component
#: fitted to identical scores keeps a finite density.
VARIANCE_FLOOR = 1e-6

SEPARATIONS = ("peak", "boundary")


class GMM1D(NamedTuple):
    """A two-component 1-D Gaussian mixture per row (gt), as fitted by :func:`fit_gmm_1d`."""

    means: Tensor  # (G, 2)
    variances: Tensor  # (G, 2)
    weights: Tensor  # (G, 2)
    resp: Tensor  # (G, C, 2) posterior of each component; 0 at padded entries


def _masked_min_max(x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """(G,) min and max of the valid entries of each row; 0 for rows without any."""
    lo = torch.where(mask, x, torch.full_like(x, math.inf)).amin(dim=1)
    hi = torch.where(mask, x, torch.full_like(x, -math.inf)).amax(dim=1)
    has_any = mask.any(dim=1)
    zero = torch.zeros_like(lo)
    return torch.where(has_any, lo, zero), torch.where(has_any, hi, zero)


def _e_step(x: Tensor, mask: Tensor, means: Tensor, variances: Tensor, weights: Tensor) -> Tensor:
    """(G, C, 2) component posteriors, computed in the log domain; 0 at padded entries."""
    # log(w_k N(x | mu_k, var_k)) up to a constant shared by both components
    log_w = weights.clamp(min=1e-12).log() - 0.5 * variances.log()  # (G, 2)
    log_p0 = log_w[:, :1] - (x - means[:, :1]).square() / (2 * variances[:, :1])  # (G, C)
    log_p1 = log_w[:, 1:] - (x - means[:, 1:]).square() / (2 * variances[:, 1:])
    valid = mask.to(x.dtype)
    resp0 = torch.sigmoid(log_p0 - log_p1) * valid  # two-way softmax
    return torch.stack([resp0, valid - resp0], dim=-1)


def _m_step(
    x: Tensor, resp: Tensor, count: Tensor, means: Tensor, variances: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """New (means, variances, weights); a component with no responsibility keeps its old mean and
    variance (its weight becomes 0)."""
    nk = resp.sum(dim=1)  # (G, 2)
    alive = nk > 1e-8
    safe_nk = nk.clamp(min=1e-8)
    new_means = (resp * x[..., None]).sum(dim=1) / safe_nk
    means = torch.where(alive, new_means, means)
    sq = (x[..., None] - means[:, None, :]).square()
    new_vars = (resp * sq).sum(dim=1) / safe_nk + VARIANCE_FLOOR
    variances = torch.where(alive, new_vars, variances)
    return means, variances, nk / count[:, None]


def fit_gmm_1d(x: Tensor, mask: Tensor, num_iters: int) -> GMM1D:
    """Fit a two-component 1-D Gaussian mixture to every row at once with EM.

    Initialisation as in the PAA paper: the two means at the row's min and max score, equal
    weights. The initial variances are the row's score variance (the official code uses 1, which
    suits only scores of order 1; the data variance makes the fit scale-free). Each component's
    variance is floored at :data:`VARIANCE_FLOOR`. Degenerate rows are safe: with one valid entry or
    identical scores both components coincide and every posterior is 0.5; rows without valid
    entries give finite parameters and all-zero posteriors.

    Args:
        x: (G, C) float32 scores, padded arbitrarily where ``mask`` is False.
        mask: (G, C) bool, the valid entries.
        num_iters: EM iterations (E then M); a final E-step gives ``resp``.

    Returns:
        :class:`GMM1D` with component 0 started at the min, 1 at the max.
    """
    x = torch.where(mask, x, torch.zeros_like(x))
    count = mask.sum(dim=1).clamp(min=1).to(x.dtype)  # (G,)
    lo, hi = _masked_min_max(x, mask)
    mean = x.sum(dim=1) / count
    var0 = (((x - mean[:, None]).square() * mask).sum(dim=1) / count).clamp(min=VARIANCE_FLOOR)
    means = torch.stack([lo, hi], dim=1)
    variances = torch.stack([var0, var0], dim=1)
    weights = torch.full_like(means, 0.5)
    for _ in range(num_iters):
        resp = _e_step(x, mask, means, variances, weights)
        means, variances, weights = _m_step(x, resp, count, means, variances)
    return GMM1D(means, variances, weights, _e_step(x, mask, means, variances, weights))


def separate_positives(x: Tensor, mask: Tensor, gmm: GMM1D, separation: str = "peak") -> Tensor:
    """Positive candidates of each row from its fitted mixture (scores are losses: lower is
    better, so the positive component is the one with the lower mean).

    - ``"peak"`` (the default; the scheme the official code uses, marked there as the paper's
      Fig. 3(c)): candidates whose score is at most the centre (mean) of the low-loss component,
      with a 1e-6 relative tolerance for float rounding; every other candidate is negative. The
      official code locates the centre as the low-component sample of highest mixture density;
      we use the fitted mean itself.
    - ``"boundary"``: candidates on the low-loss side of the posterior decision boundary
      (posterior of the low-loss component >= 0.5), i.e. the whole low-loss cluster.

    Guards: a row whose valid scores are all equal (within 1e-6 relative) has no evidence to split
    it, so all its candidates are positive; every row with a valid entry keeps at least its
    lowest-score candidate.

    Args:
        x: (G, C) scores.
        mask: (G, C) bool valid entries.
        gmm: the mixture fitted to ``x`` and ``mask``.
        separation: ``"peak"`` or ``"boundary"``.

    Returns:
        (G, C) bool, False at padded entries.
    """
    low = gmm.means.argmin(dim=1, keepdim=True)  # (G, 1)
    if separation == "peak":
        mu_low = gmm.means.gather(1, low)  # (G, 1)
        pos = x <= mu_low + 1e-6 * mu_low.abs().clamp(min=1)  # tolerate float rounding
    elif separation == "boundary":
        pos = gmm.resp.gather(2, low[:, :, None].expand(-1, x.shape[1], 1)).squeeze(2) >= 0.5
    else:
        raise ValueError(f"PAA separation must be one of {SEPARATIONS}, got {separation!r}")
    lo, hi = _masked_min_max(x, mask)
    flat = (hi - lo) <= 1e-6 * torch.maximum(hi.abs(), torch.ones_like(hi))
    pos = pos | flat[:, None]
    best = torch.where(mask, x, torch.full_like(x, math.inf)).argmin(dim=1, keepdim=True)
    pos = pos.scatter(1, best, True)
    return pos & mask


def _exclusive_cumsum(values: List[int]) -> List[int]:
    """[0, v0, v0 + v1, ...] without the total."""
    return [0, *itertools.accumulate(values)][:-1]


def _sort_groups_by_iou(group: Tensor, iou: Tensor) -> Tensor:
    """(P,) permutation sorting entries by ``group`` (P,) int64, then decreasing ``iou`` (P,) > 0,
    then position (the sorts are stable)."""
    order = iou.sort(descending=True, stable=True).indices
    return order[group[order].sort(stable=True).indices]


def owned_topk_candidates(
    owner: Tensor, owner_iou: Tensor, num_gt: int, num_per_level: List[int], topk: int
) -> Tuple[Tensor, Tensor]:
    """PAA's pre-assignment: per level, each gt's ``topk`` highest-IoU anchors among those whose
    max-IoU gt it is (with IoU > 0). An anchor is therefore a candidate of at most one gt.

    Computed from the per-anchor owner alone (no (G, R) tensor): the anchors with owner IoU > 0
    are sorted by (owner, level, -IoU) with a stable sort, and each keeps its rank inside its
    (owner, level) group. Equal IoUs are ranked by anchor index.

    Args:
        owner: (R,) int64 max-IoU gt of each anchor (lowest gt index on ties).
        owner_iou: (R,) IoU of each anchor with its owner.
        num_gt: G.
        num_per_level: anchors per level, summing to R.
        topk: candidates per level and gt.

    Returns:
        cand (G, C) int64 anchor indices and valid (G, C) bool, C = sum over non-empty levels of
        min(topk, level size), levels in order and candidates by decreasing IoU inside a level;
        valid is False (and cand the level's first anchor) where a gt owns fewer than ``topk``
        anchors with IoU > 0 on a level.
    """
    device, num_levels = owner.device, len(num_per_level)
    ks = [min(topk, count) for count in num_per_level]
    col_offset = torch.as_tensor(_exclusive_cumsum(ks), device=device)
    levels = torch.arange(num_levels, device=device)
    level_of_col = torch.repeat_interleave(levels, torch.as_tensor(ks, device=device))  # (C,)
    level_start = torch.as_tensor(_exclusive_cumsum(num_per_level), device=device)
    cand = level_start[level_of_col].expand(num_gt, -1).clone()  # (G, C)
    valid = torch.zeros_like(cand, dtype=torch.bool)
    level = torch.repeat_interleave(levels, torch.as_tensor(num_per_level, device=device))  # (R,)

    idx = (owner_iou > 0).nonzero().flatten()  # (P,) anchors with an owner, ascending
    group = owner[idx] * num_levels + level[idx]  # (P,) (owner, level) group
    order = _sort_groups_by_iou(group, owner_iou[idx])
    idx, group = idx[order], group[order]
    sizes = torch.bincount(group, minlength=num_gt * num_levels)
    rank = torch.arange(len(idx), device=device) - (sizes.cumsum(0) - sizes)[group]
    keep = rank < topk  # also < the level size
    gt, lvl = group[keep] // num_levels, group[keep] % num_levels
    col = col_offset[lvl] + rank[keep]
    cand[gt, col] = idx[keep]
    valid[gt, col] = True
    return cand, valid


@ASSIGNER_REGISTRY.register()
class PAA(PredictionAssigner):
    """Probabilistic Anchor Assignment (Kim & Lee, "Probabilistic Anchor Assignment with IoU
    Prediction for Object Detection", ECCV 2020).

    For each gt:

    1. candidates (:func:`owned_topk_candidates`): on every level, the ``topk`` anchors of highest
       IoU with the gt among the anchors whose max-IoU gt it is (IoU > 0). The official code
       pre-assigns with IoU >= 0.1 and ranks by score instead; ranking by IoU keeps the candidate
       set independent of the predictions;
    2. each candidate's score is a loss (lower is better; the paper's score is its negative, which
       only flips the order): sigmoid focal loss of the detached gt-class logit (the positive term
       only: the paper's S_cls is the gt-class probability; the official code adds the other
       classes' negative terms) + ``iou_weight`` x (1 - IoU(decoded predicted box, gt));
    3. a two-component 1-D Gaussian mixture is fitted to the scores of every gt at once
       (:func:`fit_gmm_1d`, padded and masked, in float32);
    4. :func:`separate_positives` labels the low-loss side positive; the other candidates and all
       anchors outside every candidate set are negative (no ignore band).

    Every gt with at least one candidate gets at least one positive. Since an anchor is a
    candidate of its max-IoU gt only, an anchor is never positive for two gts, so it always goes to
    its highest-IoU gt. A gt that is no anchor's max-IoU gt (e.g. an exact duplicate of an earlier
    gt) has no candidate and no positive, as in the official code. There is no centre test, so a
    tiny gt (smaller than the stride) still gets a positive as long as an anchor overlapping it has
    it as max-IoU gt. ``matched_idxs`` is 0 for negatives.

    Built from ``MODEL.BMC.ASSIGNER.PAA`` (and the focal loss's ``MODEL.RETINANET`` alpha / gamma),
    or directly from keyword arguments.
    """

    #: elements of one (G, chunk) IoU block (:mod:`.chunked_iou`); None: the module default
    chunk_elements: Optional[int] = None

    @configurable
    def __init__(
        self,
        *,
        topk: int = 9,
        em_iters: int = 10,
        iou_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        separation: str = "peak",
    ) -> None:
        """
        Args:
            topk: candidates per level and gt.
            em_iters: EM iterations of the mixture fit.
            iou_weight: weight of the IoU loss in the score.
            focal_alpha: alpha of the sigmoid focal loss in the score.
            focal_gamma: gamma of the sigmoid focal loss in the score.
            separation: ``"peak"`` (official code's) or ``"boundary"``; see
                :func:`separate_positives`.
        """
        if topk < 1 or em_iters < 0:
            raise ValueError(f"PAA needs topk >= 1 and em_iters >= 0, got {topk}, {em_iters}")
        if separation not in SEPARATIONS:
            raise ValueError(f"PAA separation must be one of {SEPARATIONS}, got {separation!r}")
        self.topk = topk
        self.em_iters = em_iters
        self.iou_weight = iou_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.separation = separation

    @classmethod
    def from_config(cls, cfg) -> dict:
        node = cfg.MODEL.BMC.ASSIGNER.PAA
        return {
            "topk": node.TOPK,
            "em_iters": node.EM_ITERS,
            "iou_weight": node.IOU_WEIGHT,
            "focal_alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "focal_gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
            "separation": node.SEPARATION,
        }

    def candidate_scores(
        self, cand: Tensor, gt_boxes: Tensor, gt_classes: Tensor, logits: Tensor, boxes: Tensor
    ) -> Tensor:
        """Loss-like score of every (gt, candidate) pair.

        Args:
            cand: (G, C) anchor indices.
            gt_boxes: (G, 4) float32 gt boxes.
            gt_classes: (G,) int64 gt classes.
            logits: (R, K) float32 detached logits.
            boxes: (R, 4) float32 detached decoded boxes.

        Returns:
            (G, C) focal loss of the gt-class logit + iou_weight x (1 - IoU(pred box, gt)).
        """
        logit = logits[cand, gt_classes[:, None].expand_as(cand)]  # (G, C), gathered, not (G,C,K)
        prob = logit.sigmoid()
        focal = self.focal_alpha * (1 - prob).pow(self.focal_gamma) * F.softplus(-logit)
        iou = paired_iou(boxes[cand], gt_boxes[:, None])  # (G, C)
        return focal + self.iou_weight * (1 - iou)

    def match(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> AssignResult:
        """Candidates by IoU, per-gt GMM on their scores (see :class:`PredictionAssigner`)."""
        num_anchors, device = len(anchors.boxes), anchors.boxes.device
        maxima = chunked_max_iou(
            gt_boxes, anchors.boxes.float(), paired_iou_block, self.chunk_elements
        )
        owner, owner_iou = maxima.anchor_argmax, maxima.anchor_max  # (R,), (R,)
        cand, valid = owned_topk_candidates(
            owner, owner_iou, len(gt_boxes), anchors.num_per_level, self.topk
        )
        scores = self.candidate_scores(cand, gt_boxes, gt_classes, pred_logits, pred_boxes)
        gmm = fit_gmm_1d(scores, valid, self.em_iters)
        pos = separate_positives(scores, valid, gmm, self.separation)  # (G, C)
        gt_idx = torch.arange(len(gt_boxes), device=device)[:, None].expand_as(cand)
        cand_ious = owner_iou[cand]  # the (gt, candidate) IoU wherever valid
        return resolve_by_max_iou(cand[pos], gt_idx[pos], cand_ious[pos], num_anchors)
