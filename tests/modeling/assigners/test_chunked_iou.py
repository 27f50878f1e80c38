"""Chunked IoU maxima (:mod:`bmc_detectron.modeling.assigners.chunked_iou`) and the assigners
built on them: MaxIoU against detectron2's ``Matcher`` on the dense IoU matrix (bitwise), PAA's
candidate selection against a dense reference, on random boxes, with ties and several chunks."""

from __future__ import annotations

from typing import Dict, List, Set, Tuple

import pytest
import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou

from bmc_detectron.modeling.assigners import chunked_iou as chunked
from bmc_detectron.modeling.assigners.base import AnchorLayout, paired_iou
from bmc_detectron.modeling.assigners.chunked_iou import paired_iou_block
from bmc_detectron.modeling.assigners.max_iou import MaxIoU, detectron2_iou
from bmc_detectron.modeling.assigners.paa import PAA, owned_topk_candidates
from tests.helpers import grid_layout

IOU_FNS = {"detectron2": detectron2_iou, "paired": paired_iou_block}


def random_boxes(n: int, gen: torch.Generator, extent: float = 200.0) -> torch.Tensor:
    """(n, 4) XYXY boxes with sides 4-64 inside [0, extent + 64]."""
    xy = torch.rand(n, 2, generator=gen) * extent
    return torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=gen) * 60], dim=1)


def gts_with_ties(num_gt: int, gen: torch.Generator, far: bool) -> torch.Tensor:
    """Random gts; from 3 on, gt 1 duplicates gt 0 and (if ``far``) gt 2 overlaps no anchor."""
    gt = random_boxes(num_gt, gen)
    if num_gt >= 3:
        gt[1] = gt[0]
        if far:
            gt[2] = torch.tensor([5000.0, 5000, 5010, 5010])
    return gt


def anchors_with_ties(gen: torch.Generator) -> torch.Tensor:
    """Random anchors, a grid level, and copies of a few anchors at distant indices."""
    boxes = torch.cat([random_boxes(300, gen), grid_layout([(16, 12)], [32.0]).boxes])
    return torch.cat([boxes, boxes[[3, 17, 150, 301]]])


