"""Backbone + neck: output contract, PAN/SE fusion by hand, deformable and dilated ResNet stages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, build_backbone
from detectron2.modeling.backbone.fpn import build_retinanet_resnet_fpn_backbone
from detectron2.structures import ImageList
from torch import nn

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.modeling.backbone import (
    build_bmc_resnet_backbone,
    build_bmc_resnet_pan_backbone,
)
from bmc_detectron.modeling.deform import DeformConv2dPack
from bmc_detectron.modeling.neck import PANNeck, SEFusion, SEWeight, make_top_block

RGB = ShapeSpec(channels=3)


def tiny_cfg(**neck):
    """A ResNet-50 layout with very thin stages (res2..res5: 16, 32, 64, 128 channels)."""
    cfg = get_bmc_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_bmc_resnet_pan_backbone"
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 8
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False  # the stride lives in the (deformable) 3x3 conv
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.FPN.IN_FEATURES = list(neck.pop("IN_FEATURES", ["res3", "res4", "res5"]))
    for key, value in neck.items():
        assert key in cfg.MODEL.BMC.NECK, key
        setattr(cfg.MODEL.BMC.NECK, key, value)
    return cfg


def r18_cfg(**neck):
    """ResNet-18 (basic blocks, for which detectron2 has no deformable variant)."""
    cfg = tiny_cfg(**neck)
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return cfg


def check_contract(backbone, outputs, height, width):
    shapes = backbone.output_shape()
    assert list(outputs) == list(shapes)
    for name, feature in outputs.items():
        spec = shapes[name]
        assert name == f"p{int(math.log2(spec.stride))}"
        # levels above the padding unit (P6, P7) round up, as stride-2 convs with padding do
        h, w = -(-height // spec.stride), -(-width // spec.stride)
        assert feature.shape == (1, spec.channels, h, w)


LEVELS = {
    ("res3", "res4", "res5"): ["p3", "p4", "p5"],
    ("res2", "res3", "res4", "res5"): ["p2", "p3", "p4", "p5"],
}
EXTRA = {"P6P7": ["p6", "p7"], "P6": ["p6"], "": []}


@pytest.mark.parametrize("in_features", list(LEVELS))
@pytest.mark.parametrize("top_block", list(EXTRA))
def test_levels_strides_and_size_divisibility(in_features, top_block):
    cfg = tiny_cfg(IN_FEATURES=list(in_features), TOP_BLOCK=top_block)
    backbone = build_backbone(cfg)  # through the registry, as the meta-arch does
    names = LEVELS[in_features] + EXTRA[top_block]
    assert list(backbone.output_shape()) == names
    strides = [backbone.output_shape()[n].stride for n in names]
    assert strides == [2 ** int(n[1:]) for n in names]
    assert {s.channels for s in backbone.output_shape().values()} == {32}
    unit = 32  # largest bottom-up stride (res5), as in detectron2's FPN
    assert backbone.size_divisibility == unit
    assert backbone.padding_constraints["size_divisibility"] == unit
    assert backbone.padding_constraints.get("square_size", 0) == 0
    # An image whose size is not a multiple of the largest stride is padded by ImageList.
    image = torch.randn(3, 70, 45)
    batch = ImageList.from_tensors(
        [image], backbone.size_divisibility, padding_constraints=backbone.padding_constraints
    )
    height, width = batch.tensor.shape[-2:]
    assert height % unit == 0 and width % unit == 0 and height >= 70
    with torch.no_grad():
        check_contract(backbone, backbone(batch.tensor), height, width)


@pytest.mark.parametrize("pan, attention", [(False, True), (True, False), (True, True)])
def test_pan_and_attention_switches_keep_the_contract(pan, attention):
    cfg = tiny_cfg(PAN=pan, ATTENTION=attention)
    cfg.MODEL.FPN.NORM = "GN"  # 32 groups of 1 channel
    backbone = build_bmc_resnet_pan_backbone(cfg, RGB)
    assert list(backbone.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]
    assert (backbone.pan is not None) == pan
    ses = [m for m in backbone.modules() if isinstance(m, SEWeight)]
    assert len(ses) == (2 if pan and attention else 0)
    with torch.no_grad():
        check_contract(backbone, backbone(torch.randn(1, 3, 128, 256)), 128, 256)


@pytest.mark.parametrize("fuse_type", ["sum", "avg"])
def test_plain_fpn_matches_detectron2_retinanet_fpn(fuse_type):
    cfg = tiny_cfg(PAN=False, TOP_BLOCK="P6P7", TOP_BLOCK_IN="res5")
    cfg.MODEL.FPN.FUSE_TYPE = fuse_type
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    ours = build_bmc_resnet_pan_backbone(cfg, RGB).eval()
    stock = build_retinanet_resnet_fpn_backbone(cfg, RGB).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected, got = stock(x), ours(x)
    assert list(got) == list(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=0, rtol=0)


@pytest.mark.parametrize("source", ["p5", "res5"])
def test_top_block_input(source):
    backbone = build_bmc_resnet_pan_backbone(tiny_cfg(TOP_BLOCK_IN=source), RGB).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        out = backbone(x)
        src = out["p5"] if source == "p5" else backbone.bottom_up(x)["res5"]  # p5 = N5 here
        torch.testing.assert_close(out["p6"], backbone.top_block.p6(src), atol=0, rtol=0)
    assert backbone.top_block.p6.in_channels == (32 if source == "p5" else 128)


def test_bad_top_block_settings_raise():
    with pytest.raises(ValueError, match="TOP_BLOCK"):
        make_top_block("P8", "p5", 32, 32)
    cfg = tiny_cfg(IN_FEATURES=["res2", "res3", "res4"], TOP_BLOCK_IN="p5")
    with pytest.raises(ValueError, match="last neck level 'p4'"):
        build_bmc_resnet_pan_backbone(cfg, RGB)


def test_se_weight_by_hand():
    se = SEWeight(4, reduction=2)  # 2 hidden units
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, -1.0, 0, 0]]))
        se.fc1.bias.zero_()
        se.fc2.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [1.0, 1.0], [0, 0]]))
        se.fc2.bias.copy_(torch.tensor([0.0, 0.0, 0.0, math.log(3.0)]))
    x = torch.zeros(1, 4, 2, 2)
    x[0, 0] = 2.0  # GAP = (2, -3, 0, 0)
    x[0, 1] = -3.0
    w = se(x)
    assert w.shape == (1, 4, 1, 1)
    # hidden = ReLU(2, 3) = (2, 3); logits = (2, 3, 5, log 3)
    expected = torch.sigmoid(torch.tensor([2.0, 3.0, 5.0, math.log(3.0)]))
    torch.testing.assert_close(w.flatten(), expected)
    assert abs(w[0, 3].item() - 0.75) < 1e-6
    random_w = SEWeight(32)(torch.randn(3, 32, 5, 5))
    assert random_w.shape == (3, 32, 1, 1)
    assert ((random_w > 0) & (random_w < 1)).all()


def fusion_by_hand(fusion, lower, higher, w):
    down = F.conv2d(lower, fusion.down.weight, fusion.down.bias, stride=2, padding=1)
    return F.conv2d(w * down + higher, fusion.fuse.weight, fusion.fuse.bias, padding=1)


def test_se_fusion_by_hand():
    torch.manual_seed(0)
    lower, higher = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 3, 3)
    fusion = SEFusion(8, attention=True, reduction=4)
    with torch.no_grad():  # every weight sigmoid(logit(0.25)) = 0.25, whatever the input
        fusion.se.fc1.weight.zero_()
        fusion.se.fc2.weight.zero_()
        fusion.se.fc2.bias.fill_(math.log(0.25 / 0.75))
    torch.testing.assert_close(fusion(lower, higher), fusion_by_hand(fusion, lower, higher, 0.25))
    plain = SEFusion(8, attention=False)
    assert plain.se is None
    torch.testing.assert_close(plain(lower, higher), fusion_by_hand(plain, lower, higher, 1.0))
    # the attention-off fusion is the attention-on one with w = 1 (same convs)
    plain.load_state_dict(fusion.state_dict(), strict=False)
    unweighted = fusion_by_hand(fusion, lower, higher, 1.0)
    torch.testing.assert_close(plain(lower, higher), unweighted)
    assert not torch.allclose(fusion(lower, higher), unweighted)


def test_pan_neck_bottom_up_chain():
    torch.manual_seed(0)
    neck = PANNeck(num_levels=3, channels=8, se_reduction=4)
    p = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    n = neck(p)
    assert n[0] is p[0]  # N_low = P_low
    n1 = neck.fusions[0](p[0], p[1])
    torch.testing.assert_close(n[1], n1)
    torch.testing.assert_close(n[2], neck.fusions[1](n1, p[2]))
    assert [t.shape for t in n] == [t.shape for t in p]
    with pytest.raises(ValueError, match="expects 3 levels"):
        neck(p[:2])
    cfg = tiny_cfg(SE_REDUCTION=8, ATTENTION=False)
    from_cfg = PANNeck(cfg, num_levels=4)
    assert len(from_cfg.fusions) == 3 and from_cfg.fusions[0].se is None


@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_basic_block_stages(modulated):
    cfg = r18_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = modulated
    cfg.MODEL.RESNETS.DEFORM_NUM_GROUPS = 2
    cfg.MODEL.BACKBONE.FREEZE_AT = 3  # stem, res2, res3 frozen
    deform = build_bmc_resnet_backbone(cfg, RGB)
    assert BACKBONE_REGISTRY.get("build_bmc_resnet_backbone") is build_bmc_resnet_backbone
    for name, stage in zip(deform.stage_names, deform.stages):
        for block in stage:
            assert isinstance(block.conv2, DeformConv2dPack) == (name != "res2")
            if name != "res2":
                assert block.conv2.modulated == modulated
                assert block.conv2.offset_conv.out_channels == (3 if modulated else 2) * 2 * 9
                frozen = name == "res3"
                assert block.conv2.offset_conv.weight.requires_grad == (not frozen)
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False] * 4
    plain = build_bmc_resnet_backbone(cfg, RGB)
    missing, unexpected = plain.load_state_dict(deform.state_dict(), strict=False)
    assert not missing and all(".offset_conv." in k for k in unexpected) and unexpected
    x = torch.randn(1, 3, 64, 64)
    out = deform(x)
    with torch.no_grad():
        expected = plain(x)
    for name in expected:  # zero offsets (and unit mask): the plain network
        torch.testing.assert_close(out[name], expected[name], atol=1e-4, rtol=1e-4)
    out["res5"].square().mean().backward()
    grad = deform.res5[0].conv2.offset_conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_deformable_and_dilated_bottleneck_stages():
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, True, True]
    cfg.MODEL.BMC.BACKBONE.STAGE_DILATIONS = [1, 1, 2, 3]
    backbone = build_bmc_resnet_backbone(cfg, RGB)
    first = backbone.res4[0].conv2
    assert isinstance(first, DeformConv2dPack)
    assert (first.stride, first.dilation, first.padding) == ((2, 2), (2, 2), (2, 2))
    assert backbone.res5[1].conv2.dilation == (3, 3)
    assert backbone.res3[0].conv2.dilation == (1, 1)
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {
        "res3": 8,
        "res4": 16,
        "res5": 32,
    }
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = backbone(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res3": (1, 32, 8, 12),
        "res4": (1, 64, 4, 6),
        "res5": (1, 128, 2, 3),
    }


def test_stage_dilation_keeps_strides_and_changes_features():
    cfg = tiny_cfg(IN_FEATURES=["res2", "res3", "res4", "res5"])
    plain = build_bmc_resnet_pan_backbone(cfg, RGB).eval()
    cfg.MODEL.BMC.BACKBONE.STAGE_DILATIONS = [1, 1, 2, 2]
    dilated = build_bmc_resnet_pan_backbone(cfg, RGB).eval()
    dilated.load_state_dict(plain.state_dict(), strict=True)
    convs = [b.conv2 for b in dilated.bottom_up.res4] + [b.conv2 for b in dilated.bottom_up.res5]
    assert all(c.dilation == (2, 2) and c.padding == (2, 2) for c in convs)
    assert all(b.conv2.dilation == (1, 1) for b in dilated.bottom_up.res3)
    assert dilated.output_shape() == plain.output_shape()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        check_contract(dilated, dilated(x), 128, 128)
        a, b = plain.bottom_up(x), dilated.bottom_up(x)
    torch.testing.assert_close(a["res3"], b["res3"], atol=0, rtol=0)
    assert a["res4"].shape == b["res4"].shape and not torch.allclose(a["res4"], b["res4"])
    with pytest.raises(ValueError, match="STAGE_DILATIONS"):
        cfg.MODEL.BMC.BACKBONE.STAGE_DILATIONS = [1, 2]
        build_bmc_resnet_backbone(cfg, RGB)


def test_neck_convs_use_c2_xavier_init():
    fusion = SEFusion(16)
    for conv in (fusion.down, fusion.fuse):
        assert torch.equal(conv.bias, torch.zeros(16))
        bound = math.sqrt(3.0 / (16 * 9))  # kaiming_uniform(a=1): sqrt(6 / ((1 + 1) * fan_in))
        assert conv.weight.abs().max() <= bound and conv.weight.std() > bound / 4
    assert isinstance(fusion.down, nn.Conv2d) and fusion.down.stride == (2, 2)


def test_se_gate_bias_sets_the_initial_gate():
    torch.manual_seed(0)
    x = torch.randn(4, 32, 8, 8)
    default = SEWeight(32, reduction=4)(x)
    opened = SEWeight(32, reduction=4, gate_bias=3.0)(x)
    assert abs(default.mean().item() - 0.5) < 0.1  # PyTorch's init: gates near sigmoid(0)
    assert opened.min().item() > 0.85 and opened.mean().item() > 0.93
    cfg = tiny_cfg(PAN=True, ATTENTION=True, SE_REDUCTION=4, SE_GATE_BIAS=3.0)
    backbone = build_bmc_resnet_pan_backbone(cfg, RGB)
    biases = [f.se.fc2.bias for f in backbone.pan.fusions]
    assert all(torch.all(b == 3.0) for b in biases)


def test_se_gate_statistics_are_logged_in_training_only():
    from detectron2.utils.events import EventStorage

    cfg = tiny_cfg(PAN=True, ATTENTION=True, SE_REDUCTION=4)
    backbone = build_bmc_resnet_pan_backbone(cfg, RGB)
    x = torch.randn(2, 3, 64, 64)
    with EventStorage() as storage:
        backbone.eval()
        with torch.no_grad():
            backbone(x)
        assert not any(k.startswith("se_gate/") for k in storage.histories())
        backbone.train()
        backbone(x)
        logged = {k: v.latest() for k, v in storage.histories().items()}
    # one mean and one spread per fused level (p4, p5 for res3-res5 inputs)
    assert sorted(logged) == [
        "se_gate/p4_mean",
        "se_gate/p4_std",
        "se_gate/p5_mean",
        "se_gate/p5_std",
    ]
    gate = backbone.pan.fusions[0].se(backbone.top_down(backbone.bottom_up(x))[1])
    assert logged["se_gate/p4_mean"] == pytest.approx(gate.mean().item(), rel=1e-5)
    backbone(x)  # outside the storage: nothing raised
