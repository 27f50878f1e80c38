"""DynamicSoft (RTMDet) assigner on hand-built cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.modeling.assigners.base import build_assigner
from bmc_detectron.modeling.assigners.candidates import select_candidates
from bmc_detectron.modeling.assigners.dynamic_soft import DynamicSoft, soft_cls_cost
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


def test_two_gts_eight_anchors():
    # gt 0 holds anchor centres 0, 1; gt 1 holds 5, 6. Anchors 0 and 5 predict their gt exactly
    # and confidently, 1 and 6 with IoU 1/3 and low scores: k = int(1 + 1/3) = 1 each.
    gt = torch.tensor([[0.0, 0.0, 20.0, 10.0], [50.0, 0.0, 70.0, 10.0]])
    logits = torch.full((8, 3), -4.0)
    logits[0, 0] = logits[5, 1] = 4.0
    boxes = torch.tensor([FAR] * 8)
    boxes[0], boxes[5] = gt[0], gt[1]
    boxes[1] = torch.tensor([10.0, 0.0, 30.0, 10.0])
    boxes[6] = torch.tensor([60.0, 0.0, 80.0, 10.0])
    result = DynamicSoft()(row_layout(), gt, torch.tensor([0, 1]), logits, boxes)
    assert result.labels.tolist() == [1, 0, 0, 0, 0, 1, 0, 0]
    assert result.matched_idxs[[0, 5]].tolist() == [0, 1]


def test_soft_cls_cost_equals_the_sum_over_classes():
    # Reference: RTMDet's cost over a full (G, M, K) tensor, built here only for the check.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g) * 3  # 6 anchors, 5 classes
    classes = torch.tensor([1, 4])
    ious = torch.rand(2, 6, generator=g)
    target = F.one_hot(classes, 5).float()[:, None, :] * ious[..., None]  # (G, M, K)
    full = logits[None].expand(2, -1, -1)
    ref = F.binary_cross_entropy_with_logits(full, target, reduction="none")
    ref = (ref * (target - full.sigmoid()).pow(2)).sum(-1)
    all_negative = (F.softplus(logits) * logits.sigmoid().pow(2)).sum(1)
    ours = soft_cls_cost(logits.T[classes], ious, all_negative.expand(2, -1))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_fallback_to_the_nearest_anchors_for_a_gt_without_anchor_centre():
    # gt [9, 2, 13, 8] (centre x = 11) contains none of x = 5, 15, ...; its nearest anchors by
    # distance / stride are 1 (0.4), 0 (0.6), 2 (1.4), 3 (2.4), ...
    layout = row_layout()
    gt = torch.tensor([[9.0, 2.0, 13.0, 8.0]])
    cand = select_candidates(layout, gt, center_radius=None, max_candidates=1000, fallback_k=3)
    assert sorted(cand.anchor_idx[cand.valid].tolist()) == [0, 1, 2]
    # Every anchor predicts the same box of IoU 0.3 with the same scores: k = int(8 x 0.3) = 2
    # (the fallback takes fallback_k = 10 >= 8 anchors) and only the centre prior differs.
    boxes = torch.tensor([[9.0, 2.0, 10.2, 8.0]] * 8)
    result = DynamicSoft()(layout, gt, torch.tensor([0]), torch.zeros(8, 2), boxes)
    assert result.labels.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "topq, expected", [(13, [1, 5, 12]), (10, [1, 4, 9])], ids=["rtmdet-13", "10"]
)
def test_dynamic_k_follows_prediction_quality(topq, expected):
    # gt [10, 70]^2 holds 6 x 6 anchor centres, all predicting the same box of IoU q:
    # k = int(topq x q) positives, whatever the number of candidates (13: the default, RTMDet's).
    layout = square_grid_layout()
    gt = torch.tensor([[10.0, 10.0, 70.0, 70.0]])
    logits = torch.zeros(64, 2)
    for q, k in zip((0.15, 0.45, 0.95), expected):
        boxes = torch.tensor([[10.0, 10.0, 10.0 + 60.0 * q, 70.0]] * 64)
        result = DynamicSoft(dynamic_topq=topq)(layout, gt, torch.tensor([1]), logits, boxes)
        assert int(result.labels.sum()) == k


def test_conflict_goes_to_the_lowest_cost_gt():
    # gt 0 = [0, 40], gt 1 = [20, 60] share anchors 2 and 3 (x = 25, 35). Anchor 2 predicts
    # [18, 58]: IoU 0.38 with gt 0, 0.90 with gt 1; the others predict nothing, so k = 1 and
    # both gts pick anchor 2 (their only IoU > 0); gt 1 is cheaper and keeps it.
    gt = torch.tensor([[0.0, 0.0, 40.0, 10.0], [20.0, 0.0, 60.0, 10.0]])
    boxes = torch.tensor([FAR] * 8)
    boxes[2] = torch.tensor([18.0, 0.0, 58.0, 10.0])
    result = DynamicSoft()(row_layout(), gt, torch.tensor([0, 1]), torch.zeros(8, 2), boxes)
    assert result.labels.tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert int(result.matched_idxs[2]) == 1


def test_u_shaped_cell_positives_on_its_body_not_its_centre():
    # A U-shaped cell in [20, 60]^2: the 4 anchors nearest its centre see background (low scores,
    # no box); three body anchors predict it with IoU 0.9, 0.8, 0.7 -> k = int(2.4) = 2. The
    # three lie at the same distance from the centre, so the two best predictions win.
    layout = square_grid_layout()
    gt = torch.tensor([[20.0, 20.0, 60.0, 60.0]])
    logits = torch.full((64, 2), -6.0)
    boxes = torch.tensor([FAR] * 64)
    for idx, iou in {34: 0.9, 37: 0.8, 43: 0.7}.items():  # (25, 45), (55, 45), (35, 55)
        logits[idx, 0] = 3.0
        boxes[idx] = torch.tensor([20.0, 20.0, 20.0 + 40.0 * iou, 60.0])
    result = DynamicSoft()(layout, gt, torch.tensor([0]), logits, boxes)
    assert result.labels.tolist() == [1 if i in (34, 37) else 0 for i in range(64)]


def test_30_heavily_overlapping_gts():
    layout = d2_layout()
    g = torch.Generator().manual_seed(1)
    gt = torch.tensor([[100.0, 100.0, 200.0, 200.0]]) + torch.rand(30, 4, generator=g) * 10
    lt, rb = (
        torch.maximum(gt[:, None, :2], gt[None, :, :2]),
        torch.minimum(gt[:, None, 2:], gt[None, :, 2:]),
    )
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (gt[:, 2:] - gt[:, :2]).prod(-1)
    assert float((inter / (area[:, None] + area[None] - inter)).min()) > 0.5
    _, _, logits, boxes = random_image(layout, 30)
    result = DynamicSoft()(layout, gt, torch.arange(30) % 11, logits, boxes)
    check_valid(result, len(layout.boxes), 30)
    fg = result.labels == 1
    assert int(fg.sum()) >= 10 and result.matched_idxs[fg].unique().numel() >= 10
    ctr, box = layout.centers()[fg], gt[result.matched_idxs[fg]]
    assert bool(((ctr > box[:, :2]) & (ctr < box[:, 2:])).all())  # positives inside their gt


def test_huge_gt_far_candidates_keep_finite_costs():
    # On a stride-1 grid a 101 x 99 gt has candidates up to 70 strides from its centre, where
    # 10^(70 - 3) overflows float32: the prior is clamped, costs stay finite.
    layout = square_grid_layout(side=100, stride=1.0)
    gt = torch.tensor([[0.0, 0.0, 101.0, 99.0]])  # centre (50.5, 49.5): anchor 49 x 100 + 50
    boxes = torch.tensor([FAR] * len(layout.boxes))
    dsl = DynamicSoft(max_candidates=10000)
    cand, _, cost = dsl.costs(layout, gt, torch.tensor([0]), torch.zeros(len(boxes), 2), boxes)
    assert int(cand.valid.sum()) == 100 * 99 and bool(torch.isfinite(cost[cand.valid]).all())
    result = dsl(layout, gt, torch.tensor([0]), torch.zeros(len(boxes), 2), boxes)
    assert result.labels.nonzero().flatten().tolist() == [4950]


def test_zero_area_predictions_give_finite_costs():
    layout = d2_layout(128)
    gt = torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 64.0, 120.0, 120.0]])
    classes = torch.tensor([3, 7])
    centres = layout.centers()
    boxes = torch.cat([centres, centres], dim=1)  # zero-area: IoU 0 with everything
    logits = torch.zeros(len(boxes), 11)
    dsl = DynamicSoft()
    cand, ious, cost = dsl.costs(layout, gt, classes, logits, boxes)
    assert bool(torch.isfinite(cost[cand.valid]).all()) and float(ious.max()) == 0.0
    result = dsl(layout, gt, classes, logits, boxes)
    check_valid(result, len(boxes), 2)
    assert int(result.labels.sum()) == 2  # k = 1 each, disjoint candidates


def test_half_inputs_match_float32_inputs():
    layout = d2_layout(192)
    gt, classes, logits, boxes = random_image(layout, 8)
    a = DynamicSoft()(layout, gt.half(), classes, logits.half(), boxes.half())
    b = DynamicSoft()(
        layout, gt.half().float(), classes, logits.half().float(), boxes.half().float()
    )
    assert torch.equal(a.labels, b.labels) and torch.equal(a.matched_idxs, b.matched_idxs)
    assert int(a.labels.sum()) > 0


def test_no_gt_gives_all_background():
    result = DynamicSoft()(row_layout(), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert result.labels.tolist() == [0] * 8


def test_build_from_config():
    cfg = get_bmc_cfg()
    cfg.MODEL.BMC.ASSIGNER.NAME = "DynamicSoft"
    cfg.MODEL.BMC.ASSIGNER.DYNAMIC_SOFT.SOFT_CENTER_SHIFT = 2.0
    cfg.MODEL.BMC.ASSIGNER.SIMOTA.DYNAMIC_TOPQ = 5  # another assigner's node: not read
    dsl = build_assigner(cfg)
    assert isinstance(dsl, DynamicSoft) and dsl.needs_predictions
    assert dsl.soft_center_shift == 2.0
    assert (dsl.dynamic_topq, dsl.fallback_k) == (13, 10)  # RTMDet's top-13; its own fallback


def test_op_count_does_not_grow_with_the_number_of_gts():
    # No Python loop over gts: 4x the gts add fewer ops than gts.
    layout = d2_layout(320)  # 19206 anchors
    ops = {}
    for g in (20, 80):
        inputs = random_image(layout, g)
        ops[g] = op_count(DynamicSoft(), layout, *inputs)
        assert int(DynamicSoft()(layout, *inputs).labels.sum()) >= g
    assert ops[80] < ops[20] + (80 - 20), ops


def test_320_gts_no_gxrxk_tensor():
    # The largest tensor stays within G x R (a (G, R, K) tensor would be K = 11 times that).
    layout = d2_layout(320)
    r, g, k = len(layout.boxes), 320, 11
    inputs = random_image(layout, g, num_classes=k)
    with OpCounter() as counter:
        result = DynamicSoft()(layout, *inputs)
    assert counter.largest <= g * r
    check_valid(result, r, g)
    assert int(result.labels.sum()) >= g
