"""PAA assigner: the batched GMM fit, the separation rules, hand-computed assignments, op counts.

Hand-built layout (``helpers.small_layout``, as in test_assigner_atss.py): two levels, stride 8 on
a 4x4 grid (16x16 anchors, index 4*row + col, centres 4/12/20/28) and stride 16 on a 2x2 grid
(32x32 anchors, index 16 + 2*row + col, centres 8/24).
"""

from __future__ import annotations

import math

import pytest
import torch

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.modeling.assigners.base import ASSIGNER_REGISTRY, AnchorLayout, paired_iou
from bmc_detectron.modeling.assigners.paa import (
    GMM1D,
    PAA,
    fit_gmm_1d,
    owned_topk_candidates,
    separate_positives,
)
from tests.helpers import grid_layout, op_count, small_layout


def focal(x: float) -> float:
    """alpha (1 - p)^gamma * -log(p), alpha 0.25, gamma 2."""
    p = 1 / (1 + math.exp(-x))
    return 0.25 * (1 - p) ** 2 * -math.log(p)


def all_valid(x: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(x, dtype=torch.bool)


# ---------------------------------------------------------------- GMM fit and separation


def test_gmm_two_clear_clusters_exact_split():
    # Clusters {0.1, 0.2, 0.6} and {3.0, 3.1, 3.2}: EM converges to one cluster per component.
    # Low: mean 0.3, biased variance (0.04+0.01+0.09)/3 = 0.046667; high: mean 3.1,
    # variance (0.01+0+0.01)/3 = 0.006667; weights 1/2 each.
    x = torch.tensor([[0.1, 0.2, 0.6, 3.0, 3.1, 3.2]])
    gmm = fit_gmm_1d(x, all_valid(x), num_iters=10)
    assert torch.allclose(gmm.means, torch.tensor([[0.3, 3.1]]), atol=1e-4)
    assert torch.allclose(gmm.variances, torch.tensor([[0.046667, 0.006667]]), atol=1e-4)
    assert torch.allclose(gmm.weights, torch.tensor([[0.5, 0.5]]), atol=1e-4)
    assert gmm.resp[0].argmax(dim=1).tolist() == [0, 0, 0, 1, 1, 1]
    # boundary: the whole low cluster; peak: scores <= 0.3, the low mean.
    assert separate_positives(x, all_valid(x), gmm, "boundary")[0].tolist() == [1, 1, 1, 0, 0, 0]
    assert separate_positives(x, all_valid(x), gmm, "peak")[0].tolist() == [1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_gmm_fit_is_scale_free(scale):
    # The initial variances are the data's, so the same clusters are found at any score scale
    # (a fixed initial variance of 1 merges the clusters of the 0.01-scaled scores).
    x = torch.tensor([[0.1, 0.2, 0.6, 3.0, 3.1, 3.2]]) * scale
    gmm = fit_gmm_1d(x, all_valid(x), num_iters=10)
    assert gmm.resp[0].argmax(dim=1).tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(gmm.means, torch.tensor([[0.3, 3.1]]) * scale, rtol=1e-4)


def test_gmm_batched_equals_each_row_alone():
    rows = [
        [0.1, 0.2, 0.6, 3.0, 3.1, 3.2],
        [0.5, 0.9, 0.7, 2.0],
        [1.0],
        [0.3, 0.3, 0.3],
        [2.0, 0.1, 1.2, 0.15, 1.9],
    ]
    width = max(map(len, rows))
    x = torch.full((len(rows), width), 1e3)  # padding far from the data: must be ignored
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for g, row in enumerate(rows):
        x[g, : len(row)] = torch.tensor(row)
        mask[g, : len(row)] = True
    batch = fit_gmm_1d(x, mask, num_iters=10)
    batch_pos = separate_positives(x, mask, batch)
    for g, row in enumerate(rows):
        xs = torch.tensor([row])
        alone = fit_gmm_1d(xs, all_valid(xs), num_iters=10)
        assert torch.allclose(batch.means[g], alone.means[0], atol=1e-6)
        assert torch.allclose(batch.variances[g], alone.variances[0], atol=1e-6)
        assert torch.allclose(batch.weights[g], alone.weights[0], atol=1e-6)
        assert torch.allclose(batch.resp[g, : len(row)], alone.resp[0], atol=1e-6)
        assert (batch.resp[g, len(row) :] == 0).all()
        alone_pos = separate_positives(xs, all_valid(xs), alone)
        assert batch_pos[g, : len(row)].tolist() == alone_pos[0].tolist()
        assert not batch_pos[g, len(row) :].any()


def test_gmm_degenerate_rows():
    x = torch.tensor(
        [
            [0.7, 0.0, 0.0, 0.0],  # one candidate
            [0.4, 0.4, 0.4, 0.4],  # identical scores
            [0.2, 0.2, 0.2, 1.0],  # zero-variance low cluster
            [9.0, 9.0, 9.0, 9.0],  # no valid candidate at all
        ]
    )
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]).bool()
    gmm = fit_gmm_1d(x, mask, num_iters=10)
    for t in gmm:
        assert torch.isfinite(t).all()
    # One candidate or identical scores: both components coincide, posteriors 1/2.
    assert torch.allclose(gmm.means[:2], torch.tensor([[0.7, 0.7], [0.4, 0.4]]))
    assert torch.allclose(gmm.resp[1], torch.full((4, 2), 0.5))
    # Zero variance is floored at 1e-6 and the clusters are split exactly.
    assert torch.allclose(gmm.means[2], torch.tensor([0.2, 1.0]))
    assert torch.allclose(gmm.variances[2], torch.tensor([1e-6, 1e-6]))
    for rule in ("peak", "boundary"):
        pos = separate_positives(x, mask, gmm, rule)
        assert pos.tolist() == [
            [True, False, False, False],  # the single candidate is positive
            [True, True, True, True],  # nothing to separate: all positive
            [True, True, True, False],
            [False, False, False, False],
        ]
    with pytest.raises(ValueError):
        separate_positives(x, mask, gmm, "middle")


