"""The label-assignment visualiser: ATSS' per-level statistics against hand-computed IoUs, per-gt
records, the band-cell case, and ``show_assignment`` end to end on two tiny synthetic images."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from PIL import Image

from bmc_detectron.analysis.assignment import (
    ASSIGNER_NAMES,
    ImageAssignment,
    atss_statistics,
    build_assigners,
    gt_records,
    per_level_counts,
    summarize_records,
)
from bmc_detectron.analysis.band_cell import pixel_kinds, render_band_cell
from bmc_detectron.config import build_cfg, get_bmc_cfg
from bmc_detectron.data.datasets import unregister_dataset
from bmc_detectron.modeling.assigners import AnchorLayout, AssignResult
from tests.analysis.helpers import CPU_CONFIG, register_tiny_synth, tiny_opts


def grid(stride: float, n: int, sides) -> torch.Tensor:
    """(n * n * A, 4) square anchors of the given sides on an n x n grid of centres
    (stride j + stride / 2, stride i + stride / 2), in detectron2's (H, W, A) order."""
    c = (torch.arange(n, dtype=torch.float32) + 0.5) * stride
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    ctr = torch.stack([xs.flatten(), ys.flatten()], 1)[:, None]  # (n * n, 1, 2)
    half = torch.tensor(sides, dtype=torch.float32)[None, :, None] / 2  # (1, A, 1)
    return torch.cat([ctr - half, ctr + half], 2).reshape(-1, 4)


def two_level_layout(a0=(16,), a1=(32,)) -> AnchorLayout:
    """Level 0: stride 8, 4 x 4 centres 4, 12, 20, 28; level 1: stride 16, 2 x 2 centres 8, 24.
    With A = 1, anchor (row i, column j) is 4 i + j on level 0 and 16 + 2 i + j on level 1."""
    boxes = torch.cat([grid(8, 4, a0), grid(16, 2, a1)])
    a = len(a0)
    return AnchorLayout(boxes, [16 * a, 4 * a], a, [8, 16])


def mean_std(values):
    return statistics.mean(values), statistics.stdev(values)


# gt 1 [6, 4, 22, 20] (centre 14, 12), gt 2 [18, 15, 32, 29] (centre 25, 22); k = 2, A = 1.
GT1, GT2 = [6.0, 4.0, 22.0, 20.0], [18.0, 15.0, 32.0, 29.0]
# Candidates (2 nearest centres per level) and their IoUs as intersection / union by hand:
# gt 1, level 0: (12,12) [4,4,20,20] 14*16 / (256+256-224); (20,12) [12,4,28,20] 10*16 / 352
#       level 1: (8,8) [-8,-8,24,24] contains the gt: 256 / 1024; (24,8) [8,-8,40,24] 14*16 / 1056
HAND1 = {"idx": [5, 6, 16, 17], "iou": [224 / 288, 160 / 352, 256 / 1024, 224 / 1056]}
# gt 2, level 0: (28,20) [20,12,36,28] 12*13 / (256+196-156); (20,20) [12,12,28,28] 10*13 / 322
#       level 1: (24,24) [8,8,40,40] contains it: 196 / 1024; (24,8) [8,-8,40,24] 14*9 / 1094
HAND2 = {"idx": [11, 10, 19, 17], "iou": [156 / 296, 130 / 322, 196 / 1024, 126 / 1094]}


def test_atss_statistics_hand_case():
    layout = two_level_layout()
    stats = atss_statistics(layout, torch.tensor([GT1, GT2]), topk=2, per_location=False)
    for g, hand in enumerate((HAND1, HAND2)):
        assert stats.candidates[g].tolist() == hand["idx"]
        ious = hand["iou"]
        mean, std = mean_std(ious)
        assert stats.mean[g] == pytest.approx(mean, abs=1e-6)
        assert stats.std[g] == pytest.approx(std, abs=1e-6)
        assert stats.threshold[g] == pytest.approx(mean + std, abs=1e-6)
        level_means = [statistics.mean(ious[:2]), statistics.mean(ious[2:])]
        np.testing.assert_allclose(stats.level_mean_iou[g], level_means, atol=1e-6)
        assert stats.num_candidates[g].tolist() == [2, 2]
    # only the best level-0 candidate clears mean + std (0.778 >= 0.683; 0.527 >= 0.499)
    assert stats.rule_positives.tolist() == [[1, 0], [1, 0]]

    cfg = get_bmc_cfg()
    cfg.MODEL.BMC.ASSIGNER.ATSS.TOPK = 2
    (atss,) = build_assigners(cfg, ["ATSS"]).values()
    res = atss(layout, torch.tensor([GT1, GT2]), torch.tensor([0, 0]))
    assert res.labels.nonzero().flatten().tolist() == [5, 11]
    assert res.matched_idxs[[5, 11]].tolist() == [0, 1]
    chosen = per_level_counts(res, layout, 2)
    assert chosen.tolist() == stats.rule_positives.tolist()


