"""Deformable convolution as bilinear sampling + one matrix product (the CPU path).

``torchvision.ops.deform_conv2d`` runs a per-pixel loop on CPU whose backward pass is several
times slower than sampling every kernel tap with :func:`torch.nn.functional.grid_sample` and
contracting the samples with the weight in a single batched matrix product (measured on the
CPU config's head: forward + backward about 3x faster). This module computes exactly what
torchvision computes (same offset layout, same bilinear interpolation with zeros outside the
image); :class:`~bmc_detectron.modeling.deform.DeformConv2dPack` uses it on CPU and keeps
torchvision's kernel on GPU, where it is fast and needs no (C x taps x H x W) buffer.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["deform_conv2d_sampled"]


def _sampling_grid(
    offset: Tensor,
    in_size: Tuple[int, int],
    kernel: Tuple[int, int],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
) -> Tensor:
    """Normalised ``grid_sample`` coordinates of every tap of every output pixel.

    Args:
        offset: (B, 2 * K, Ho, Wo) offsets, (dy, dx) per tap, taps row-major (K = kh * kw).
        in_size: (H, W) of the sampled input.

    Returns:
        (B, K * Ho, Wo, 2) grid of (x, y) in [-1, 1] (``align_corners=False`` convention).
    """
    batch, _, out_h, out_w = offset.shape
    kh, kw = kernel
    taps = kh * kw
    height, width = in_size
    opts = {"dtype": offset.dtype, "device": offset.device}
    base_y = torch.arange(out_h, **opts) * stride[0] - padding[0]
    base_x = torch.arange(out_w, **opts) * stride[1] - padding[1]
    tap_y = (torch.arange(kh, **opts) * dilation[0]).repeat_interleave(kw)
    tap_x = (torch.arange(kw, **opts) * dilation[1]).repeat(kh)
    offset = offset.view(batch, taps, 2, out_h, out_w)
    y = base_y.view(1, 1, out_h, 1) + tap_y.view(1, taps, 1, 1) + offset[:, :, 0]
    x = base_x.view(1, 1, 1, out_w) + tap_x.view(1, taps, 1, 1) + offset[:, :, 1]
    # Pixel i's centre is at normalised (2 i + 1) / size - 1 when align_corners is False.
    grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    return grid.view(batch, taps * out_h, out_w, 2)


def _group_counts(
    channels: int, offset_channels: int, group_channels: int, taps: int
) -> Tuple[int, int]:
    """(offset groups, weight groups) of a deformable conv; ValueError if the shapes disagree."""
    offset_groups = offset_channels // (2 * taps)
    if offset_groups < 1 or offset_channels != 2 * taps * offset_groups:
        raise ValueError(f"offset has {offset_channels} channels, not a multiple of 2 * {taps}")
    if channels % offset_groups or channels % group_channels:
        raise ValueError(
            f"{channels} input channels do not split into {offset_groups} offset groups "
            f"and weight groups of {group_channels}"
        )
    return offset_groups, channels // group_channels


def deform_conv2d_sampled(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Tuple[int, int] = (1, 1),
    padding: Tuple[int, int] = (0, 0),
    dilation: Tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
) -> Tensor:
    """Same result as ``torchvision.ops.deform_conv2d`` (up to float rounding).

    Args:
        x: (N, C, H, W) input.
        offset: (N, 2 * G * kh * kw, Ho, Wo) sampling offsets, (dy, dx) per tap, for G offset
            groups (each owns ``C / G`` consecutive input channels).
        weight: (O, C / groups, kh, kw); ``groups = C / weight.shape[1]`` weight groups.
        bias: (O,) or None.
        stride, padding, dilation: (h, w) pairs, as for the plain convolution.
        mask: (N, G * kh * kw, Ho, Wo) DCNv2 modulation, or None (DCNv1).

    Returns:
        (N, O, Ho, Wo).
    """
    batch, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    taps = kh * kw
    out_h, out_w = offset.shape[-2:]
    offset_groups, groups = _group_counts(channels, offset.shape[1], group_channels, taps)
    grid = _sampling_grid(
        offset.reshape(batch * offset_groups, 2 * taps, out_h, out_w),
        (height, width),
        (kh, kw),
        stride,
        padding,
        dilation,
    )
    samples = F.grid_sample(
        x.reshape(batch * offset_groups, channels // offset_groups, height, width),
        grid.to(x.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (N * G, C / G, K * Ho, Wo)
    samples = samples.view(batch, offset_groups, channels // offset_groups, taps, out_h * out_w)
    if mask is not None:
        samples = samples * mask.view(batch, offset_groups, 1, taps, out_h * out_w)
    # (N, C, K, P) -> (N, groups, C / groups * K, P): channel-major, like the weight's layout.
    samples = samples.reshape(batch, groups, group_channels * taps, out_h * out_w)
    kernel = weight.reshape(groups, out_channels // groups, group_channels * taps)
    out = torch.matmul(kernel, samples).view(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