@pytest.mark.parametrize("fn", sorted(IOU_FNS))
@pytest.mark.parametrize("num_gt", [1, 5, 300])
@pytest.mark.parametrize("chunk_elements", [None, 1, 37])
def test_chunked_max_iou_equals_dense(fn, num_gt, chunk_elements):
    gen = torch.Generator().manual_seed(num_gt)
    anchors, gt = anchors_with_ties(gen), gts_with_ties(num_gt, gen, far=True)
    iou_fn = IOU_FNS[fn]
    budget = None if chunk_elements is None else chunk_elements * num_gt
    res = chunked.chunked_max_iou(gt, anchors, iou_fn, budget)
    dense = iou_fn(gt, anchors)
    vals, idx = dense.max(dim=0)
    assert torch.equal(res.anchor_max, vals) and torch.equal(res.anchor_argmax, idx)
    assert torch.equal(res.gt_max, dense.amax(dim=1))
    hit = (dense == dense.amax(dim=1, keepdim=True)).any(dim=0)
    assert torch.equal(chunked.anchors_at_gt_max(gt, anchors, iou_fn, res), hit)
    if chunk_elements is not None:
        assert res.cell_gt_max.shape == (num_gt, -(-len(anchors) // chunk_elements))


def test_chunk_sizes():
    assert chunked.chunk_sizes(10, 1000) == (100, 100)
    assert chunked.chunk_sizes(10, 100_000) == (9216, 1024)  # a whole number of cells
    assert chunked.chunk_sizes(0, 5) == (5, 5)
    assert chunked.chunk_sizes(10, 5) == (1, 1)
    assert chunked.chunk_sizes(10) == (chunked.CHUNK_ELEMENTS // 10240 * 1024, 1024)
    assert (
        chunked.chunk_sizes(10, device_type="cuda")[0]
        == chunked.DEVICE_CHUNK_ELEMENTS // 10240 * 1024
    )
    res = chunked.chunked_max_iou(torch.ones(2, 4), torch.zeros(0, 4), detectron2_iou)
    assert res.anchor_max.shape == (0,) and res.gt_max.tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- MaxIoU vs detectron2's Matcher


@pytest.mark.parametrize("num_gt", [0, 1, 5, 300])
@pytest.mark.parametrize("low_quality", [False, True])
@pytest.mark.parametrize("far", [False, True])
@pytest.mark.parametrize("chunk_elements", [None, 3])
def test_max_iou_equals_detectron2_matcher(num_gt, low_quality, far, chunk_elements):
    gen = torch.Generator().manual_seed(1000 + num_gt)
    anchors, gt = anchors_with_ties(gen), gts_with_ties(num_gt, gen, far)
    thresholds, labels = [0.4, 0.5], [0, -1, 1]
    assigner = MaxIoU(thresholds=thresholds, labels=labels, allow_low_quality_matches=low_quality)
    assigner.chunk_elements = None if chunk_elements is None else chunk_elements * max(num_gt, 1)
    layout = AnchorLayout(anchors, [len(anchors)], 1, [8])
    res = assigner(layout, gt, torch.zeros(num_gt, dtype=torch.int64))
    matcher = Matcher(thresholds, labels, allow_low_quality_matches=low_quality)
    matches, match_labels = matcher(pairwise_iou(Boxes(gt), Boxes(anchors)))
    assert res.matched_idxs.dtype == torch.int64 and res.labels.dtype == torch.int8
    assert torch.equal(res.matched_idxs, matches)
    assert torch.equal(res.labels, match_labels)
    if low_quality and num_gt >= 5:  # the low-quality pass made a difference
        strict = Matcher(thresholds, labels)(pairwise_iou(Boxes(gt), Boxes(anchors)))[1]
        assert (match_labels == 1).sum() > (strict == 1).sum()


def test_max_iou_three_bands_and_ignore_label_without_gt():
    # Four intervals, and an ignore label below the first threshold: an image without gt is
    # labelled by Matcher's rule for an empty IoU matrix (labels[0] everywhere).
    gen = torch.Generator().manual_seed(7)
    anchors = anchors_with_ties(gen)
    layout = AnchorLayout(anchors, [len(anchors)], 1, [8])
    for num_gt in [0, 40]:
        gt = gts_with_ties(num_gt, gen, far=False)
        kw = {"thresholds": [0.2, 0.4, 0.5], "labels": [-1, 0, -1, 1]}
        for lq in [False, True]:
            res = MaxIoU(**kw, allow_low_quality_matches=lq)(layout, gt, torch.zeros(num_gt))
            matches, labels = Matcher(**kw, allow_low_quality_matches=lq)(
                pairwise_iou(Boxes(gt), Boxes(anchors))
            )
            assert torch.equal(res.matched_idxs, matches) and torch.equal(res.labels, labels)


# ---------------------------------------------------------------- PAA candidates vs dense


def dense_owned_topk(
    ious: torch.Tensor, num_per_level: List[int], topk: int
) -> Tuple[Dict[Tuple[int, int], Set[int]], torch.Tensor]:
    """Reference on the dense (G, R) IoU: per (gt, level) the set of the ``topk`` owned anchors of
    highest IoU (equal IoUs by lowest anchor index), and the valid mask of the torch.topk version.
    """
    num_gt = ious.shape[0]
    owner = ious.max(dim=0).indices
    owned_ious = ious * (owner[None, :] == torch.arange(num_gt)[:, None])
    sets, valids, start = {}, [], 0
    for level, count in enumerate(num_per_level):
        block = owned_ious[:, start : start + count]
        valids.append(block.topk(min(topk, count), dim=1).values > 0)
        order = block.sort(dim=1, descending=True, stable=True).indices[:, :topk]
        for g in range(num_gt):
            sets[g, level] = {start + int(i) for i in order[g] if block[g, i] > 0}
        start += count
    return sets, torch.cat(valids, dim=1)


def paa_layout() -> AnchorLayout:
    return grid_layout([(8, 24), (16, 12), (32, 6), (64, 3)], [32.0, 64.0, 128.0, 256.0])


@pytest.mark.parametrize("num_gt", [1, 5, 40, 300])
@pytest.mark.parametrize("chunk_elements", [None, 5])
@pytest.mark.parametrize("topk", [1, 9])
def test_owned_topk_candidates_equal_dense_reference(num_gt, chunk_elements, topk):
    gen = torch.Generator().manual_seed(num_gt)
    layout = paa_layout()
    gt = gts_with_ties(num_gt, gen, far=True)
    budget = None if chunk_elements is None else chunk_elements * num_gt
    res = chunked.chunked_max_iou(gt, layout.boxes, paired_iou_block, budget)
    cand, valid = owned_topk_candidates(
        res.anchor_argmax, res.anchor_max, num_gt, layout.num_per_level, topk
    )
    ious = paired_iou(gt[:, None], layout.boxes[None])
    sets, ref_valid = dense_owned_topk(ious, layout.num_per_level, topk)
    assert cand.dtype == torch.int64 and cand.shape == valid.shape == ref_valid.shape
    assert torch.equal(valid, ref_valid)
    width = topk  # every level here has >= topk anchors
    for (g, level), expected in sets.items():
        cols = slice(level * width, (level + 1) * width)
        got = cand[g, cols][valid[g, cols]].tolist()
        assert len(got) == len(set(got)) and set(got) == expected, (g, level)
        got_ious = ious[g, cand[g, cols]][valid[g, cols]]
        assert (got_ious[:-1] >= got_ious[1:]).all()  # decreasing IoU inside a level
    # invalid slots hold an anchor of their level
    level_of = torch.repeat_interleave(torch.arange(4), torch.tensor(layout.num_per_level))
    assert torch.equal(level_of[cand], torch.arange(4).repeat_interleave(topk).expand_as(cand))


def test_owned_topk_candidates_float64_and_short_level():
    # float64 IoUs take the two-sort path; a level smaller than topk gives fewer columns.
    ious = torch.tensor([[0.5, 0.3, 0.0, 0.2, 0.4], [0.6, 0.1, 0.3, 0.1, 0.2]], dtype=torch.float64)
    vals, owner = ious.max(dim=0)
    cand, valid = owned_topk_candidates(owner, vals, 2, [3, 0, 2], topk=2)
    # level 0 (a0-a2): gt 0 owns a1, gt 1 owns a0, a2; level 2 (a3, a4): gt 0 owns both
    assert cand.shape == (2, 4)
    assert cand[0, 0].item() == 1 and cand[0, 2:].tolist() == [4, 3]
    assert cand[1, :2].tolist() == [0, 2]
    assert valid.tolist() == [[True, False, True, True], [True, True, False, False]]


@pytest.mark.parametrize("num_gt", [3, 60])
def test_paa_independent_of_chunking(num_gt):
    gen = torch.Generator().manual_seed(num_gt)
    layout = paa_layout()
    gt = gts_with_ties(num_gt, gen, far=True)
    cls = torch.randint(0, 4, (num_gt,), generator=gen)
    logits = torch.randn(len(layout.boxes), 4, generator=gen)
    boxes = layout.boxes + torch.randn(len(layout.boxes), 4, generator=gen) * 3
    ref = PAA()(layout, gt, cls, logits, boxes)
    tiny = PAA()
    tiny.chunk_elements = 2 * num_gt
    res = tiny(layout, gt, cls, logits, boxes)
    assert torch.equal(res.labels, ref.labels) and torch.equal(res.matched_idxs, ref.matched_idxs)
    assert ref.labels.sum() > 0