def test_atss_statistics_topk_per_location():
    # A = 2 (sides 16, 24 on level 0; 32, 48 on level 1), k = 1, gt 1 only
    layout = two_level_layout((16, 24), (32, 48))
    gt = torch.tensor([GT1])
    anchors = atss_statistics(layout, gt, topk=1, per_location=False)
    # k anchors: the first anchor of the nearest location on each level
    assert anchors.candidates[0].tolist() == [10, 32]
    ious = [224 / 288, 256 / 1024]
    mean, std = mean_std(ious)
    assert anchors.threshold[0] == pytest.approx(mean + std, abs=1e-6)
    # with two candidates mean + std (unbiased) exceeds the larger IoU: no positive
    assert anchors.rule_positives.sum() == 0

    locations = atss_statistics(layout, gt, topk=1, per_location=True)
    assert locations.candidates[0].tolist() == [10, 11, 32, 33]
    ious = [224 / 288, 256 / 576, 256 / 1024, 256 / 2304]
    mean, std = mean_std(ious)
    assert locations.threshold[0] == pytest.approx(mean + std, abs=1e-6)
    np.testing.assert_allclose(
        locations.level_mean_iou[0], [np.mean(ious[:2]), np.mean(ious[2:])], atol=1e-6
    )
    assert locations.rule_positives.tolist() == [[1, 0]]


