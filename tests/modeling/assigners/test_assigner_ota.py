"""OTA and SimOTA assigners, and the shared candidate / cost pieces, on hand-built cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import sigmoid_focal_loss

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.modeling.assigners.base import AnchorLayout, build_assigner
from bmc_detectron.modeling.assigners.candidates import anchors_per_location, select_candidates
from bmc_detectron.modeling.assigners.center_prior import CenterPriorAssigner, center_prior_costs
from bmc_detectron.modeling.assigners.matching import dynamic_k, topk_matching
from bmc_detectron.modeling.assigners.ota import (
    OTA,
    TransportProblem,
    column_argmax,
    log_sinkhorn,
    transport_plan,
)
from bmc_detectron.modeling.assigners.simota import SimOTA
from tests.helpers import (
    FAR,
    OpCounter,
    check_valid,
    d2_layout,
    op_count,
    random_image,
    row_layout,
    square_grid_layout,
)

INF = float("inf")
#: the default OTA / SimOTA cost settings but the centre radius
COST_SETTINGS = dict(
    max_candidates=1000, fallback_k=10, iou_weight=3.0, focal_alpha=0.25, focal_gamma=2.0
)


def two_gt_case():
    """2 gts on the 8-anchor row; each has candidates {0, 1} / {5, 6} with radius 0.6.

    Anchor 0 predicts gt 0 exactly with a confident class-0 score, anchor 5 the same for gt 1;
    anchors 1 and 6 predict a box of IoU 1/3 with low scores. Dynamic k = int(1 + 1/3) = 1 each.
    """
    gt = torch.tensor([[0.0, 0.0, 20.0, 10.0], [50.0, 0.0, 70.0, 10.0]])
    classes = torch.tensor([0, 1])
    logits = torch.full((8, 3), -4.0)
    logits[0, 0] = logits[5, 1] = 4.0
    boxes = torch.tensor([FAR] * 8)
    boxes[0], boxes[5] = gt[0], gt[1]
    boxes[1] = torch.tensor([10.0, 0.0, 30.0, 10.0])
    boxes[6] = torch.tensor([60.0, 0.0, 80.0, 10.0])
    return row_layout(), gt, classes, logits, boxes


def test_dynamic_k_is_floor_of_top_q_iou_sum_at_least_one():
    ious = torch.tensor([[1.0, 0.8, 0.5, 0.0], [0.3, 0.2, 0.0, 0.0], [0.9, 0.9, 0.9, 0.9]])
    assert dynamic_k(ious, topq=10).tolist() == [2, 1, 3]  # 2.3 -> 2, 0.5 -> 1 (min), 3.6 -> 3
    assert dynamic_k(ious, topq=2).tolist() == [1, 1, 1]  # 1.8, 0.5, 1.8


def test_classification_cost_is_the_focal_loss_summed_over_classes():
    # Reference: the focal loss of every anchor's K logits against the gt's one-hot target,
    # over a (G, R, K) tensor built here only for the check (8 anchors, 3 classes).
    layout, gt, classes, _, boxes = two_gt_case()
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)) * 3
    pc = center_prior_costs(layout, gt, classes, logits, boxes, **COST_SETTINGS, center_radius=0.6)
    target = F.one_hot(classes, 3).float()[:, None, :].expand(-1, 8, -1)
    ref = sigmoid_focal_loss(logits[None].expand(2, -1, -1), target, 0.25, 2.0).sum(-1)
    ref = ref.gather(1, pc.cand.anchor_idx) + 3.0 * -torch.log(pc.ious + 1e-8)
    torch.testing.assert_close(pc.cost, ref, atol=1e-5, rtol=1e-5)
    bg = sigmoid_focal_loss(logits, torch.zeros(8, 3), 0.25, 2.0).sum(-1)
    torch.testing.assert_close(pc.bg, bg, atol=1e-6, rtol=1e-6)


def test_sinkhorn_hand_problem_marginals_and_assignment():
    # gt 0 reaches columns {0, 1}, gt 1 columns {1, 2, 3}; supplies 1, 2, background 1.
    # The cheapest plan: col 0 <- gt 0 (0), col 2 <- gt 1 (0), col 3 <- gt 1 (0.5), col 1 <- bg
    # (1): total 1.5, against 2.2 for the runner-up (gt 1 takes col 1, background col 3).
    problem = TransportProblem(
        cost=torch.tensor([[0.0, 1.0, INF], [2.0, 0.0, 0.5]]),
        col=torch.tensor([[0, 1, 0], [1, 2, 3]]),
        cost_bg=torch.tensor([1.0, 1.0, 1.0, 0.2]),
        supply=torch.tensor([1.0, 2.0]),
        supply_bg=torch.tensor(1.0),
    )
    # Two gts competing for column 1 make this a slowly converging case: at 50 iterations the
    # decision is already right, the marginals need a few hundred iterations to reach 1e-3.
    assert column_argmax(problem, log_sinkhorn(problem, 0.1, 50)).tolist() == [0, 2, 1, 1]
    duals = log_sinkhorn(problem, eps=0.1, iters=400)
    plan, plan_bg = transport_plan(problem, duals, eps=0.1)
    plan = plan.masked_fill(torch.isinf(problem.cost), 0.0)
    columns = plan_bg.clone().index_add_(0, problem.col.flatten(), plan.flatten())
    torch.testing.assert_close(plan.sum(dim=1), problem.supply, atol=1e-3, rtol=0)
    torch.testing.assert_close(plan_bg.sum(), problem.supply_bg, atol=1e-3, rtol=0)
    torch.testing.assert_close(columns, torch.ones(4), atol=1e-3, rtol=0)
    assert column_argmax(problem, duals).tolist() == [0, 2, 1, 1]  # 2 = background


def test_ota_two_gts_eight_anchors():
    layout, gt, classes, logits, boxes = two_gt_case()
    ota = OTA(center_radius=0.6)
    problem, pool = ota.build_problem(layout, gt, classes, logits, boxes)
    assert pool.tolist() == [0, 1, 5, 6]
    assert problem.supply.tolist() == [1.0, 1.0]
    assert float(problem.supply_bg) == 2.0  # the background supplies the remaining 4 - 2 units
    duals = log_sinkhorn(problem, ota.sinkhorn_eps, ota.sinkhorn_iters)
    plan, plan_bg = transport_plan(problem, duals, ota.sinkhorn_eps)
    torch.testing.assert_close(plan.sum(dim=1), problem.supply, atol=1e-3, rtol=0)
    torch.testing.assert_close(plan_bg.sum(), torch.tensor(2.0), atol=1e-3, rtol=0)
    # the background absorbs anchors 1 and 6, the poor predictions
    torch.testing.assert_close(plan_bg, torch.tensor([0.0, 1.0, 0.0, 1.0]), atol=1e-3, rtol=0)
    result = ota(layout, gt, classes, logits, boxes)
    assert result.labels.tolist() == [1, 0, 0, 0, 0, 1, 0, 0]
    assert result.matched_idxs[[0, 5]].tolist() == [0, 1]
    simota = SimOTA(center_radius=0.6)(layout, gt, classes, logits, boxes)
    assert simota.labels.tolist() == result.labels.tolist()
    assert simota.matched_idxs[[0, 5]].tolist() == [0, 1]


def test_ota_supplies_scaled_when_gts_want_more_than_the_pool():
    # Two identical gts whose 2 candidates both predict them exactly: k = 2 each, 4 > 2 anchors.
    layout = row_layout()
    gt = torch.tensor([[0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 20.0, 10.0]])
    boxes = torch.tensor([FAR] * 8)
    boxes[0] = boxes[1] = gt[0]
    logits = torch.zeros(8, 3)
    problem, pool = OTA(center_radius=0.6).build_problem(
        layout, gt, torch.tensor([0, 1]), logits, boxes
    )
    assert pool.tolist() == [0, 1]
    assert problem.supply.tolist() == [1.0, 1.0] and float(problem.supply_bg) == 0.0


@pytest.mark.parametrize("n", [2, 3])
def test_ota_gt_with_k1_spread_over_equal_candidates_keeps_a_positive(n):
    # gt 0 = [0, 10 n] holds anchors 0..n-1 (its only candidates with radius n / 2), which all
    # predict [0, 5 n]: IoU 0.5 each, so k = floor(n / 2) = 1 and identical costs. gt 1 = [50, 70]
    # has candidates 5 (predicting it exactly: k = 1) and 6 (nothing). The background supplies
    # n units: anchor 6 and (n - 1) / n of each of gt 0's anchors, where gt 0 puts only 1 / n.
    # Rescaling each supplier's row by its maximum (the OTA authors' code) gives gt 0 its
    # candidates.
    layout = row_layout()
    gt = torch.tensor([[0.0, 0.0, 10.0 * n, 10.0], [50.0, 0.0, 70.0, 10.0]])
    boxes = torch.tensor([FAR] * 8)
    boxes[:n] = torch.tensor([0.0, 0.0, 5.0 * n, 10.0])
    boxes[5] = gt[1]
    classes, logits = torch.tensor([0, 1]), torch.zeros(8, 3)
    ota = OTA(center_radius=n / 2)
    problem, pool = ota.build_problem(layout, gt, classes, logits, boxes)
    assert pool.tolist() == [*range(n), 5, 6] and problem.supply.tolist() == [1.0, 1.0]
    duals = log_sinkhorn(problem, ota.sinkhorn_eps, ota.sinkhorn_iters)
    plan, plan_bg = transport_plan(problem, duals, ota.sinkhorn_eps)
    torch.testing.assert_close(plan[0, :n], torch.full((n,), 1 / n), atol=0.01, rtol=0)
    # the background holds at least as much of each column (n = 2: a tie up to the solver's
    # convergence), so a plain argmax over suppliers does not reliably give gt 0 anything
    assert bool((plan[0, :n] <= plan_bg[problem.col[0, :n]] + 0.01).all())
    result = ota(layout, gt, classes, logits, boxes)
    positives_of_0 = ((result.labels == 1) & (result.matched_idxs == 0)).nonzero().flatten()
    assert len(positives_of_0) >= 1 and set(positives_of_0.tolist()) <= set(range(n))
    assert result.labels[5:7].tolist() == [1, 0] and int(result.matched_idxs[5]) == 1


@pytest.mark.parametrize("seed", range(4))
def test_ota_every_gt_gets_a_positive_on_random_layouts(seed):
    # 15 gts centred on distinct points of a 16 px lattice of anchor-grid corners (so no two share
    # the 4 anchors around their centre), sides 8-24 px, overlapping. Untrained predictions
    # (logits 0, every anchor predicting itself) make each gt's 4 nearest candidates exactly
    # equal with k = 1, where a plain argmax of the plan loses every gt; then jittered boxes.
    layout = square_grid_layout(40, 8.0)
    gen = torch.Generator().manual_seed(seed)
    g = 15
    lattice = torch.randperm(18 * 18, generator=gen)[:g]
    ctr = torch.stack([lattice % 18, lattice // 18], dim=1).float() * 16 + 16
    half = torch.randint(1, 4, (g, 2), generator=gen).float() * 4
    gt = torch.cat([ctr - half, ctr + half], dim=1)
    classes = torch.randint(0, 3, (g,), generator=gen)
    logits = torch.zeros(len(layout.boxes), 3)
    jittered = layout.boxes + torch.randn(layout.boxes.shape, generator=gen) * 4
    for boxes in (layout.boxes.clone(), jittered):
        result = OTA()(layout, gt, classes, logits, boxes)
        check_valid(result, len(layout.boxes), g)
        counts = torch.bincount(result.matched_idxs[result.labels == 1], minlength=g)
        assert bool((counts >= 1).all()), counts.tolist()


def test_tiny_gt_gets_candidates_through_the_centre_radius():
    # gt [8, 3, 11, 7] contains no anchor centre (5, 15, ...). Its centre square (half-side
    # 2.5 x 10 around x = 9.5) holds anchors 0, 1, 2; anchor 0 predicts it exactly.
    layout = row_layout()
    gt = torch.tensor([[8.0, 3.0, 11.0, 7.0]])
    cand = select_candidates(layout, gt, center_radius=2.5, max_candidates=1000, fallback_k=10)
    assert cand.anchor_idx[cand.valid].tolist() == [0, 1, 2]
    assert not bool(cand.in_box.any())
    logits = torch.full((8, 2), -4.0)
    logits[0, 1] = 4.0
    boxes = torch.tensor([FAR] * 8)
    boxes[0] = gt[0]
    ota = OTA()
    problem, _ = ota.build_problem(layout, gt, torch.tensor([1]), logits, boxes)
    assert float(problem.cost.max()) < 100  # all candidates outside the box: no 1e5 penalty
    for assigner in (ota, SimOTA()):
        result = assigner(layout, gt, torch.tensor([1]), logits, boxes)
        assert result.labels.tolist() == [1, 0, 0, 0, 0, 0, 0, 0]


def test_simota_conflict_goes_to_the_lowest_cost_gt():
    # gt 0 = [0, 40], gt 1 = [20, 60] on the row. Anchor 2 (x = 25) predicts [18, 58]:
    # IoU 22/58 = 0.38 with gt 0 and 38/42 = 0.90 with gt 1, and scores both classes the same.
    # Every other anchor predicts nothing (IoU 0), so k = 1 and both gts pick anchor 2 first;
    # gt 1 is cheaper (IoU cost 3 x 0.10 against 3 x 0.97), so it keeps it and gt 0 gets none.
    layout = row_layout()
    gt = torch.tensor([[0.0, 0.0, 40.0, 10.0], [20.0, 0.0, 60.0, 10.0]])
    logits = torch.full((8, 2), -4.0)
    logits[2] = 2.0
    boxes = torch.tensor([FAR] * 8)
    boxes[2] = torch.tensor([18.0, 0.0, 58.0, 10.0])
    result = SimOTA(center_radius=10.0)(layout, gt, torch.tensor([0, 1]), logits, boxes)
    assert result.labels.tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert int(result.matched_idxs[2]) == 1


def test_topk_matching_vectorised_k_and_conflicts():
    # gt 0 takes k = 2 of anchors (3, 4, 5) -> 3 and 4; gt 1 takes k = 1 -> anchor 4 (0.5 < 0.7),
    # which it wins over gt 0; gt 2 takes k = 2 -> anchors 7 and 3, losing 3 (0.9 > 0.1).
    cost = torch.tensor([[0.1, 0.7, 3.0], [0.5, 2.0, INF], [0.9, 0.2, 5.0]])
    anchor_idx = torch.tensor([[3, 4, 5], [4, 6, 0], [3, 7, 8]])
    result = topk_matching(cost, anchor_idx, torch.tensor([2, 1, 2]), num_anchors=10)
    assert result.labels.tolist() == [0, 0, 0, 1, 1, 0, 0, 1, 0, 0]
    assert result.matched_idxs[[3, 4, 7]].tolist() == [0, 1, 2]


def test_u_shaped_cell_positives_on_its_body_not_its_centre():
    # A U-shaped cell in [20, 60]^2: the 4 anchors nearest its centre see background (low scores,
    # no box); three anchors on the body predict it with IoU 0.9, 0.8, 0.7 -> k = int(2.4) = 2.
    layout = square_grid_layout()
    gt = torch.tensor([[20.0, 20.0, 60.0, 60.0]])
    logits = torch.full((64, 2), -6.0)
    boxes = torch.tensor([FAR] * 64)
    body = {8 * 4 + 2: 0.9, 8 * 4 + 5: 0.8, 8 * 5 + 3: 0.7}  # (x, y) = (25, 45), (55, 45), (35, 55)
    for idx, iou in body.items():
        logits[idx, 0] = 3.0
        boxes[idx] = torch.tensor([20.0, 20.0, 20.0 + 40.0 * iou, 60.0])  # IoU = iou
    expected = [1 if i in (34, 37) else 0 for i in range(64)]
    for assigner in (OTA(center_radius=2.0), SimOTA(center_radius=2.0)):
        result = assigner(layout, gt, torch.tensor([0]), logits, boxes)
        assert result.labels.tolist() == expected


def test_30_heavily_overlapping_gts():
    layout = d2_layout()
    g = torch.Generator().manual_seed(1)
    gt = torch.tensor([[100.0, 100.0, 200.0, 200.0]]) + torch.rand(30, 4, generator=g) * 10
    iou = torch.stack([torch.stack([_iou(a, b) for b in gt]) for a in gt])
    assert float(iou.min()) > 0.5
    classes = torch.arange(30) % 11
    _, _, logits, boxes = random_image(layout, 30)
    # OTA's global transport gives every gt positives here; SimOTA's greedy conflicts starve
    # some of the 30 near-duplicates (each anchor goes to one gt), but still assigns some.
    for assigner, min_fg, min_gts in ((OTA(), 30, 30), (SimOTA(), 10, 10)):
        result = assigner(layout, gt, classes, logits, boxes)
        check_valid(result, len(layout.boxes), 30)
        fg = result.labels == 1
        assert int(fg.sum()) >= min_fg
        assert result.matched_idxs[fg].unique().numel() >= min_gts
        ctr = layout.centers()[fg]  # every positive is inside its gt's box or centre square
        box = gt[result.matched_idxs[fg]]
        mid, half = (box[:, :2] + box[:, 2:]) / 2, 2.5 * layout.level_strides()[fg][:, None]
        inside = ((ctr > box[:, :2]) & (ctr < box[:, 2:])).all(1)
        assert bool((inside | ((ctr - mid).abs() < half).all(1)).all())


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (torch.minimum(a[2:], b[2:]) - torch.maximum(a[:2], b[:2])).clamp(min=0).prod()
    return inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter)


def test_zero_area_predictions_give_finite_costs():
    layout = d2_layout(128)
    gt = torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 64.0, 120.0, 120.0]])
    classes = torch.tensor([3, 7])
    centres = layout.centers()
    boxes = torch.cat([centres, centres], dim=1)  # zero-area: IoU 0 with everything
    logits = torch.zeros(len(boxes), 11)
    pc = center_prior_costs(layout, gt, classes, logits, boxes, **COST_SETTINGS, center_radius=2.5)
    assert bool(torch.isfinite(pc.cost[pc.cand.valid]).all())
    assert dynamic_k(pc.ious, 10).tolist() == [1, 1]
    ota = OTA()
    problem, _ = ota.build_problem(layout, gt, classes, logits, boxes)
    duals = log_sinkhorn(problem, ota.sinkhorn_eps, ota.sinkhorn_iters)
    assert all(bool(torch.isfinite(d).all()) for d in duals)
    check_valid(ota(layout, gt, classes, logits, boxes), len(boxes), 2)
    result = SimOTA()(layout, gt, classes, logits, boxes)
    check_valid(result, len(boxes), 2)
    assert int(result.labels.sum()) == 2  # k = 1 each, and their candidates differ


def test_half_inputs_match_float32_inputs():
    layout = d2_layout(192)
    gt, classes, logits, boxes = random_image(layout, 8)
    half = (gt.half(), classes, logits.half(), boxes.half())
    full = (gt.half().float(), classes, logits.half().float(), boxes.half().float())
    for assigner in (OTA(), SimOTA()):
        a, b = assigner(layout, *half), assigner(layout, *full)
        assert torch.equal(a.labels, b.labels) and torch.equal(a.matched_idxs, b.matched_idxs)
        assert int(a.labels.sum()) > 0


def test_no_gt_gives_all_background():
    layout = row_layout()
    for assigner in (OTA(), SimOTA()):
        result = assigner(layout, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
        assert result.labels.tolist() == [0] * 8


def test_candidates_capped_to_the_nearest():
    # gt [0, 78] holds all 8 centres; capped at 2, it keeps x = 35 (0.4 strides from its centre
    # x = 39) and x = 45 (0.6).
    gt = torch.tensor([[0.0, 0.0, 78.0, 10.0]])
    cand = select_candidates(row_layout(), gt, center_radius=2.5, max_candidates=2, fallback_k=10)
    assert sorted(cand.anchor_idx[cand.valid].tolist()) == [3, 4]
    torch.testing.assert_close(cand.distance[cand.valid].sort().values, torch.tensor([0.4, 0.6]))


def test_anchors_per_location():
    layout = d2_layout(64)
    assert anchors_per_location(layout) == 9
    gt = torch.tensor([[10.0, 12.0, 40.0, 50.0]])
    cand = select_candidates(layout, gt, center_radius=2.5, max_candidates=1000, fallback_k=10)
    idx = cand.anchor_idx[cand.valid].view(-1, 9)  # whole locations: 9 consecutive anchors
    assert torch.equal(idx - idx[:, :1], torch.arange(9).expand_as(idx))
    assert torch.equal(layout.centers()[idx].amax(1), layout.centers()[idx].amin(1))
    layout = row_layout()  # 8 different centres: claiming 2 per location must fall back to 1
    assert anchors_per_location(AnchorLayout(layout.boxes, [8], 2, [10])) == 1


def test_build_from_config():
    cfg = get_bmc_cfg()
    cfg.MODEL.BMC.ASSIGNER.NAME = "OTA"
    cfg.MODEL.BMC.ASSIGNER.OTA.SINKHORN_ITERS = 7
    cfg.MODEL.BMC.ASSIGNER.SIMOTA.CENTER_RADIUS = 1.5  # each reads only its own node
    ota = build_assigner(cfg)
    assert isinstance(ota, OTA) and ota.needs_predictions and ota.sinkhorn_iters == 7
    assert ota.focal_alpha == cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA and ota.center_radius == 2.5
    cfg.MODEL.BMC.ASSIGNER.NAME = "SimOTA"
    simota = build_assigner(cfg)
    assert type(simota) is SimOTA and simota.center_radius == 1.5
    # siblings over the shared centre-prior base, not one derived from the other
    assert OTA.__bases__ == SimOTA.__bases__ == (CenterPriorAssigner,)


@pytest.mark.parametrize("assigner", [OTA(), SimOTA()], ids=["OTA", "SimOTA"])
def test_op_count_does_not_grow_with_the_number_of_gts(assigner):
    # No Python loop over gts: 4x the gts add fewer ops than gts (the few extra ops are
    # data-dependent branches, e.g. capping the candidates of a large gt).
    layout = d2_layout(320)  # 19206 anchors
    ops = {}
    for g in (20, 80):
        inputs = random_image(layout, g)
        ops[g] = op_count(assigner, layout, *inputs)
        assert int(assigner(layout, *inputs).labels.sum()) >= g
    assert ops[80] < ops[20] + (80 - 20), ops


def test_320_gts_no_gxrxk_tensor():
    # By design costs are (G, M) with M <= max_candidates and the geometry is (G, R / A); here
    # the largest tensor must stay within G x R (a (G, R, K) tensor would be K = 11 times that).
    layout = d2_layout(320)
    r, g, k = len(layout.boxes), 320, 11
    inputs = random_image(layout, g, num_classes=k)
    for assigner in (OTA(), SimOTA()):
        with OpCounter() as counter:
            result = assigner(layout, *inputs)
        assert counter.largest <= g * r
        check_valid(result, r, g)
        assert int(result.labels.sum()) >= g
