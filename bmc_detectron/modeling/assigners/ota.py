"""Optimal-transport label assignment (OTA) with a sparse log-domain Sinkhorn solver."""

from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
from detectron2.config import configurable
from torch import Tensor

from .base import ASSIGNER_REGISTRY, AnchorLayout, AssignResult, empty_result
from .simota import SimOTA


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


def column_argmax(problem: TransportProblem, duals: Duals) -> Tensor:
    """(P,) supplier with the largest mass in each column: gt index, or G for the background.

    Ties go to the lowest gt index, and to a gt rather than the background only if its mass is
    strictly larger. The column potential g is common to a column and drops out.
    """
    g_count = problem.cost.shape[0]
    score = duals.f[:, None] - problem.cost  # (G, M), -inf on padding
    valid = torch.isfinite(score)
    rows_e = valid.nonzero()[:, 0]
    cols_e, score_e = problem.col[valid], score[valid]
    bg = duals.f_bg - problem.cost_bg
    best = torch.full_like(bg, float("-inf")).scatter_reduce(0, cols_e, score_e, reduce="amax")
    win = score_e == best[cols_e]
    owner = torch.full_like(problem.cost_bg, g_count, dtype=torch.int64)
    owner.scatter_reduce_(0, cols_e[win], rows_e[win], reduce="amin")
    return torch.where(best > bg, owner, torch.full_like(owner, g_count))


@ASSIGNER_REGISTRY.register()
class OTA(SimOTA):
    """Optimal Transport Assignment (Ge et al., "OTA: Optimal Transport Assignment for Object
    Detection", CVPR 2021).

    Gts are suppliers of positive labels, a background supplier provides negative labels, and
    anchors each demand one label; the transport cost is the loss the anchor would incur:

    - candidates of a gt: anchors whose centre is inside the box or inside the centre square of
      half-side ``center_radius x stride``, at most ``max_candidates`` (the closest in units of
      stride). Only anchors that are a candidate of some gt take part; the others are background;
    - cost(gt, anchor) = focal loss of the anchor's logits for the gt's one-hot target (summed
      over the K classes, computed exactly from the gt-class logit alone) + ``iou_weight`` x
      -log(IoU(decoded box, gt) + 1e-8) + ``outside_cost`` unless the anchor centre is in both
      the box and the centre square (the ``is_in_boxes_and_center`` prior of the OTA/YOLOX code).
      A pair where the anchor is not a candidate of the gt at all has no edge (infinite cost);
      cost(background, anchor) = focal loss of predicting all K classes 0;
    - supplies: gt i gives k_i = max(1, floor(sum of its top-``dynamic_topq`` candidate IoUs)),
      the background gives the rest of the P candidates, P - sum k_i (if sum k_i > P the gt
      supplies are scaled to sum to P and the background gives 0);
    - entropic OT by log-domain Sinkhorn (``sinkhorn_eps``, ``sinkhorn_iters``) in float32; each
      anchor goes to the supplier with the largest mass in its column (background -> negative).

    Normalisation: each supplier's costs are shifted so that its smallest cost is 0, and a gt
    whose candidates all pay ``outside_cost`` (tiny gt) has it dropped. A per-supplier shift
    leaves the entropic OT plan unchanged (it is absorbed by the supplier's potential), and keeps
    the log-domain numbers of order cost / eps instead of outside_cost / eps, where float32 would
    lose the differences between candidates. Costs are not rescaled: eps = 0.1 is used, as in the
    paper, relative to losses of order 1.

    The solver is sparse: memory O(G x M + P), time O((G x M + P) x iters); no (G, R) cost and
    no (G, R, K) tensor is built.

    Candidates, costs, dynamic k, settings and input checks are shared with :class:`~.simota.SimOTA`
    (the base class: :meth:`~.simota.SimOTA.candidate_costs`); OTA replaces its top-k step by
    :meth:`match`.

    Args (of ``assign``): pred_logits (R, K) detached logits, pred_boxes (R, 4) detached decoded
    XYXY boxes, gt_boxes (G, 4), gt_classes (G,).
    """

    @configurable
    def __init__(self, *, sinkhorn_eps: float = 0.1, sinkhorn_iters: int = 50, **kwargs):
        """
        Args:
            sinkhorn_eps: entropic regularisation.
            sinkhorn_iters: Sinkhorn iterations (row then column rescaling).
            kwargs: iou_weight, center_radius, dynamic_topq, outside_cost, max_candidates,
                focal_alpha, focal_gamma, as in :class:`~.simota.SimOTA` (same defaults).
        """
        super().__init__(**kwargs)
        self.sinkhorn_eps = sinkhorn_eps
        self.sinkhorn_iters = sinkhorn_iters

    @classmethod
    def from_config(cls, cfg):
        a = cfg.MODEL.BMC.ASSIGNER
        return {
            **super().from_config(cfg),
            "sinkhorn_eps": a.SINKHORN_EPS,
            "sinkhorn_iters": a.SINKHORN_ITERS,
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

        Args: float32 gt_boxes (G, 4), gt_classes (G,), pred_logits (R, K), pred_boxes (R, 4).
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
        """Sinkhorn on :meth:`build_problem`, then each pooled anchor to its column's argmax.

        Args: float32 gt_boxes (G, 4) with G >= 1, gt_classes (G,), pred_logits (R, K),
        pred_boxes (R, 4).
        """
        problem, pool = self.build_problem(anchors, gt_boxes, gt_classes, pred_logits, pred_boxes)
        duals = log_sinkhorn(problem, self.sinkhorn_eps, self.sinkhorn_iters)
        owner = column_argmax(problem, duals)
        fg = owner < len(gt_boxes)
        result = empty_result(len(anchors.boxes), anchors.boxes.device)
        result.matched_idxs[pool[fg]] = owner[fg]
        result.labels[pool[fg]] = 1
        return result
