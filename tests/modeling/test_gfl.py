"""GFL's distribution box regression (bmc_detectron.modeling.gfl and MODEL.BMC.HEAD.REG_MAX):
integrals, targets, the DFL and the weighted box losses by hand; the model with REG_MAX > 0."""

from __future__ import annotations

import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from bmc_detectron.modeling.assigners import AnchorLayout
from bmc_detectron.modeling.gfl import (
    DistributionBoxLosses,
    dense_distances,
    distance_targets,
    distribution_focal_loss,
    distribution_integral,
)
from tests.helpers import make_inputs, tiny_cfg

GFL = ["MODEL.BMC.HEAD.REG_MAX", 16, "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou"]
GT = [[4, 6, 30, 28, 0], [20, 20, 60, 50, 2]]


def _logits(probs) -> torch.Tensor:
    """Bin logits whose softmax is ``probs`` (exact zeros through -inf)."""
    return torch.tensor(probs, dtype=torch.float64).log()


def test_integral_of_one_hot_and_two_hot_distributions():
    one_hot = _logits([0, 0, 0, 1, 0])  # all mass on bin 3
    two_hot = _logits([0, 0, 0.25, 0.75, 0])  # 2 * 0.25 + 3 * 0.75
    x = torch.cat([one_hot, two_hot])  # two distributions of 5 bins, side by side
    got = distribution_integral(x, reg_max=4)
    torch.testing.assert_close(got, torch.tensor([3.0, 2.75], dtype=torch.float64))
    uniform = torch.zeros(1, 3)
    torch.testing.assert_close(distribution_integral(uniform, reg_max=2), torch.tensor([[1.0]]))


def test_dense_distances_are_integrals_times_stride_in_the_delta_layout():
    # one location, A = 1, sides l, t, r, b one-hot on bins 1, 2, 3, 4 (reg_max 4)
    sides = [1, 2, 3, 4]
    bins = torch.full((1, 4, 5, 1, 1), -1e4)
    for side, b in enumerate(sides):
        bins[0, side, b] = 0.0
    head_out = bins.view(1, 20, 1, 1)  # (N, A * 4 * (reg_max + 1), H, W)
    (dist,) = dense_distances([head_out], strides=[8], reg_max=4)
    assert dist.shape == (1, 4, 1, 1)
    assert dist.flatten().tolist() == [8.0, 16.0, 24.0, 32.0]
    # decoding: centre (20, 20) of the anchor, minus l / t, plus r / b
    box = DistributionBoxLosses(4, "giou").transform.apply_deltas(
        dist.view(1, 4), torch.tensor([[12.0, 12.0, 28.0, 28.0]])
    )
    assert box.tolist() == [[12.0, 4.0, 44.0, 52.0]]


def test_dfl_by_hand_and_minimal_at_the_two_bins_in_proportion():
    probs = torch.tensor([[0.25, 0.5, 0.25]])
    target = torch.tensor([0.3])  # 0.7 of bin 0, 0.3 of bin 1
    expected = -(0.7 * math.log(0.25) + 0.3 * math.log(0.5))
    loss = distribution_focal_loss(probs.log(), target)
    torch.testing.assert_close(loss, torch.tensor([expected]))
    best = _logits([[0.7, 0.3, 0.0]]).float()
    entropy = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    torch.testing.assert_close(distribution_focal_loss(best, target), torch.tensor([entropy]))
    assert distribution_integral(best, reg_max=2).item() == pytest.approx(0.3)
    g = torch.Generator().manual_seed(0)
    finite = best.clamp(min=-30.0)
    for _ in range(20):  # any other distribution costs more
        moved = finite + 0.1 * torch.randn(finite.shape, generator=g)
        assert distribution_focal_loss(moved, target).item() > entropy
    # a target on a bin: all weight on that bin
    on_bin = distribution_focal_loss(probs.log(), torch.tensor([1.0]))
    torch.testing.assert_close(on_bin, torch.tensor([-math.log(0.5)]))


def _layout() -> AnchorLayout:
    """Two stride-8 anchors on level 0 (centres (8, 8), (24, 8)), one stride-16 on level 1."""
    boxes = torch.tensor([[0, 0, 16, 16], [16, 0, 32, 16], [0, 0, 32, 32]], dtype=torch.float32)
    return AnchorLayout(boxes=boxes, num_per_level=[2, 1], num_per_location=1, strides=[8, 16])


def test_distance_targets_in_strides_clamped():
    layout = _layout()
    gt = torch.tensor([[[4, 2, 30, 20], [20, 4, 500, 12], [4, 2, 30, 20]]], dtype=torch.float32)
    mask = torch.tensor([[True, True, True]])
    got = distance_targets(layout, gt, mask, reg_max=16)
    expected = [
        [0.5, 0.75, 2.75, 1.5],  # centre (8, 8), stride 8
        [0.5, 0.5, 15.99, 0.5],  # (500 - 24) / 8 clamped to reg_max - 0.01
        [0.75, 0.875, 0.875, 0.25],  # centre (16, 16), stride 16
    ]
    torch.testing.assert_close(got, torch.tensor(expected))
    outside = torch.tensor([[[10, 10, 40, 40]]], dtype=torch.float32)  # centre (8, 8) left of it
    one = AnchorLayout(layout.boxes[:1], [1], 1, [8])
    assert distance_targets(one, outside, torch.tensor([[True]]), 16)[0, :2].tolist() == [0, 0]


