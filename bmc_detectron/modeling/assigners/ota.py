"""Optimal-transport label assignment (OTA) with a sparse log-domain Sinkhorn solver."""

from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
from detectron2.config import configurable
from torch import Tensor

from bmc_detectron.modeling.assigners.base import (
    ASSIGNER_REGISTRY,
    AnchorLayout,
    AssignResult,
    empty_result,
)
from bmc_detectron.modeling.assigners.center_prior import CenterPriorAssigner
from bmc_detectron.modeling.assigners.matching import resolve_claims


class TransportProblem(NamedTuple):
    """A sparse transport problem: G gt suppliers, one background supplier, P anchor demanders.

    Gt i can only supply its own candidates (M per row, padding at +inf cost); the background
    supplier can supply every one of the P anchors. Every anchor demands one unit.

    Attributes:
        cost: (G, M) float32 cost of gt i -> its m-th candidate, +inf on padding.
        col: (G, M) int64 column (0..P-1) of each candidate, 0 on padding.
        cost_bg: (P,) float32 cost of background -> anchor.
        supply: (G,) float32 units each gt supplies (its dynamic k).
        supply_bg: () float32 units the background supplies (P - sum of supply, >= 0).
    """

    cost: Tensor
    col: Tensor
    cost_bg: Tensor
    supply: Tensor
    supply_bg: Tensor


class Duals(NamedTuple):
    """Log-domain Sinkhorn potentials: plan[i, j] = exp((f[i] + g[j] - cost[i, j]) / eps)."""

    f: Tensor  # (G,)
    f_bg: Tensor  # ()
    g: Tensor  # (P,)


_EXP_FLOOR = -80.0  # exp(-80) ~ 2e-35: smaller terms are dropped (denormals are ~10x slower)


def _logsumexp_(x: Tensor, dim: int) -> Tensor:
    """``torch.logsumexp`` along ``dim``, overwriting ``x``; terms below exp(-80) are dropped.

    Each slice must hold a finite entry. Flushing the tiny terms avoids float32 denormals, which
    are an order of magnitude slower on CPUs and change no decision.
    """
    m = x.amax(dim=dim, keepdim=True)
    return m.squeeze(dim) + x.sub_(m).clamp_(min=_EXP_FLOOR).exp_().sum(dim=dim).log_()


def _column_logsumexp_(scores: Tensor, col: Tensor, bg_scores: Tensor) -> Tensor:
    """(P,) log-sum-exp per column of the (G, M) gt scores at ``col`` and the (P,) bg scores.

    Scatter-based, O(G x M + P): a column can be shared by many gts (coarse levels, where the
    centre square covers most of the image), so a dense (P, gts per column) table would not be.
    Padding scores must be -inf (they add at most exp(-80) each). Overwrites ``scores``.
    """
    flat_col, flat = col.flatten(), scores.view(-1)
    m = bg_scores.scatter_reduce(0, flat_col, flat, reduce="amax", include_self=True)
    total = (bg_scores - m).clamp_(min=_EXP_FLOOR).exp_()
    flat.sub_(m.index_select(0, flat_col)).clamp_(min=_EXP_FLOOR).exp_()
    return total.scatter_add_(0, flat_col, flat).log_().add_(m)


def log_sinkhorn(problem: TransportProblem, eps: float, iters: int) -> Duals:
    """Entropic OT by log-domain Sinkhorn on the sparse problem (no_grad, float32).

    Each iteration rescales the suppliers' rows to their supplies, then the anchors' columns to
    one unit each, so the returned plan meets the demands exactly and the supplies up to the
    solver's convergence. Runs in O((G x M + P) x iters) time and O(G x M + P) memory. Inside,
    costs and potentials are in units of eps.
    """
    cost, cost_bg = problem.cost / eps, problem.cost_bg / eps
    col, flat_col = problem.col, problem.col.flatten()
    log_mu = torch.log(problem.supply + 1e-8)
    log_mu_bg = torch.log(problem.supply_bg + 1e-8)
    g = cost.new_zeros(cost_bg.shape[0])
    f, f_bg = cost.new_zeros(cost.shape[0]), cost.new_zeros(())
    for _ in range(iters):
        f = log_mu - _logsumexp_(g.index_select(0, flat_col).view_as(col) - cost, dim=1)
        f_bg = log_mu_bg - _logsumexp_(g - cost_bg, dim=0)
        g = -_column_logsumexp_(f[:, None] - cost, col, f_bg - cost_bg)
    return Duals(f * eps, f_bg * eps, g * eps)


