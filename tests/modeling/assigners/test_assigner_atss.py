"""ATSS assigner: hand-computed assignments on tiny anchor grids, edge cases and op counts.

The hand-built layout (``helpers.small_layout``) has two levels: stride 8 on a 4x4 grid and
stride 16 on a 2x2 grid, with location centres at (s*j + s/2, s*i + s/2). Anchor index inside a
level is (i*W + j)*A + a, so with A = 1 the level-0 anchor at column j, row i is 4*i + j and
level-1 anchors are 16 + 2*i + j. With A = 1, level-0 anchors are 16x16 squares and level-1
anchors 32x32 squares.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.modeling.assigners.atss import ATSS, centers_inside, mean_std_threshold
from bmc_detectron.modeling.assigners.base import ASSIGNER_REGISTRY, AnchorLayout, paired_iou
from bmc_detectron.modeling.assigners.matching import resolve_by_max_iou
from tests.helpers import grid_layout, op_count, small_layout


def run(assigner, layout, gts):
    gt = torch.tensor(gts, dtype=torch.float32)
    return assigner(layout, gt, torch.zeros(len(gt), dtype=torch.int64))


def positives(result):
    return result.labels.nonzero().flatten().tolist()


def test_single_gt_threshold_and_centre_rule():
    # gt [0, 4, 8, 13], centre (4, 8.5), area 8*9 = 72; k = 3.
    # Level 0 squared distances: a4 (4,12): 0+12.25; a0 (4,4): 0+20.25; a5 (12,12): 64+12.25;
    #   a1 (12,4): 64+20.25 -> candidates 4, 0, 5.
    # Level 1: a16 (8,8): 16+0.25; a18 (8,24): 16+240.25; a17 (24,8): 400+0.25 -> 16, 18, 17.
    # IoUs: a4 [-4,4,12,20]: gt inside -> 72/256 = 0.28125
    #       a0 [-4,-4,12,12]: 8*8 = 64 / (256+72-64 = 264) = 0.242424
    #       a5 [4,4,20,20]: 4*9 = 36 / 292 = 0.123288
    #       a16 [-8,-8,24,24]: 72/1024 = 0.0703125
    #       a18 [-8,8,24,40]: 8*5 = 40 / 1056 = 0.037879;  a17 [8,-8,40,24]: width 0 -> 0
    # mean = 0.755154 / 6 = 0.125859; sum of squared deviations = 0.064406,
    # unbiased std = sqrt(0.064406 / 5) = 0.113496 -> threshold 0.239355.
    # a4 and a0 pass the threshold, but a0's centre (4, 4) lies on the gt's top edge y = 4:
    # not more than 0.01 px inside -> only a4 is positive.
    layout = small_layout()
    res = run(ATSS(topk=3), layout, [[0, 4, 8, 13]])
    assert positives(res) == [4]
    assert res.matched_idxs.tolist() == [0] * 20
    assert res.labels.dtype == torch.int8 and res.matched_idxs.dtype == torch.int64
    assert set(res.labels.tolist()) == {0, 1}  # no ignore band

    cand = ATSS(topk=3).select_candidates(layout, torch.tensor([[4.0, 8.5]]))
    assert cand[0, :3].tolist() == [4, 0, 5] and cand[0, 3:].tolist() == [16, 18, 17]
    ious = paired_iou(layout.boxes[cand[0]], torch.tensor([0.0, 4, 8, 13]))
    expected = [72 / 256, 64 / 264, 36 / 292, 72 / 1024, 40 / 1056, 0.0]
    assert torch.allclose(ious, torch.tensor(expected))
    assert mean_std_threshold(ious[None]).item() == pytest.approx(0.239355, abs=1e-5)


def test_threshold_is_mean_plus_unbiased_std():
    # [0.1, 0.2, 0.3, 0.6]: mean 0.3, squared deviations 0.04+0.01+0+0.09 = 0.14,
    # unbiased var 0.14/3 -> std 0.216025 -> 0.516025 (the biased one would give 0.487083).
    # [0.5, 0.5]: std 0 -> 0.5.
    thr = mean_std_threshold(torch.tensor([[0.1, 0.2, 0.3, 0.6], [0.5, 0.5, 0.5, 0.5]]))
    assert torch.allclose(thr, torch.tensor([0.516025, 0.5]), atol=1e-6)
    # One candidate: no spread, the threshold is its IoU (not NaN).
    assert mean_std_threshold(torch.tensor([[0.3], [0.7]])).tolist() == pytest.approx([0.3, 0.7])


def test_unbiased_std_rejects_what_biased_would_accept():
    # gt [0, 1, 15, 12], centre (7.5, 6.5), area 15*11 = 165; k = 3.
    # Level 0: a0 (4,4): 12.25+6.25 = 18.5; a1 (12,4): 20.25+6.25 = 26.5; a4 (4,12): 42.5;
    #   a5 (12,12): 50.5 -> 0, 1, 4.  Level 1: a16 2.5, a17 274.5, a18 306.5 -> 16, 17, 18.
    # IoUs: a0 12*11 = 132/289 = 0.456747; a1 11*11 = 121/300 = 0.403333;
    #       a4 12*8 = 96/325 = 0.295385; a16 165/1024 = 0.161133;
    #       a17 7*11 = 77/1112 = 0.069245; a18 15*4 = 60/1129 = 0.053144.
    # mean 0.239831, squared deviations sum 0.147017:
    #   unbiased std sqrt(0.147017/5) = 0.171474 -> threshold 0.411305 (a1 fails: 0.4033);
    #   biased std sqrt(0.147017/6) = 0.156534 -> threshold 0.396365 (a1 would pass).
    # a0's centre (4,4) is inside (3 px from the top side) -> positives {0}.
    res = run(ATSS(topk=3), small_layout(), [[0, 1, 15, 12]])
    assert positives(res) == [0]


def test_conflict_goes_to_highest_iou_gt():
    # gt A = [0, 1, 15, 12] alone: positives {0} (previous test), IoU(a0, A) = 0.456747.
    # gt B = [0, 0, 9, 15] alone, centre (4.5, 7.5), area 135:
    #   level 0: a0 12.5, a4 20.5, a1 68.5 (a5 76.5); level 1: a16 12.5, a18 284.5, a17 380.5.
    #   IoUs a0 9*12 = 108/283 = 0.381625, a4 9*11 = 99/292 = 0.339041, a1 5*12 = 60/331 =
    #   0.181269, a16 135/1024 = 0.131836, a18 9*7 = 63/1096 = 0.057482, a17 15/1144 = 0.013112.
    #   mean 0.184061, unbiased std sqrt(0.111032/5) = 0.149018 -> threshold 0.333079:
    #   a0 and a4 pass, both centres well inside -> positives {0, 4}.
    # Together a0 is claimed by both: 0.456747 (A) > 0.381625 (B) -> A; a4 -> B.
    layout = small_layout()
    gt_a, gt_b = [0, 1, 15, 12], [0, 0, 9, 15]
    assert positives(run(ATSS(topk=3), layout, [gt_b])) == [0, 4]
    res = run(ATSS(topk=3), layout, [gt_a, gt_b])
    assert positives(res) == [0, 4]
    assert res.matched_idxs[[0, 4]].tolist() == [0, 1]
    swapped = run(ATSS(topk=3), layout, [gt_b, gt_a])  # decided by IoU, not by order
    assert swapped.matched_idxs[[0, 4]].tolist() == [1, 0]
    # Exact duplicates tie in IoU: the lowest gt index wins.
    dup = run(ATSS(topk=3), layout, [gt_a, gt_a])
    assert positives(dup) == [0] and dup.matched_idxs[0].item() == 0


def test_resolve_by_max_iou_by_hand():
    # Claims (anchor, gt, iou): (2,0,.3) (2,1,.5) (4,1,.2) (4,2,.2) (0,0,.9)
    # anchor 2 -> gt 1 (0.5 > 0.3); anchor 4 -> tie 0.2 -> lowest gt 1; anchor 0 -> gt 0.
    matched, labels = resolve_by_max_iou(
        torch.tensor([2, 2, 4, 4, 0]),
        torch.tensor([0, 1, 1, 2, 0]),
        torch.tensor([0.3, 0.5, 0.2, 0.2, 0.9]),
        6,
    )
    assert labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert matched.tolist() == [0, 0, 1, 0, 1, 0]


def test_topk_per_location_switch():
    # A = 3 anchors per location: sizes 8/16/24 on level 0 and 16/32/48 on level 1, k = 3.
    # Level-0 anchor index = 3*location + a; level 1 starts at 48. gt [0, 1, 15, 12], centre
    # (7.5, 6.5): location order on level 0: loc0 (18.5), loc1 (26.5), loc4 (42.5), ...;
    # on level 1: loc0 (2.5), loc1 (274.5), loc2 (306.5).
    layout = small_layout((8, 16, 24), (16, 32, 48))
    center = torch.tensor([[7.5, 6.5]])
    per_anchor = ATSS(topk=3, topk_per_location=False).select_candidates(layout, center)
    per_loc = ATSS(topk=3, topk_per_location=True).select_candidates(layout, center)
    # k anchors: the 3 anchors of the nearest location only.
    assert sorted(per_anchor[0].tolist()) == [0, 1, 2, 48, 49, 50]
    # k locations: 3 locations x 3 anchors per level.
    assert sorted(per_loc[0].tolist()) == [0, 1, 2, 3, 4, 5, 12, 13, 14, *range(48, 57)]

    # Per anchor: IoUs a0 [0,0,8,8] 8*7 = 56/173 = 0.323699, a1 0.456747, a2 [-8,-8,16,16]
    #   165/576 = 0.286458, a48 [0,0,16,16] 165/256 = 0.644531, a49 165/1024 = 0.161133,
    #   a50 165/2304 = 0.071615; mean 0.324031, unbiased std 0.205911 -> threshold 0.529942
    #   -> only a48 (centre (8, 8) inside).
    res = run(ATSS(topk=3), layout, [[0, 1, 15, 12]])
    assert positives(res) == [48]
    # Per location adds a3 [8,0,16,8] 7*7 = 49/180 = 0.272222, a4 0.403333, a5 [0,-8,24,16]
    #   165/576 = 0.286458, a12 [0,8,8,16] 8*4 = 32/197 = 0.162437, a13 0.295385,
    #   a14 0.286458, a51 0, a52 0.069245, a53 165/2304 = 0.071615, a54 0, a55 0.053144,
    #   a56 0.071615: 18 IoUs, mean 0.217561, unbiased std 0.175297 -> threshold 0.392858
    #   -> a1 (0.4567, centre (4,4)), a4 (0.4033, centre (12,4)) and a48.
    res = run(ATSS(topk=3, topk_per_location=True), layout, [[0, 1, 15, 12]])
    assert positives(res) == [1, 4, 48]


def test_centre_must_be_more_than_001_px_inside():
    # As the ATSS authors' code and mmdetection: min(l, t, r, b) > 0.01. gt [0, top, 8, 13] puts
    # a0's centre (4, 4) at 4 - top below its top side; a0 passes the IoU threshold in all three
    # cases (it is positive at 0.02), so only the centre rule decides.
    layout = small_layout()
    assert positives(run(ATSS(topk=3), layout, [[0, 4.0, 8, 13]])) == [4]  # on the side
    assert positives(run(ATSS(topk=3), layout, [[0, 3.995, 8, 13]])) == [4]  # 0.005 inside
    assert positives(run(ATSS(topk=3), layout, [[0, 3.98, 8, 13]])) == [0, 4]  # 0.02 inside
    points = torch.tensor([[4.0, 4.0]])
    boxes = torch.tensor([[0.0, 3.995, 8.0, 13.0], [0.0, 3.98, 8.0, 13.0]])
    assert centers_inside(points, boxes).tolist() == [False, True]
    assert centers_inside(points, boxes, margin=0.0).tolist() == [True, True]


def test_no_gt_gives_all_background():
    layout = small_layout()
    res = ATSS()(layout, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert res.labels.tolist() == [0] * 20 and res.matched_idxs.tolist() == [0] * 20


def test_tiny_gts():
    layout = small_layout()
    # [5, 5, 7, 7] lies between the level-0 centres (4,4), (12,4), (4,12), (12,12): candidates
    # a0 (d2 8), a1 and a4 (40 each), all with IoU 4/256 = 0.015625, and a16 4/1024, a17, a18 0.
    # mean 0.008464, unbiased std 0.007973 -> threshold 0.016437 above every IoU, and no
    # candidate centre is inside the box anyway: no positive, sane all-background labels.
    res = run(ATSS(topk=3), layout, [[5, 5, 7, 7]])
    assert positives(res) == [] and res.labels.tolist() == [0] * 20
    # [3, 3, 5, 5] contains the centre (4, 4) of a0: IoUs a0 4/256 = 0.015625, a4 and a1
    # 2/258 = 0.007752, a16 4/1024 = 0.003906, a17 = a18 = 0 -> mean 0.005839, std 0.005916,
    # threshold 0.011755: a0 is the gt's only positive.
    assert positives(run(ATSS(topk=3), layout, [[3, 3, 5, 5]])) == [0]


def test_u_shaped_cell_box_centre_is_geometric():
    # A U-shaped cell: its pixels hug the left, right and bottom sides of the box
    # [0, 1, 15, 12]; the box centre (7.5, 6.5) is background. Assignment only sees the box, so
    # the anchor centred at (4, 4), inside the U's notch, is still the positive (as computed in
    # test_unbiased_std_rejects_what_biased_would_accept).
    layout = small_layout()
    assert positives(run(ATSS(topk=3), layout, [[0, 1, 15, 12]])) == [0]
    # Mirrored about x = 16 (the layout is symmetric: column j <-> 3 - j on level 0), the same
    # U opening the other way gets the mirrored anchor, centre (28, 4) -> a3.
    assert positives(run(ATSS(topk=3), layout, [[17, 1, 32, 12]])) == [3]


def reference_atss(layout: AnchorLayout, gts: torch.Tensor, k: int):
    """Slow reference: one gt at a time, sorting whole levels, Python statistics."""
    centers = layout.centers()
    claims = {}
    for g, box in enumerate(gts):
        ctr = (box[:2] + box[2:]) / 2
        cand, start = [], 0
        for count in layout.num_per_level:
            d = ((centers[start : start + count] - ctr) ** 2).sum(1)
            cand += (torch.argsort(d)[:k] + start).tolist()
            start += count
        ious = [paired_iou(layout.boxes[i], box).item() for i in cand]
        thr = statistics.mean(ious) + statistics.stdev(ious)
        for i, iou in zip(cand, ious):
            cx, cy = centers[i].tolist()
            margin = min(cx - box[0], cy - box[1], box[2] - cx, box[3] - cy)
            if iou >= thr - 1e-6 and margin > 0.01:
                if i not in claims or iou > claims[i][1]:
                    claims[i] = (g, iou)
    return claims


def test_dense_smear_matches_slow_reference():
    # 30 cells of ~40 px jittered by at most 3 px: pairwise IoU > 0.5 (checked).
    gen = torch.Generator().manual_seed(0)
    base = torch.tensor([44.0, 40.0, 84.0, 82.0])
    gts = base + (torch.rand(30, 4, generator=gen) * 6 - 3)
    iou = paired_iou(gts[:, None], gts[None])
    assert (iou[~torch.eye(30, dtype=torch.bool)] > 0.5).all()
    layout = grid_layout([(8, 16), (16, 8), (32, 4)], [(32,), (64,), (128,)])
    res = run(ATSS(topk=9), layout, gts.tolist())
    claims = reference_atss(layout, gts, 9)
    assert positives(res) == sorted(claims)
    assert res.matched_idxs[sorted(claims)].tolist() == [claims[i][0] for i in sorted(claims)]
    assert set(res.labels.tolist()) <= {0, 1}
    assert len({g for g, _ in claims.values()}) >= 5  # several gts win anchors


def test_from_config_and_registry():
    cfg = get_bmc_cfg()
    cfg.MODEL.BMC.ASSIGNER.ATSS.TOPK = 5
    cfg.MODEL.BMC.ASSIGNER.ATSS.TOPK_PER_LOCATION = True
    cfg.MODEL.BMC.ASSIGNER.PAA.TOPK = 2  # another assigner's node: not read
    assigner = ASSIGNER_REGISTRY.get("ATSS")(cfg)
    assert assigner.topk == 5 and assigner.topk_per_location is True
    assert not assigner.needs_predictions
    with pytest.raises(ValueError):
        ATSS(topk=0)


def test_op_count_does_not_grow_with_the_number_of_gts():
    # 5 levels, 1 anchor per location, ~20k anchors (a 1000 x 1000 image). No Python loop over
    # gts: 4x the gts add fewer ops than gts.
    grids = [(8, 125), (16, 63), (32, 32), (64, 16), (128, 8)]
    layout = grid_layout(grids, [(4 * s,) for s, _ in grids])
    assert len(layout.boxes) > 20000
    gen = torch.Generator().manual_seed(0)
    ops = {}
    for g in (20, 80):
        xy = torch.rand(g, 2, generator=gen) * 900
        gts = torch.cat([xy, xy + 20 + torch.rand(g, 2, generator=gen) * 80], dim=1)
        classes = torch.zeros(g, dtype=torch.int64)
        ops[g] = op_count(ATSS(topk=9), layout, gts, classes)
        assert int(ATSS(topk=9)(layout, gts, classes).labels.sum()) > 0
    assert ops[80] < ops[20] + (80 - 20), ops
