"""Deformable convolution on ``torchvision.ops.deform_conv2d`` (not detectron2's compiled op).

:class:`DeformConv2dPack` is a convolution that predicts its own sampling offsets (and, for DCNv2,
a modulation mask) with an internal plain convolution. That internal convolution starts at zero,
so a freshly built layer computes exactly the plain convolution with the same weight; training
then learns where to sample. Use :meth:`DeformConv2dPack.from_conv` to turn an existing conv of a
ResNet block or of a detection head into a deformable one that keeps its weight, bias and norm
(and therefore its parameter names, so pretrained checkpoints still load).
"""

from __future__ import annotations

from typing import Callable

import torch
from detectron2.layers import Conv2d
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from bmc_detectron.modeling._deform_sample import deform_conv2d_sampled

__all__ = ["DeformConv2dPack"]


class DeformConv2dPack(Conv2d):
    """A convolution whose kernel samples at learned offsets.

    Implements the deformable convolution of Dai et al., "Deformable Convolutional Networks"
    (ICCV 2017, DCNv1) and, with ``modulated=True``, the modulated deformable convolution of
    Zhu et al., "Deformable ConvNets v2: More Deformable, Better Results" (CVPR 2019, DCNv2).

    The offsets (and the mask) come from ``offset_conv``, a plain convolution with the same
    kernel size, stride, padding and dilation as this layer, initialised to zero. The DCNv2 mask
    is ``2 * sigmoid(m)``: it lies in (0, 2) and equals 1 for ``m = 0``, so a fresh layer (zero
    offsets, unit mask) is exactly the plain convolution.

    The layer is a :class:`detectron2.layers.Conv2d` (hence a ``torch.nn.Conv2d``): it owns
    ``weight``, ``bias``, ``norm`` and ``activation`` under the usual names. Beware that code
    re-initialising every ``nn.Conv2d`` it finds also re-initialises ``offset_conv``; call
    :meth:`reset_offset` afterwards (or convert the conv after initialisation, as
    :meth:`from_conv` users in this package do).

    Only ``padding_mode="zeros"`` and integer / tuple paddings are supported. On CPU the
    convolution runs as bilinear sampling + one matrix product
    (:func:`~bmc_detectron.modeling._deform_sample.deform_conv2d_sampled`, same result, several
    times faster to train than torchvision's CPU kernel); elsewhere torchvision's kernel runs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        modulated: bool = False,
        deform_num_groups: int = 1,
        norm: nn.Module | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
    ):
        """
        Args:
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias:
                as for ``torch.nn.Conv2d``; ``groups`` splits the convolution weight.
            modulated: DCNv2 (offsets and a modulation mask) instead of DCNv1 (offsets only).
            deform_num_groups: number of offset groups; the input channels are split into this
                many groups, each with its own offsets (must divide ``in_channels``).
            norm: optional normalisation applied after the convolution.
            activation: optional callable applied after ``norm``.
        """
        if isinstance(padding, str):
            raise ValueError(
                "DeformConv2dPack needs an explicit integer padding, not 'same'/'valid'"
            )
        if deform_num_groups < 1 or in_channels % deform_num_groups:
            raise ValueError(
                f"deform_num_groups={deform_num_groups} must be >= 1 and divide "
                f"in_channels={in_channels}"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            norm=norm,
            activation=activation,
        )
        self.modulated = modulated
        self.deform_num_groups = deform_num_groups
        taps = deform_num_groups * self.kernel_size[0] * self.kernel_size[1]
        self._num_offset_channels = 2 * taps
        self.offset_conv = nn.Conv2d(
            in_channels,
            (3 if modulated else 2) * taps,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        self.reset_offset()

    def reset_offset(self) -> None:
        """Zero the offset/mask predictor: the layer becomes the plain convolution again."""
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Predict the sampling offsets (and the DCNv2 mask) for an input.

        Args:
            x: (N, C_in, H, W) input.

        Returns:
            offset: (N, 2 * G * kh * kw, H_out, W_out), ``G = deform_num_groups``;
            mask: (N, G * kh * kw, H_out, W_out) in (0, 2), or ``None`` for DCNv1.
        """
        out = self.offset_conv(x)
        if not self.modulated:
            return out, None
        offset, mask_logits = out.split(
            [self._num_offset_channels, out.shape[1] - self._num_offset_channels], dim=1
        )
        return offset, 2.0 * torch.sigmoid(mask_logits)

    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x: (N, C_in, H, W) input.

        Returns:
            (N, C_out, H_out, W_out), the same size as the plain convolution would give.
        """
        offset, mask = self.offsets_and_mask(x)
        op = deform_conv2d_sampled if x.device.type == "cpu" else deform_conv2d
        x = op(
            x,
            offset.to(x.dtype),
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=None if mask is None else mask.to(x.dtype),
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, modulated={self.modulated}, "
            f"deform_num_groups={self.deform_num_groups}"
        )

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, *, modulated: bool = False, deform_num_groups: int = 1
    ) -> DeformConv2dPack:
        """A deformable version of ``conv`` sharing its weight, bias, norm and activation.

        The returned layer reuses ``conv``'s parameter objects (so it computes exactly what
        ``conv`` computed until its offsets are trained) and lives on ``conv``'s device and
        dtype; its parameter names are ``conv``'s plus ``offset_conv.*``. ``conv`` may be a
        ``torch.nn.Conv2d`` or a :class:`detectron2.layers.Conv2d` (whose ``norm`` and
        ``activation`` are carried over).
        """
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only zero padding with an explicit size can be made deformable")
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            modulated=modulated,
            deform_num_groups=deform_num_groups,
            norm=getattr(conv, "norm", None),
            activation=getattr(conv, "activation", None),
        )
        layer.weight = conv.weight
        layer.bias = conv.bias
        layer.offset_conv.to(device=conv.weight.device, dtype=conv.weight.dtype)
        layer.offset_conv.requires_grad_(conv.weight.requires_grad)
        layer.train(conv.training)
        return layer