@pytest.mark.parametrize("score_weights", [True, False])
def test_box_losses_weighted_by_scores_by_hand(score_weights):
    """Anchor 0 predicts its gt exactly (GIoU loss 0), anchor 1 half of it (GIoU 0.5, loss 0.5);
    scores 0.5 and 0.75; uniform distributions over 5 bins: DFL log(5) per side."""
    layout = _layout()
    distances = [torch.full((1, 2, 4), 8.0), torch.full((1, 1, 4), 8.0)]
    distributions = [torch.zeros(1, 2, 20), torch.zeros(1, 1, 20)]
    logits = [torch.tensor([[[0.0, -9.0], [math.log(3.0), -9.0]]]), torch.zeros(1, 1, 2)]
    gt = [torch.tensor([[0, 0, 16, 16], [16, 0, 48, 16], [0, 0, 1, 1]], dtype=torch.float32)]
    pos = torch.tensor([[True, True, False]])
    losses = DistributionBoxLosses(4, "giou", score_weights=score_weights, dfl_weight=0.25)
    out = losses(layout, distances, distributions, logits, gt, pos)
    s0, s1 = torch.sigmoid(torch.tensor([0.0, math.log(3.0)])).tolist()
    w = (s0, s1) if score_weights else (1.0, 1.0)
    norm = max(sum(w), 1.0)
    assert out["loss_box_reg"].item() == pytest.approx(w[1] * 0.5 / norm, abs=1e-6)
    dfl = 0.25 * math.log(5) * sum(w) / norm
    assert out["loss_dfl"].item() == pytest.approx(dfl, rel=1e-6)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="BBOX_REG_LOSS_TYPE"):
        build_model(tiny_cfg(["MODEL.BMC.HEAD.REG_MAX", 8]))  # smooth L1 on distributions
    with pytest.raises(ValueError, match="REG_MAX"):
        build_model(tiny_cfg(["MODEL.BMC.HEAD.REG_MAX", -1]))


def test_head_outputs_a_distribution_per_side_and_keeps_its_parameter_names():
    torch.manual_seed(0)
    plain = build_model(tiny_cfg())
    gfl = build_model(tiny_cfg(GFL))
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    gfl_shapes = {k: v.shape for k, v in gfl.state_dict().items()}
    assert shapes.keys() == gfl_shapes.keys()
    assert gfl_shapes["head.bbox_pred.weight"][0] == 4 * 17  # one anchor per location
    assert shapes["head.bbox_pred.weight"][0] == 4
    assert {k for k in shapes if shapes[k] != gfl_shapes[k]} == {
        "head.bbox_pred.weight",
        "head.bbox_pred.bias",
    }


def test_decoded_boxes_are_anchor_centres_plus_integral_distances():
    """Bias-only box branch, one-hot on bins (1, 2, 3, 4): every decoded box is its anchor centre
    minus (1, 2) and plus (3, 4) strides of its level."""
    model = build_model(tiny_cfg(["MODEL.BMC.HEAD.REG_MAX", 4, *GFL[2:]]))
    with torch.no_grad():
        model.head.bbox_pred.weight.zero_()
        bias = torch.full((4, 5), -1e4)
        bias[torch.arange(4), torch.tensor([1, 2, 3, 4])] = 0.0
        model.head.bbox_pred.bias.copy_(bias.flatten())
    model.eval()
    layout, _, boxes = model.assignment_inputs(make_inputs((64,), [[]]))
    s = layout.level_strides()[:, None]
    c = layout.centers()
    expected = torch.cat([c - s * torch.tensor([1.0, 2.0]), c + s * torch.tensor([3.0, 4.0])], 1)
    torch.testing.assert_close(boxes[0], expected)


@pytest.mark.parametrize(
    "opts",
    [
        [],
        ["MODEL.BMC.ASSIGNER.NAME", "PAA", "MODEL.BMC.LOSS.CLS_TYPE", "quality_focal"],
        ["MODEL.BMC.LOSS.SOFT_LABELS", True, "MODEL.BMC.LOSS.CLS_TYPE", "varifocal"],
    ],
    ids=["focal", "paa-qfl", "vfl-soft"],
)
def test_forward_backward_and_inference_with_and_without_boxes(opts):
    model = build_model(tiny_cfg([*GFL, *opts, "MODEL.RETINANET.SCORE_THRESH_TEST", 0.0]))
    model.train()
    batch = make_inputs((64, 96), [GT, []])
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_dfl"}
    total = sum(losses.values())
    assert torch.isfinite(total) and losses["loss_dfl"] > 0
    total.backward()
    assert torch.isfinite(model.head.bbox_pred.weight.grad).all()
    assert model.head.bbox_pred.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(batch)
    inst = out[0]["instances"]
    assert len(inst) > 0 and torch.isfinite(inst.pred_boxes.tensor).all()


def test_tiny_gfl_model_box_losses_fall_on_a_hand_made_image():
    """QFL + GIoU + DFL, unweighted (score weights grow with the scores, so weighted losses need
    not fall at first): 10 SGD steps on one image shrink both box losses."""
    torch.manual_seed(0)
    opts = ["MODEL.BMC.LOSS.CLS_TYPE", "quality_focal", "MODEL.BMC.LOSS.SOFT_LABELS", True]
    model = build_model(tiny_cfg([*GFL, *opts, "MODEL.BMC.LOSS.BOX_SCORE_WEIGHTS", False]))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batch = make_inputs((64,), [GT])
    history = []
    model.train()
    with EventStorage():
        for _ in range(10):
            losses = model(batch)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            history.append({k: v.item() for k, v in losses.items()})
    for key in ("loss_box_reg", "loss_dfl"):
        assert history[-1][key] < 0.85 * history[0][key], [h[key] for h in history]
