"""BMCRetinaNetHead: parity with detectron2's RetinaNetHead, dilated and deformable towers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from torch import nn

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.modeling.deform import DeformConv2dPack
from bmc_detectron.modeling.head import BMCRetinaNetHead

C = 32  # channels of the features (GN needs multiples of 32)
SHAPES = [ShapeSpec(channels=C, stride=s) for s in (8, 16, 32)]


def head_cfg(num_convs=2, norm=""):
    cfg = get_bmc_cfg()
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    cfg.MODEL.RETINANET.NUM_CONVS = num_convs
    cfg.MODEL.RETINANET.NORM = norm
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0]]  # A = 2
    return cfg


def features(batch=2):
    torch.manual_seed(1)
    return [torch.randn(batch, C, size, size + 1) for size in (8, 4, 2)]


def tower_convs(tower):
    return [m for m in tower if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("norm", ["", "GN", "BN"])
def test_default_head_is_detectron2_head(norm):
    cfg = head_cfg(num_convs=2, norm=norm)
    cfg.MODEL.BMC.HEAD.DILATIONS = [1]
    cfg.MODEL.BMC.HEAD.DEFORM_LAST = False
    stock, ours = RetinaNetHead(cfg, SHAPES), BMCRetinaNetHead(cfg, SHAPES)
    assert list(ours.state_dict()) == list(stock.state_dict())
    torch.manual_seed(0)
    for p in stock.parameters():  # non-trivial weights, so the comparison means something
        p.data.normal_(0.0, 0.2)
    ours.load_state_dict(stock.state_dict(), strict=True)
    stock.eval(), ours.eval()
    with torch.no_grad():
        expected, got = stock(features()), ours(features())
    for exp_list, got_list in zip(expected, got):
        for e, g in zip(exp_list, got_list):
            torch.testing.assert_close(g, e, atol=0, rtol=0)
    assert [t.shape[1] for t in got[0]] == [2 * 3] * 3 and [t.shape[1] for t in got[1]] == [8] * 3
    stock.load_state_dict(ours.state_dict(), strict=True)  # and the other way round


def test_head_from_config_reads_bmc_keys():
    cfg = head_cfg(num_convs=3)
    cfg.MODEL.BMC.HEAD.DILATIONS = [1, 2, 3]
    cfg.MODEL.BMC.HEAD.DEFORM_LAST = True
    cfg.MODEL.BMC.HEAD.DEFORM_MODULATED = False
    head = BMCRetinaNetHead(cfg, SHAPES)
    for tower in (head.cls_subnet, head.bbox_subnet):
        convs = tower_convs(tower)
        assert [c.dilation for c in convs] == [(1, 1), (2, 2), (3, 3)]
        assert [c.padding for c in convs] == [(1, 1), (2, 2), (3, 3)]
        assert [type(c) for c in convs] == [nn.Conv2d, nn.Conv2d, DeformConv2dPack]
        assert convs[-1].modulated is False
    logits, deltas = head(features())
    for feature, logit, delta in zip(features(), logits, deltas):
        n, _, h, w = feature.shape
        assert logit.shape == (n, 6, h, w) and delta.shape == (n, 8, h, w)


def test_single_dilation_applies_to_every_tower_conv_and_matches_by_hand():
    head = BMCRetinaNetHead(
        input_shape=SHAPES, num_classes=3, num_anchors=2, conv_dims=[C, C], dilations=[2]
    )
    convs = tower_convs(head.cls_subnet)
    assert [c.dilation for c in convs] == [(2, 2), (2, 2)]
    x = features()[0]
    hidden = x
    for conv in convs:
        hidden = F.relu(F.conv2d(hidden, conv.weight, conv.bias, padding=2, dilation=2))
    expected = F.conv2d(hidden, head.cls_score.weight, head.cls_score.bias, padding=1)
    torch.testing.assert_close(head([x, x[..., ::2, ::2], x[..., ::4, ::4]])[0][0], expected)


@pytest.mark.parametrize("modulated", [False, True])
def test_fresh_deformable_head_equals_plain_head(modulated):
    kwargs = dict(input_shape=SHAPES, num_classes=3, num_anchors=2, conv_dims=[C, C])
    plain = BMCRetinaNetHead(**kwargs, dilations=[1, 2])
    deform = BMCRetinaNetHead(
        **kwargs, dilations=[1, 2], deform_last=True, deform_modulated=modulated
    )
    torch.manual_seed(0)
    for name, p in deform.named_parameters():
        if "offset_conv" not in name:
            p.data.normal_(0.0, 0.2)
    missing, unexpected = plain.load_state_dict(deform.state_dict(), strict=False)
    assert not missing
    towers, params = ("bbox_subnet", "cls_subnet"), ("bias", "weight")
    assert sorted(unexpected) == [f"{t}.2.offset_conv.{p}" for t in towers for p in params]
    last = tower_convs(deform.bbox_subnet)[-1]
    assert isinstance(last, DeformConv2dPack) and last.dilation == (2, 2)
    assert last.modulated == modulated
    with torch.no_grad():
        expected, got = plain(features()), deform(features())
    for exp_list, got_list in zip(expected, got):
        for e, g in zip(exp_list, got_list):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    logits, deltas = deform(features())
    (sum(t.square().sum() for t in logits) + sum(t.square().sum() for t in deltas)).backward()
    assert last.offset_conv.weight.grad.abs().sum() > 0


def test_bad_head_settings_raise():
    kwargs = dict(input_shape=SHAPES, num_classes=3, num_anchors=2)
    with pytest.raises(ValueError, match="one per tower conv"):
        BMCRetinaNetHead(**kwargs, conv_dims=[C, C, C], dilations=[1, 2])
    with pytest.raises(ValueError, match="one per tower conv"):
        BMCRetinaNetHead(**kwargs, conv_dims=[C], dilations=[0])
