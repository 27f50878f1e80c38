"""TaskAligned (TOOD) assigner on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.modeling.assigners.base import build_assigner
from bmc_detectron.modeling.assigners.task_aligned import TaskAligned, normalized_alignment
from tests.helpers import FAR, check_valid, d2_layout, op_count, random_image, row_layout

# Row layout: anchors [x - 5, 0, x + 5, 10] centred at x = 5, 15, ..., 75. The gt [0, 40] holds
# anchor centres 0-3. Anchor 0 predicts the gt exactly (IoU 1) with a low score, anchor 1 predicts
# [0, 20] (IoU 0.5) with a high score; the others predict nothing (IoU 0, t = 0: never positive).
GT = torch.tensor([[0.0, 0.0, 40.0, 10.0]])
S_LOW, S_HIGH = 1 / (1 + math.exp(2.0)), 1 / (1 + math.exp(-2.0))  # sigmoid(-2), sigmoid(2)


def _two_predictions():
    logits = torch.full((8, 2), -8.0)
    logits[0, 0], logits[1, 0] = -2.0, 2.0
    boxes = torch.tensor([FAR] * 8)
    boxes[0] = GT[0]
    boxes[1] = torch.tensor([0.0, 0.0, 20.0, 10.0])
    return logits, boxes


@pytest.mark.parametrize(
    "alpha, beta, winner, iou",
    # t0 = 0.119 x 1 vs t1 = 0.881 x 0.5^6 = 0.014: IoU decides (TOOD's 1, 6);
    # t0 = 0.119^6 = 3e-6 vs t1 = 0.881^6 x 0.5 = 0.23: the score decides.
    [(1.0, 6.0, 0, 1.0), (6.0, 1.0, 1, 0.5)],
    ids=["tood-1-6", "score-heavy-6-1"],
)
def test_top_k_by_alignment_flips_with_alpha_and_beta(alpha, beta, winner, iou):
    logits, boxes = _two_predictions()
    result = TaskAligned(topk=1, alpha=alpha, beta=beta)(
        row_layout(), GT, torch.tensor([0]), logits, boxes
    )
    expected = [0] * 8
    expected[winner] = 1
    assert result.labels.tolist() == expected
    # one positive: t / max t = 1, so its target is the gt's best IoU, its own
    assert result.quality.tolist() == pytest.approx([iou if i == winner else 0.0 for i in range(8)])


def test_normalised_targets_per_gt():
    # k = 2, alpha 6, beta 1: gt 0's positives are anchors 0 (t0 = S_LOW^6) and 1
    # (t1 = S_HIGH^6 x 0.5, the largest); its best IoU is anchor 0's, 1.0. So anchor 1 gets 1.0
    # (the max IoU, not its own 0.5) and anchor 0 gets t0 / t1. gt 1 = [40, 80] (anchors 4-7) has
    # one positive, anchor 5, predicting [40, 72] (IoU 0.8): its target is 0.8, whatever gt 0's.
    logits, boxes = _two_predictions()
    logits[5, 1] = 0.0
    boxes[5] = torch.tensor([40.0, 0.0, 72.0, 10.0])
    gts = torch.cat([GT, torch.tensor([[40.0, 0.0, 80.0, 10.0]])])
    result = TaskAligned(topk=2, alpha=6.0, beta=1.0)(
        row_layout(), gts, torch.tensor([0, 1]), logits, boxes
    )
    assert result.labels.tolist() == [1, 1, 0, 0, 0, 1, 0, 0]
    assert result.matched_idxs[[0, 1, 5]].tolist() == [0, 0, 1]
    t0, t1 = S_LOW**6, S_HIGH**6 * 0.5
    expected = [t0 / t1, 1.0, 0, 0, 0, 0.8, 0, 0]
    assert result.quality.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_conflict_goes_to_the_highest_iou_not_the_highest_alignment():
    # gt 0 = [0, 40], gt 1 = [20, 60] both hold anchors 2 and 3 (x = 25, 35). Anchor 2 predicts
    # [18, 58]: IoU 0.379 with gt 0, 0.905 with gt 1; its score is 0.9975 for gt 0's class and
    # 0.0025 for gt 1's, so t = 0.0030 for gt 0 > 0.0014 for gt 1. Every other anchor predicts
    # nothing, so both gts take anchor 2 (their only t > 0); the higher IoU, gt 1, keeps it (TOOD).
    gts = torch.tensor([[0.0, 0.0, 40.0, 10.0], [20.0, 0.0, 60.0, 10.0]])
    logits = torch.full((8, 2), -8.0)
    logits[2] = torch.tensor([6.0, -6.0])
    boxes = torch.tensor([FAR] * 8)
    boxes[2] = torch.tensor([18.0, 0.0, 58.0, 10.0])
    assigner = TaskAligned()
    cand, ious, metric = assigner.alignment(row_layout(), gts, torch.tensor([0, 1]), logits, boxes)
    t = metric[cand.anchor_idx == 2]
    assert float(t[0]) > float(t[1])  # gt 0 is the better aligned of the two
    result = assigner(row_layout(), gts, torch.tensor([0, 1]), logits, boxes)
    assert result.labels.tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert int(result.matched_idxs[2]) == 1
    assert float(result.quality[2]) == pytest.approx(38 / 42, rel=1e-5)  # its IoU with gt 1


def test_candidates_are_the_anchors_inside_the_gt():
    # Every anchor predicts the gt exactly with the same score: t is equal for all and only
    # the in-box anchors 0-3 may be positive, however large k is.
    boxes = GT.expand(8, -1).clone()
    result = TaskAligned(topk=13)(row_layout(), GT, torch.tensor([0]), torch.zeros(8, 1), boxes)
    assert result.labels.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert result.quality[:4].tolist() == pytest.approx([1.0] * 4)


def test_no_gt_gives_all_background():
    result = TaskAligned()(row_layout(), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert result.labels.tolist() == [0] * 8
    assert result.quality is None  # the model uses target 0 there


def test_normalized_alignment_by_hand():
    # gt 0: positives at anchors 3 (t 0.2, IoU 0.6) and 1 (t 0.4, IoU 0.5); gt 1: anchor 0.
    q = normalized_alignment(
        torch.tensor([3, 1, 0]),
        torch.tensor([0, 0, 1]),
        torch.tensor([0.2, 0.4, 0.1]),
        torch.tensor([0.6, 0.5, 0.7]),
        num_gt=2,
        num_anchors=5,
    )
    assert q.tolist() == pytest.approx([0.7, 0.6, 0.0, 0.3, 0.0])


def test_dense_image_is_valid_and_bounded_by_k():
    layout = d2_layout(192)
    gt, classes, logits, boxes = random_image(layout, 8)
    result = TaskAligned(topk=5)(layout, gt, classes, logits, boxes)
    check_valid(result, len(layout.boxes), len(gt))
    fg = result.labels == 1
    per_gt = torch.bincount(result.matched_idxs[fg], minlength=len(gt))
    assert int(fg.sum()) > 0 and int(per_gt.max()) <= 5
    assert bool((result.quality[fg] > 0).all()) and bool((result.quality[~fg] == 0).all())
    assert float(result.quality.max()) <= 1.0


def test_build_from_config():
    cfg = get_bmc_cfg()
    cfg.MODEL.BMC.ASSIGNER.NAME = "TaskAligned"
    cfg.MODEL.BMC.ASSIGNER.TASK_ALIGNED.BETA = 4.0
    tal = build_assigner(cfg)
    assert isinstance(tal, TaskAligned) and tal.needs_predictions and tal.gives_quality
    assert (tal.topk, tal.alpha, tal.beta) == (13, 1.0, 4.0)  # TOOD's k and alpha


def test_op_count_does_not_grow_with_the_number_of_gts():
    # No Python loop over gts: 4x the gts add fewer ops than gts.
    layout = d2_layout(320)
    ops = {g: op_count(TaskAligned(), layout, *random_image(layout, g)) for g in (20, 80)}
    assert ops[80] < ops[20] + (80 - 20), ops