def hand_gmm(means, resp) -> GMM1D:
    means = torch.tensor(means)
    return GMM1D(means, torch.ones_like(means), torch.full_like(means, 0.5), torch.tensor(resp))


def test_separation_rules_on_a_hand_made_mixture():
    # Low component mean 0.3 (component 1 here: the low one is found by its mean, not its slot).
    x = torch.tensor([[0.1, 0.3, 0.300002, 0.5, 0.9]])
    gmm = hand_gmm([[2.0, 0.3]], [[[0.05, 0.95], [0.4, 0.6], [0.45, 0.55], [0.6, 0.4], [1, 0]]])
    # peak: x <= 0.3 (0.300002 is beyond the 1e-6 rounding tolerance).
    assert separate_positives(x, all_valid(x), gmm, "peak")[0].tolist() == [1, 1, 0, 0, 0]
    # boundary: low posterior >= 0.5: 0.95, 0.6, 0.55 yes; 0.4, 0 no.
    assert separate_positives(x, all_valid(x), gmm, "boundary")[0].tolist() == [1, 1, 1, 0, 0]
    # A mean one float32 step below 0.3 (EM rounding) still keeps the score 0.3.
    below = torch.nextafter(torch.tensor(0.3), torch.tensor(0.0)).item()
    gmm = hand_gmm([[2.0, below]], gmm.resp.tolist())
    assert separate_positives(x, all_valid(x), gmm, "peak")[0].tolist() == [1, 1, 0, 0, 0]


