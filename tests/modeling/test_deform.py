"""DeformConv2dPack: a fresh layer is the plain conv; offsets and mask are trainable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from torch import nn
from torchvision.ops import deform_conv2d

from bmc_detectron.modeling._deform_sample import deform_conv2d_sampled
from bmc_detectron.modeling.deform import DeformConv2dPack

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("deform_num_groups", [1, 2])
def test_fresh_layer_equals_plain_conv(modulated, stride, dilation, deform_num_groups):
    torch.manual_seed(0)
    layer = DeformConv2dPack(
        4,
        6,
        3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        modulated=modulated,
        deform_num_groups=deform_num_groups,
    )
    x = torch.randn(2, 4, 9, 11)
    expected = F.conv2d(x, layer.weight, layer.bias, stride, dilation, dilation)
    out = layer(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_offset_channels_and_mask_range():
    dcn1 = DeformConv2dPack(4, 4, 3, padding=1, deform_num_groups=2)
    dcn2 = DeformConv2dPack(4, 4, 3, padding=1, deform_num_groups=2, modulated=True)
    assert dcn1.offset_conv.out_channels == 2 * 2 * 9
    assert dcn2.offset_conv.out_channels == 3 * 2 * 9
    x = torch.randn(1, 4, 5, 5)
    offset, mask = dcn1.offsets_and_mask(x)
    assert offset.shape == (1, 36, 5, 5) and mask is None
    offset, mask = dcn2.offsets_and_mask(x)
    assert offset.shape == (1, 36, 5, 5) and mask.shape == (1, 18, 5, 5)
    assert torch.equal(mask, torch.ones_like(mask))  # 2 * sigmoid(0)
    nn.init.constant_(dcn2.offset_conv.bias, -100.0)  # mask -> 0: every tap switched off
    out = dcn2(x)
    torch.testing.assert_close(out, dcn2.bias.view(1, -1, 1, 1).expand_as(out), atol=1e-6, rtol=0)


def test_integer_offset_shifts_sampling():
    # A 1x1 deformable conv with a constant offset of +1 in x reads the right-hand neighbour.
    layer = DeformConv2dPack(1, 1, 1, bias=False)
    nn.init.ones_(layer.weight)
    layer.offset_conv.bias.data = torch.tensor([0.0, 1.0])  # (dy, dx)
    x = torch.arange(12.0).view(1, 1, 3, 4)
    expected = torch.cat([x[..., 1:], torch.zeros(1, 1, 3, 1)], dim=-1)  # zero padding outside
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("modulated", [False, True])
def test_backward_reaches_offsets(device, modulated):
    torch.manual_seed(0)
    layer = DeformConv2dPack(3, 5, 3, padding=1, modulated=modulated).to(device)
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    target = torch.randn(2, 5, 8, 8, device=device)
    loss = ((layer(x) - target) ** 2).mean()
    loss.backward()
    for p in (layer.weight, layer.bias, layer.offset_conv.weight, layer.offset_conv.bias):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    num_offsets = 2 * 9
    assert layer.offset_conv.weight.grad[:num_offsets].abs().sum() > 0
    if modulated:  # the mask logits receive gradient as well
        assert layer.offset_conv.weight.grad[num_offsets:].abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_from_conv_shares_parameters_norm_and_activation():
    torch.manual_seed(0)
    conv = Conv2d(
        4,
        4,
        3,
        stride=2,
        padding=2,
        dilation=2,
        groups=2,
        bias=False,
        norm=nn.BatchNorm2d(4),
        activation=nn.ReLU(),
    )
    conv.norm.running_mean.fill_(0.5)
    conv.eval()
    dcn = DeformConv2dPack.from_conv(conv, modulated=True, deform_num_groups=2)
    assert dcn.weight is conv.weight and dcn.bias is None and dcn.norm is conv.norm
    assert (dcn.stride, dcn.padding, dcn.dilation, dcn.groups) == ((2, 2), (2, 2), (2, 2), 2)
    assert not dcn.training
    assert set(dict(dcn.named_parameters())) == {
        "weight",
        "norm.weight",
        "norm.bias",
        "offset_conv.weight",
        "offset_conv.bias",
    }
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(dcn(x), conv(x), atol=1e-5, rtol=0)


def test_from_conv_rejects_non_zero_padding():
    conv = nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="zero padding"):
        DeformConv2dPack.from_conv(conv)


@pytest.mark.parametrize(
    "stride,padding,dilation,groups,offset_groups,modulated,kernel",
    [
        (1, 1, 1, 1, 1, True, 3),
        (1, 1, 1, 1, 1, False, 3),
        (2, 1, 1, 1, 2, True, 3),
        (1, 2, 2, 2, 1, True, 3),
        (2, 0, 1, 2, 2, False, 3),
        (1, 0, 1, 1, 1, True, 1),
        (1, (1, 2), (1, 2), 1, 2, True, (3, 3)),
        (1, (2, 1), 1, 1, 1, True, (5, 3)),
    ],
)
def test_sampled_path_equals_torchvision(
    stride, padding, dilation, groups, offset_groups, modulated, kernel
):
    # Large random offsets: taps land between pixels, on borders and outside the image.
    torch.manual_seed(0)
    pair = nn.modules.utils._pair
    stride, padding, dilation, kernel = pair(stride), pair(padding), pair(dilation), pair(kernel)
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4 // groups, *kernel, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    out_h = (9 + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (11 + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    taps = offset_groups * kernel[0] * kernel[1]
    offset = (3 * torch.randn(2, 2 * taps, out_h, out_w, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(2, taps, out_h, out_w, dtype=torch.float64, requires_grad=True)
    mask_arg = mask if modulated else None
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "mask": mask_arg}
    expected = deform_conv2d(x, offset, weight, bias, **kwargs)
    out = deform_conv2d_sampled(x, offset, weight, bias, **kwargs)
    assert out.shape == expected.shape == (2, 6, out_h, out_w)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    inputs = [x, offset, weight, bias] + ([mask] if modulated else [])
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    expected_grads = torch.autograd.grad(expected, inputs, grad_out)
    for name, got, want in zip(["x", "offset", "weight", "bias", "mask"], grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-8, msg=f"grad of {name}")


def test_cpu_layer_uses_sampled_path(monkeypatch):
    calls = []
    import bmc_detectron.modeling.deform as deform_module

    def spy(*args, **kwargs):
        calls.append(1)
        return deform_conv2d_sampled(*args, **kwargs)

    monkeypatch.setattr(deform_module, "deform_conv2d_sampled", spy)
    layer = DeformConv2dPack(2, 2, 3, padding=1, modulated=True)
    layer(torch.randn(1, 2, 5, 5))
    assert calls == [1]


def test_sampled_path_rejects_bad_offset_channels():
    with pytest.raises(ValueError, match="offset has 5 channels"):
        deform_conv2d_sampled(
            torch.randn(1, 2, 5, 5), torch.randn(1, 5, 5, 5), torch.randn(2, 2, 3, 3)
        )