def transport_plan(problem: TransportProblem, duals: Duals, eps: float) -> Tuple[Tensor, Tensor]:
    """The plan of ``duals``: (G, M) gt -> candidate mass (0 on padding), (P,) background mass."""
    plan = torch.exp((duals.f[:, None] + duals.g[problem.col] - problem.cost) / eps)
    plan_bg = torch.exp((duals.f_bg + duals.g - problem.cost_bg) / eps)
    return plan, plan_bg


def rescaled_log_plan(problem: TransportProblem, duals: Duals) -> Tuple[Tensor, Tensor]:
    """Log of the plan with every supplier's row divided by that row's maximum, times eps.

    (G, M) for the gts (-inf on padding) and (P,) for the background; every row's maximum is
    exactly 0 (its largest entry minus itself). A row's potential f is common to the row and
    drops out.
    """
    score = duals.g[problem.col] - problem.cost  # (G, M), -inf on padding
    lowest = torch.finfo(score.dtype).min  # a row without any edge stays -inf, not NaN
    score = score - score.amax(dim=1, keepdim=True).clamp(min=lowest)
    score_bg = duals.g - problem.cost_bg
    return score, score_bg - score_bg.amax()


def column_argmax(problem: TransportProblem, duals: Duals) -> Tensor:
    """(P,) supplier of each column: gt index, or G for the background.

    The supplier with the largest mass in the column after each supplier's row of the plan is
    divided by its maximum (:func:`rescaled_log_plan`), as in the OTA authors' code: the anchor
    where a gt puts most of its mass scores 1 for that gt, so a gt whose mass is spread thin
    (k_i = 1 over several near-equal candidates) still wins it. Ties go to the lowest gt index
    (:func:`~.matching.resolve_claims`), and between a gt and the background to the gt (the
    authors' argmax over rows, background last, returns the first maximum).
    """
    num_gt = problem.cost.shape[0]
    score, score_bg = rescaled_log_plan(problem, duals)
    valid = torch.isfinite(score)
    rows = valid.nonzero()[:, 0]
    resolved = resolve_claims(problem.col[valid], rows, score[valid], len(score_bg), largest=True)
    gt_wins = (resolved.owner >= 0) & (resolved.best >= score_bg)
    return torch.where(gt_wins, resolved.owner, torch.full_like(resolved.owner, num_gt))