def test_lowest_score_is_always_positive():
    # A hand-made mixture whose rules select nothing: low mean 0.5 below every score and a low
    # posterior of 0.2 everywhere. The guard still keeps each row's minimum (a1, then a2).
    x = torch.tensor([[5.0, 1.0, 1.1, 1.2], [3.0, 2.0, 0.9, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).bool()  # row 1: the 0.0 is padding
    resp = (torch.tensor([0.2, 0.8]).expand(2, 4, 2) * mask[..., None]).tolist()
    gmm = hand_gmm([[0.5, 3.0], [0.5, 3.0]], resp)
    for rule in ("peak", "boundary"):
        pos = separate_positives(x, mask, gmm, rule)
        assert pos.tolist() == [[False, True, False, False], [False, False, True, False]]


def test_flat_row_is_all_positive_whatever_the_mixture():
    # Scores equal within 1e-6 relative carry no evidence to split them: all positive, even if
    # the (hand-made) mixture would keep only some.
    x = torch.tensor([[0.4, 0.4, 0.4000002]])
    gmm = hand_gmm([[0.3, 0.5]], [[[0.1, 0.9]] * 3])
    for rule in ("peak", "boundary"):
        assert separate_positives(x, all_valid(x), gmm, rule)[0].tolist() == [1, 1, 1]


# ---------------------------------------------------------------- candidates and scores


def test_owned_topk_candidates_by_hand():
    # 2 gts, 6 anchors in levels of 4 and 2, topk 2.
    ious = torch.tensor(
        [
            [0.5, 0.3, 0.0, 0.2, 0.4, 0.1],
            [0.6, 0.1, 0.3, 0.1, 0.2, 0.1],
        ]
    )
    # Max-IoU gt per anchor: a0 -> 1 (0.6 > 0.5), a1 -> 0, a2 -> 1, a3 -> 0, a4 -> 0,
    # a5 -> tie 0.1 / 0.1 -> lowest index 0.
    # gt 0: level 0 owns a1 (0.3), a3 (0.2) -> [1, 3]; level 1 owns a4 (0.4), a5 (0.1) -> [4, 5].
    # gt 1: level 0 owns a0 (0.6), a2 (0.3) -> [0, 2]; level 1 owns nothing -> two invalid slots.
    vals, owner = ious.max(dim=0)
    cand, valid = owned_topk_candidates(owner, vals, 2, [4, 2], topk=2)
    assert cand[0].tolist() == [1, 3, 4, 5] and valid[0].tolist() == [True] * 4
    assert cand[1, :2].tolist() == [0, 2] and valid[1].tolist() == [True, True, False, False]
    # topk 1: the best owned anchor per level.
    cand, valid = owned_topk_candidates(owner, vals, 2, [4, 2], topk=1)
    assert cand[0].tolist() == [1, 4] and cand[1, 0].item() == 0
    assert valid.tolist() == [[True, True], [True, False]]


def hand_case():
    """gt [1, 3, 19, 15] of class 2 (K = 3) on the small layout.

    IoUs with the gt (area 18*12 = 216): level 0: a5 [4,4,20,20] 15*11 = 165/307 = 0.537,
    a1 [4,-4,20,12] 15*9 = 135/337 = 0.401, a4 [-4,4,12,20] 11*11 = 121/351 = 0.345,
    a0 [-4,-4,12,12] 11*9 = 99/373 = 0.265, ...; level 1: a16 216/1024 = 0.211,
    a17 [8,-8,40,24] 11*12 = 132/1108 = 0.119, a18 [-8,8,24,40] 18*7 = 126/1114 = 0.113,
    a19 [8,8,40,40] 11*7 = 77/1163 = 0.066. Top 3 per level: {5, 1, 4} and {16, 17, 18}.

    Predictions: a5, a1, a4 predict the gt box exactly (IoU loss 0) with gt-class logits 4, 3, 0;
    a16, a17, a18 predict a far box (IoU loss 1) with logits -4, -3, -2. a0 is not a candidate
    but gets a perfect prediction (logit 5, box = gt): it must stay negative.
    """
    gt = torch.tensor([[1.0, 3, 19, 15]])
    logits = torch.zeros(20, 3)
    boxes = gt.repeat(20, 1)
    for a, x in zip([5, 1, 4, 16, 17, 18, 0], [4.0, 3, 0, -4, -3, -2, 5]):
        logits[a, 2] = x
    boxes[[16, 17, 18]] = torch.tensor([100.0, 100, 110, 110])
    return gt, torch.tensor([2]), logits, boxes


def test_candidate_scores_by_hand():
    gt, cls, logits, boxes = hand_case()
    cand = torch.tensor([[5, 1, 4, 16, 17, 18]])
    scores = PAA().candidate_scores(cand, gt, cls, logits, boxes)
    # focal(4) = 0.25 * 0.017986^2 * 0.018150 = 1.468e-6; focal(3) = 2.732e-5;
    # focal(0) = 0.25 * 0.25 * 0.693147 = 0.043322; focal(-4) = 0.968727; focal(-3) = 0.691570;
    # focal(-2) = 0.412520; + IoU loss 0 for the first three, 1 for the last three.
    expected = [focal(4), focal(3), focal(0), 1 + focal(-4), 1 + focal(-3), 1 + focal(-2)]
    assert torch.allclose(scores[0], torch.tensor(expected), rtol=1e-5, atol=1e-7)
    assert scores[0, 2].item() == pytest.approx(0.043322, abs=1e-6)
    # iou_weight scales the IoU term only.
    scores2 = PAA(iou_weight=2.0).candidate_scores(cand, gt, cls, logits, boxes)
    assert torch.allclose(scores2[0] - scores[0], torch.tensor([0, 0, 0, 1.0, 1, 1]), atol=1e-6)


@pytest.mark.parametrize("separation, expected", [("peak", [1, 5]), ("boundary", [1, 4, 5])])
def test_assignment_by_hand(separation, expected):
    # Scores (previous test): low cluster {1.5e-6 (a5), 2.7e-5 (a1), 0.0433 (a4)} with mean
    # 0.01445, high cluster {1.969, 1.692, 1.413}. peak: scores <= 0.01445 -> a5, a1;
    # boundary: the whole low cluster -> a5, a1, a4. Everything else (a0 included) is negative.
    gt, cls, logits, boxes = hand_case()
    res = PAA(topk=3, separation=separation)(small_layout(), gt, cls, logits, boxes)
    assert res.labels.nonzero().flatten().tolist() == expected
    assert res.matched_idxs.tolist() == [0] * 20
    assert res.labels.dtype == torch.int8 and res.matched_idxs.dtype == torch.int64
    assert set(res.labels.tolist()) == {0, 1}


def test_no_gt_and_missing_predictions():
    layout = small_layout()
    res = PAA()(layout, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert res.labels.tolist() == [0] * 20 and res.matched_idxs.tolist() == [0] * 20
    with pytest.raises(ValueError):
        PAA()(layout, torch.tensor([[1.0, 3, 19, 15]]), torch.tensor([0]))


def test_tiny_gt_still_gets_a_positive():
    # [5, 5, 7, 7] (2x2 px, between anchor centres) overlaps a0, a1, a4, a5 (4/256 each) and a16
    # (4/1024): unlike ATSS there is no centre test, so its best-scoring candidate is positive.
    # a16 predicts the gt exactly and every other anchor a far box: a16 has the lowest score.
    layout = small_layout()
    boxes = torch.tensor([[200.0, 200, 210, 210]]).repeat(20, 1)
    boxes[16] = torch.tensor([5.0, 5, 7, 7])
    res = PAA(topk=3)(
        layout, torch.tensor([[5.0, 5, 7, 7]]), torch.tensor([0]), torch.zeros(20, 2), boxes
    )
    pos = res.labels.nonzero().flatten().tolist()
    assert 16 in pos and set(pos) <= {0, 1, 4, 5, 16}


def random_predictions(layout: AnchorLayout, num_classes: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(layout.boxes), num_classes, generator=gen) * 2
    boxes = layout.boxes + torch.randn(len(layout.boxes), 4, generator=gen) * 4
    return logits, boxes


def test_batch_of_separate_gts_equals_each_alone():
    layout = grid_layout([(8, 16), (16, 8)], [16, 32])
    gts = torch.tensor([[4.0, 4, 28, 24], [84, 88, 120, 124], [6, 86, 34, 122]])
    assert ((paired_iou(gts[:, None], layout.boxes[None]) > 0).sum(0) <= 1).all()
    cls = torch.tensor([1, 0, 3])
    logits, boxes = random_predictions(layout, 4, seed=1)
    assigner = PAA(topk=4)
    res = assigner(layout, gts, cls, logits, boxes)
    expected_labels = torch.zeros(len(layout.boxes), dtype=torch.int8)
    for g in range(3):
        alone = assigner(layout, gts[g : g + 1], cls[g : g + 1], logits, boxes)
        assert alone.labels.any()
        expected_labels |= alone.labels
        assert (res.matched_idxs[alone.labels == 1] == g).all()
    assert torch.equal(res.labels, expected_labels)


def test_dense_smear_invariants():
    gen = torch.Generator().manual_seed(0)
    base = torch.tensor([44.0, 40.0, 84.0, 82.0])
    gts = base + (torch.rand(30, 4, generator=gen) * 6 - 3)
    ious = paired_iou(gts[:, None], gts[None])
    assert (ious[~torch.eye(30, dtype=torch.bool)] > 0.5).all()
    layout = grid_layout([(8, 16), (16, 8), (32, 4)], [32, 64, 128])
    logits, boxes = random_predictions(layout, 5, seed=2)
    cls = torch.randint(0, 5, (30,), generator=gen)
    res = PAA()(layout, gts, cls, logits, boxes)
    assert set(res.labels.tolist()) == {0, 1}
    anchor_ious = paired_iou(gts[:, None], layout.boxes[None])  # (30, R)
    pos = res.labels == 1
    # A positive goes to its max-IoU gt.
    assert torch.equal(res.matched_idxs[pos], anchor_ious[:, pos].argmax(dim=0))
    # Every gt that is the max-IoU gt of some overlapping anchor (i.e. has candidates) gets >= 1.
    owners = anchor_ious.argmax(dim=0)[anchor_ious.amax(dim=0) > 0].unique()
    assert set(res.matched_idxs[pos].unique().tolist()) == set(owners.tolist())
    assert len(owners) >= 10


def test_from_config_and_registry():
    cfg = get_bmc_cfg()
    cfg.MODEL.BMC.ASSIGNER.PAA.TOPK = 7
    cfg.MODEL.BMC.ASSIGNER.PAA.EM_ITERS = 4
    cfg.MODEL.BMC.ASSIGNER.PAA.IOU_WEIGHT = 1.5
    cfg.MODEL.BMC.ASSIGNER.ATSS.TOPK = 3  # another assigner's node: not read
    assigner = ASSIGNER_REGISTRY.get("PAA")(cfg)
    assert (assigner.topk, assigner.em_iters, assigner.iou_weight) == (7, 4, 1.5)
    assert (assigner.focal_alpha, assigner.focal_gamma) == (0.25, 2.0)
    assert assigner.needs_predictions and assigner.separation == "peak"
    with pytest.raises(ValueError):
        PAA(separation="middle")


def test_op_count_does_not_grow_with_the_number_of_gts():
    # ~20k anchors on 5 levels. No Python loop over gts: 4x the gts add fewer ops than gts. The
    # IoU maxima are computed in one block here (their chunk count grows with G by design; the
    # chunking is checked in test_chunked_iou.py).
    grids = [(8, 125), (16, 63), (32, 32), (64, 16), (128, 8)]
    layout = grid_layout(grids, [4 * s for s, _ in grids])
    assert len(layout.boxes) > 20000
    gen = torch.Generator().manual_seed(0)
    logits, boxes = random_predictions(layout, 10, seed=3)
    assigner = PAA()
    assigner.chunk_elements = 1 << 40
    ops = {}
    for g in (20, 80):
        xy = torch.rand(g, 2, generator=gen) * 900
        gts = torch.cat([xy, xy + 20 + torch.rand(g, 2, generator=gen) * 80], dim=1)
        cls = torch.randint(0, 10, (g,), generator=gen)
        ops[g] = op_count(assigner, layout, gts, cls, logits, boxes)
        res = assigner(layout, gts, cls, logits, boxes)
        if g == 20:
            assert len(res.matched_idxs[res.labels == 1].unique()) == 20
    assert ops[80] < ops[20] + (80 - 20), ops