@pytest.mark.parametrize("per_location", [False, True])
def test_atss_statistics_agree_with_the_assigner(per_location):
    """One gt at a time (no anchor claimed twice): the rule's positives are ATSS' positives."""
    strides = [8, 16, 32]
    sizes = [[s * 4, s * 5, s * 6] for s in strides]
    gen = DefaultAnchorGenerator(
        sizes=sizes, aspect_ratios=[[0.5, 1.0, 2.0]], strides=strides, offset=0.0
    )
    feats = [torch.zeros(1, 1, 96 // s, 96 // s) for s in strides]
    per_level = [b.tensor for b in gen(feats)]
    layout = AnchorLayout(torch.cat(per_level), [len(b) for b in per_level], 9, strides)
    cfg = get_bmc_cfg()
    cfg.MODEL.BMC.ASSIGNER.ATSS.TOPK_PER_LOCATION = per_location
    (atss,) = build_assigners(cfg, ["ATSS"]).values()
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        xy = torch.rand(2, generator=g) * 60
        gt = torch.cat([xy, xy + 12 + torch.rand(2, generator=g) * 30])[None]
        stats = atss_statistics(layout, gt, 9, per_location)
        res = atss(layout, gt, torch.tensor([0]))
        assert per_level_counts(res, layout, 1).tolist() == stats.rule_positives.tolist()


def test_gt_records_and_summary():
    centers = torch.tensor([[10.0, 10], [25, 10], [50, 50], [110, 110], [200, 200]])
    layout = AnchorLayout(torch.cat([centers - 4, centers + 4], dim=1), [5], 1, [8])
    gts = torch.tensor([[0.0, 0, 20, 20], [15, 0, 35, 20], [100, 100, 120, 120]])
    # a0 -> g0 (inside), a1 -> g1 (inside), a2 -> g1 (centre outside g1), a3 ignored near g2
    labels = torch.tensor([1, 1, 1, -1, 0], dtype=torch.int8)
    result = AssignResult(torch.tensor([0, 1, 1, 2, 0]), labels)
    assignment = ImageAssignment(layout, gts, torch.tensor([0, 1, 2]), {"X": result})
    rec = gt_records(assignment)["X"]
    assert rec["positives"].tolist() == [1, 2, 0]
    assert rec["outside"].tolist() == [0, 1, 0]
    assert rec["ignored"].tolist() == [0, 0, 1]
    assert rec["crowding"].tolist() == [1, 1, 0]
    np.testing.assert_allclose(rec["size"], [20, 20, 20])
    summary = summarize_records({"X": rec})["X"]
    assert summary["share_gts_without_positive"] == pytest.approx(1 / 3)
    assert summary["share_positives_centre_outside_box"] == pytest.approx(1 / 3)
    assert summary["by_crowding"]["1 neighbour"]["positives_per_gt_mean"] == pytest.approx(1.5)
    assert summary["by_crowding"]["isolated"]["share_gts_without_positive"] == 1.0


def test_pixel_kinds_of_a_drawn_u():
    img = np.full((60, 60, 3), 255, np.uint8)
    yy, xx = np.mgrid[:60, :60]
    r = np.hypot(xx - 30, yy - 30)
    img[r < 20] = (228, 204, 218)  # pale cytoplasm
    img[(np.abs(r - 12) < 3) & (yy > 22)] = (78, 42, 110)  # a U of nucleus, open at the top
    img[5, 5] = (60, 40, 90)  # a dark speck off the cell: not the nucleus
    kinds = pixel_kinds(img)
    assert kinds[30, 30] == 1  # the centre: cytoplasm
    assert kinds[42, 30] == 2  # the bottom of the U
    assert kinds[0, 0] == 0  # the canvas
    assert kinds[5, 5] != 2  # a small dark component is not the nucleus


def test_band_cell_centre_is_off_the_nucleus():
    cfg = build_cfg(CPU_CONFIG, tiny_opts())
    for seed in range(3):
        cell = render_band_cell(cfg, seed=seed)
        assert cell.centre_kind != "nucleus", seed
        assert (cell.kinds == 2).sum() > 10
        x0, y0, x1, y1 = cell.box
        assert 0 <= x0 < x1 <= cell.kinds.shape[1] and 0 <= y0 < y1 <= cell.kinds.shape[0]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    yield register_tiny_synth(tmp_path_factory.mktemp("tiny_synth"), "test_show_assign_synth")
    unregister_dataset("test_show_assign_synth")


def test_show_assignment_end_to_end(tiny_dataset, tmp_path):
    from bmc_detectron.analysis_tools.show_assignment import main

    name, json_file = tiny_dataset
    out = tmp_path / "assign"
    argv = ["--config-file", CPU_CONFIG, "--dataset", name, "--images", "2"]
    argv += ["--assigners", *ASSIGNER_NAMES, "--output", str(out), *tiny_opts()]
    assert main(argv) == 0

    coco = json.loads(Path(json_file).read_text())
    for image in coco["images"]:
        stem = Path(image["file_name"]).stem
        for suffix in ("assign", "levels", "atss"):
            with Image.open(out / f"{stem}_{suffix}.png") as im:
                assert min(im.size) > 200
        info = json.loads((out / f"{stem}_assignment.json").read_text())
        num_gt = sum(a["image_id"] == image["id"] for a in coco["annotations"])
        assert len(info["gts"]) == num_gt
        assert set(info["assigners"]) == set(ASSIGNER_NAMES)
        atss = np.array(info["assigners"]["ATSS"]["positives_per_level"])
        # a final ATSS positive is a candidate that passed its gt's rule (never gained)
        assert (atss <= np.array(info["atss_statistics"]["rule_positives_per_level"])).all()

    stats = json.loads((out / "assignment_stats.json").read_text())
    for assigner in ASSIGNER_NAMES:
        s = stats["assigners"][assigner]
        assert s["num_gts"] == len(coco["annotations"])
        assert sum(stats["per_gt"][assigner]["positives"]) == s["num_positives"]
    # ATSS only takes anchors whose centre lies inside the gt box
    assert stats["assigners"]["ATSS"]["share_positives_centre_outside_box"] in (0.0, None)
    assert "| ATSS |" in (out / "assignment_stats.md").read_text()
    band = json.loads((out / "band_cell.json").read_text())
    assert band["centre_pixel"] != "nucleus"
    assert set(band["positives_by_pixel_kind"]) == set(ASSIGNER_NAMES)
    for png in ("assignment_stats.png", "band_cell.png"):
        with Image.open(out / png) as im:
            assert min(im.size) > 200