@ASSIGNER_REGISTRY.register()
class OTA(CenterPriorAssigner):
    """Optimal Transport Assignment (Ge et al., "OTA: Optimal Transport Assignment for Object
    Detection", CVPR 2021).

    Gts are suppliers of positive labels, a background supplier provides negative labels, and
    anchors each demand one label; the transport cost is the loss the anchor would incur.
    Candidates, the focal + ``iou_weight`` x -log(IoU) cost and the dynamic k are those of
    :class:`~.center_prior.CenterPriorAssigner` (shared with its sibling
    :class:`~.simota.SimOTA`); this class does the transport:

    - only anchors that are a candidate of some gt take part (the pool, P anchors); the others
      are background. A (gt, anchor) pair where the anchor is not a candidate of the gt has no
      edge (infinite cost); pairs outside the box-and-centre prior pay ``outside_cost``;
      cost(background, anchor) = focal loss of predicting all K classes 0;
    - supplies: gt i gives its dynamic k_i, the background the rest, P - sum k_i (if
      sum k_i > P the gt supplies are scaled to sum to P and the background gives 0);
    - entropic OT by log-domain Sinkhorn (``sinkhorn_eps``, ``sinkhorn_iters``) in float32;
    - assignment (:func:`column_argmax`): each supplier's row of the plan is divided by its
      maximum, then each anchor goes to the supplier with the largest rescaled mass
      (background -> negative). This is the step of the authors' code (github
      Megvii-BaseDetection/OTA); a plain argmax of the plan loses any gt whose unit of mass
      (k_i = 1) is spread over several near-equal candidates, since the background then holds
      most of each of their columns. With the rescaling a gt wins the anchor where its mass
      peaks, unless another gt peaks there too (ties: lowest gt index).

    Normalisation: each supplier's costs are shifted so that its smallest cost is 0, and a gt
    whose candidates all pay ``outside_cost`` (tiny gt) has it dropped. A per-supplier shift
    leaves the entropic OT plan unchanged (it is absorbed by the supplier's potential), and keeps
    the log-domain numbers of order cost / eps instead of outside_cost / eps, where float32 would
    lose the differences between candidates. Costs are not rescaled: eps = 0.1 is used, as in the
    paper, relative to losses of order 1.

    The solver is sparse: memory O(G x M + P), time O((G x M + P) x iters); no (G, R) cost and
    no (G, R, K) tensor is built. Built from ``MODEL.BMC.ASSIGNER.OTA`` (and the focal loss's
    ``MODEL.RETINANET`` alpha / gamma), or directly from keyword arguments.
    """

    @configurable
    def __init__(
        self,
        *,
        sinkhorn_eps: float = 0.1,
        sinkhorn_iters: int = 50,
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
            sinkhorn_eps: entropic regularisation.
            sinkhorn_iters: Sinkhorn iterations (row then column rescaling).
            iou_weight, center_radius, dynamic_topq, fallback_k, outside_cost, max_candidates,
                focal_alpha, focal_gamma: see :class:`~.center_prior.CenterPriorAssigner`.
        """
        super().__init__(
            iou_weight=iou_weight,
            center_radius=center_radius,
            dynamic_topq=dynamic_topq,
            fallback_k=fallback_k,
            outside_cost=outside_cost,
            max_candidates=max_candidates,
            focal_alpha=focal_alpha,
            focal_gamma=focal_gamma,
        )
        self.sinkhorn_eps = sinkhorn_eps
        self.sinkhorn_iters = sinkhorn_iters

    @classmethod
    def from_config(cls, cfg) -> dict:
        node = cfg.MODEL.BMC.ASSIGNER.OTA
        return {
            "sinkhorn_eps": node.SINKHORN_EPS,
            "sinkhorn_iters": node.SINKHORN_ITERS,
            "iou_weight": node.IOU_WEIGHT,
            "center_radius": node.CENTER_RADIUS,
            "dynamic_topq": node.DYNAMIC_TOPQ,
            "fallback_k": node.FALLBACK_K,
            "outside_cost": node.OUTSIDE_COST,
            "max_candidates": node.MAX_CANDIDATES,
            "focal_alpha": cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            "focal_gamma": cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
        }

    def build_problem(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> Tuple[TransportProblem, Tensor]:
        """The normalised transport problem of one image and its (P,) pool of anchor indices.

        Args:
            anchors: the image's R anchors.
            gt_boxes: (G, 4) float32 gt boxes, G >= 1.
            gt_classes: (G,) int64 classes.
            pred_logits: (R, K) float32 logits.
            pred_boxes: (R, 4) float32 decoded boxes.
        """
        pc, k = self.candidate_costs(anchors, gt_boxes, gt_classes, pred_logits, pred_boxes)
        valid = pc.cand.valid
        pool, inverse = torch.unique(pc.cand.anchor_idx[valid], return_inverse=True)
        col = torch.zeros_like(pc.cand.anchor_idx)
        col[valid] = inverse
        has_inside = (valid & ~pc.outside).any(dim=1, keepdim=True)
        cost = pc.cost + self.outside_cost * (pc.outside & has_inside).float()
        cost = cost - cost.amin(dim=1, keepdim=True)
        cost_bg = pc.bg[pool]
        cost_bg = cost_bg - cost_bg.amin()
        supply = k.float()
        num = float(len(pool))
        if float(supply.sum()) > num:
            supply = supply * (num / supply.sum())
        supply_bg = (num - supply.sum()).clamp(min=0)
        return TransportProblem(cost, col, cost_bg, supply, supply_bg), pool

    def match(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> AssignResult:
        """Sinkhorn on :meth:`build_problem`, then each pooled anchor to :func:`column_argmax`.

        Args:
            anchors: the image's R anchors.
            gt_boxes: (G, 4) float32 gt boxes, G >= 1.
            gt_classes: (G,) int64 classes.
            pred_logits: (R, K) float32 logits.
            pred_boxes: (R, 4) float32 decoded boxes.
        """
        problem, pool = self.build_problem(anchors, gt_boxes, gt_classes, pred_logits, pred_boxes)
        duals = log_sinkhorn(problem, self.sinkhorn_eps, self.sinkhorn_iters)
        owner = column_argmax(problem, duals)
        fg = owner < len(gt_boxes)
        result = empty_result(len(anchors.boxes), anchors.boxes.device)
        result.matched_idxs[pool[fg]] = owner[fg]
        result.labels[pool[fg]] = 1
        return result
