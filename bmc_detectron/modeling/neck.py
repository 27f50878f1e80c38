"""The neck: FPN top-down path, optional PANet bottom-up path with SE-weighted fusion, extra levels.

``P`` are the FPN outputs (detectron2's :class:`~detectron2.modeling.backbone.fpn.FPN` convs),
``N`` the bottom-up outputs: ``N_low = P_low`` and, for each higher level,
``N_{i+1} = Conv3x3(w * Down(N_i) + P_{i+1})`` where ``Down`` is a 3x3 stride-2 conv and ``w``
the per-channel SE attention of ``P_{i+1}`` (``w = 1`` without attention). Every output keeps the
FPN name ``p<log2 stride>``, whether or not the bottom-up path is on.
"""

from __future__ import annotations

import math
from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.utils.events import EventStorage, get_event_storage
from torch import Tensor, nn

__all__ = ["SEWeight", "SEFusion", "PANNeck", "LastLevelP6", "make_top_block", "BMCPANFPN"]


def _conv3x3(channels: int, norm: str, stride: int = 1) -> Conv2d:
    conv = Conv2d(
        channels,
        channels,
        kernel_size=3,
        stride=stride,
        padding=1,
        bias=norm == "",
        norm=get_norm(norm, channels),
    )
    weight_init.c2_xavier_fill(conv)
    return conv


class SEWeight(nn.Module):
    """Per-channel attention weights of a feature map, the squeeze-and-excitation gate.

    From Hu et al., "Squeeze-and-Excitation Networks" (CVPR 2018):
    ``w = sigmoid(FC2(ReLU(FC1(GAP(x)))))`` with a bottleneck of ``channels // reduction``
    (at least 1) hidden units.
    """

    def __init__(self, channels: int, reduction: int = 16, gate_bias: float | None = None):
        """
        Args:
            channels: channels of the input (and number of weights).
            reduction: bottleneck ratio of the two fully connected layers.
            gate_bias: initial bias of ``FC2`` (None: PyTorch's default init, gates near 0.5);
                e.g. 3.0 starts every gate near sigmoid(3) = 0.95.
        """
        super().__init__()
        if reduction < 1:
            raise ValueError(f"SE reduction must be >= 1, got {reduction}")
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        if gate_bias is not None:
            nn.init.constant_(self.fc2.bias, gate_bias)

    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x: (N, C, H, W) features.

        Returns:
            (N, C, 1, 1) weights in (0, 1).
        """
        squeezed = x.mean(dim=(2, 3))
        weights = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))
        return weights[:, :, None, None]


class SEFusion(nn.Module):
    """One step of the bottom-up path: ``N_{i+1} = Conv3x3(w * Down(N_i) + P_{i+1})``.

    The bottom-up augmentation is that of Liu et al., "Path Aggregation Network for Instance
    Segmentation" (PANet, CVPR 2018); the lower level is weighted per channel with the
    squeeze-and-excitation gate (Hu et al., CVPR 2018) of ``P_{i+1}`` when ``attention`` is on.
    Both convs are initialised like detectron2's FPN convs (``c2_xavier_fill``); none has an
    activation, as in the FPN.
    """

    def __init__(
        self,
        channels: int,
        *,
        norm: str = "",
        attention: bool = True,
        reduction: int = 16,
        gate_bias: float | None = None,
        name: str = "",
    ):
        """
        Args:
            channels: channels of ``N_i``, ``P_{i+1}`` and the output.
            norm: detectron2 norm name for both convs ("" = none, then the convs have a bias).
            attention: weight ``Down(N_i)`` with :class:`SEWeight` of ``P_{i+1}``; off: ``w = 1``.
            reduction: SE bottleneck ratio.
            gate_bias: initial bias of the gate's last layer (see :class:`SEWeight`).
            name: level name used for the gate statistics logged in training.
        """
        super().__init__()
        self.down = _conv3x3(channels, norm, stride=2)
        self.se = SEWeight(channels, reduction, gate_bias) if attention else None
        self.fuse = _conv3x3(channels, norm)
        self.name = name

    def _log_gate(self, gate: Tensor) -> None:
        """Mean and spread (std over images and channels) of the gate, into the event storage
        of a running training loop (detectron2 writes them to metrics.json)."""
        try:
            storage: EventStorage = get_event_storage()
        except AssertionError:  # not inside a training loop
            return
        gate = gate.detach().float()
        storage.put_scalar(f"se_gate/{self.name}_mean", gate.mean().item(), smoothing_hint=False)
        storage.put_scalar(f"se_gate/{self.name}_std", gate.std().item(), smoothing_hint=False)

    def forward(self, lower: Tensor, higher: Tensor) -> Tensor:
        """
        Args:
            lower: (N, C, H, W) bottom-up output ``N_i`` of the finer level.
            higher: (N, C, ceil(H/2), ceil(W/2)) FPN output ``P_{i+1}`` of the next level.

        Returns:
            (N, C, ceil(H/2), ceil(W/2)) ``N_{i+1}``.
        """
        down = self.down(lower)
        if self.se is not None:
            gate = self.se(higher)
            if self.training:
                self._log_gate(gate)
            down = down * gate
        return self.fuse(down + higher)


class PANNeck(nn.Module):
    """The bottom-up path of PANet (Liu et al., CVPR 2018) with SE fusion (Hu et al., CVPR 2018).

    Takes the FPN levels finest first and returns the ``N`` levels in the same order and sizes;
    the finest level passes through unchanged (``N_low = P_low``).
    """

    @configurable
    def __init__(
        self,
        *,
        num_levels: int,
        channels: int,
        norm: str = "",
        attention: bool = True,
        se_reduction: int = 16,
        se_gate_bias: float | None = None,
        level_names: List[str] | None = None,
    ):
        """
        Args:
            num_levels: number of FPN levels fed in (>= 1).
            channels: channels of every level.
            norm, attention: see :class:`SEFusion`.
            se_reduction, se_gate_bias: SE bottleneck ratio and initial gate bias.
            level_names: names of the levels, finest first (default "n0", "n1", ...).
        """
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"PANNeck needs at least one level, got {num_levels}")
        self.num_levels = num_levels
        names = level_names or [f"n{i}" for i in range(num_levels)]
        self.fusions = nn.ModuleList(
            SEFusion(
                channels,
                norm=norm,
                attention=attention,
                reduction=se_reduction,
                gate_bias=se_gate_bias,
                name=names[i + 1],
            )
            for i in range(num_levels - 1)
        )

    @classmethod
    def from_config(cls, cfg, num_levels: int, level_names: List[str] | None = None):
        neck = cfg.MODEL.BMC.NECK
        return {
            "num_levels": num_levels,
            "channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "norm": cfg.MODEL.FPN.NORM,
            "attention": neck.ATTENTION,
            "se_reduction": neck.SE_REDUCTION,
            # 0.0 in the config means PyTorch's default init (the behaviour before the key)
            "se_gate_bias": neck.SE_GATE_BIAS or None,
            "level_names": level_names,
        }

    def forward(self, features: List[Tensor]) -> List[Tensor]:
        """
        Args:
            features: ``num_levels`` FPN maps, finest first; level i is (N, C, H_i, W_i) with
                ``H_{i+1} = ceil(H_i / 2)``.

        Returns:
            the ``num_levels`` bottom-up maps, same order and shapes.
        """
        if len(features) != self.num_levels:
            raise ValueError(f"PANNeck expects {self.num_levels} levels, got {len(features)}")
        outputs = [features[0]]
        for fusion, higher in zip(self.fusions, features[1:]):
            outputs.append(fusion(outputs[-1], higher))
        return outputs


class LastLevelP6(nn.Module):
    """A single extra level ``P6 = Conv3x3/stride 2(x)``, the P6 of RetinaNet without P7.

    Same interface as detectron2's ``LastLevelP6P7`` (Lin et al., "Focal Loss for Dense Object
    Detection", ICCV 2017), and the same parameter names for ``p6``.
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "p5"):
        super().__init__()
        self.num_levels = 1
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        weight_init.c2_xavier_fill(self.p6)

    def forward(self, x: Tensor) -> List[Tensor]:
        """x: (N, C_in, H, W) -> [(N, C_out, ceil(H/2), ceil(W/2))]."""
        return [self.p6(x)]


def make_top_block(
    kind: str, in_feature: str, in_channels: int, out_channels: int
) -> nn.Module | None:
    """The extra levels named by ``MODEL.BMC.NECK.TOP_BLOCK``: "P6P7", "P6" or "" (none)."""
    if kind == "P6P7":
        return LastLevelP6P7(in_channels, out_channels, in_feature=in_feature)
    if kind == "P6":
        return LastLevelP6(in_channels, out_channels, in_feature=in_feature)
    if kind == "":
        return None
    raise ValueError(f"MODEL.BMC.NECK.TOP_BLOCK must be 'P6P7', 'P6' or '', got {kind!r}")


class BMCPANFPN(FPN):
    """ResNet + FPN (Lin et al., CVPR 2017) + optional PANet bottom-up path with SE fusion.

    Bottom-up path: Liu et al., "Path Aggregation Network for Instance Segmentation" (CVPR
    2018); channel attention: Hu et al., "Squeeze-and-Excitation Networks" (CVPR 2018).

    Reuses detectron2's :class:`FPN` for the lateral/output convs (same parameter names and
    initialisation, so detectron2 FPN checkpoints load), then applies ``pan`` (if any) and
    ``top_block`` (if any). ``top_block.in_feature`` is either a feature of ``bottom_up`` (e.g.
    "res5") or the name of the last neck level (e.g. "p5", i.e. ``N5`` when PAN is on).
    ``size_divisibility`` is the largest stride of ``in_features`` (as detectron2's FPN).
    """

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        *,
        norm: str = "",
        fuse_type: str = "sum",
        pan: PANNeck | None = None,
        top_block: nn.Module | None = None,
    ):
        """
        Args:
            bottom_up: backbone producing ``in_features`` (and ``top_block.in_feature`` if it is
                one of its features).
            in_features: contiguous bottom-up features, finest first (e.g. res3, res4, res5).
            out_channels: channels of every output level.
            norm, fuse_type: as for detectron2's :class:`FPN`.
            pan: bottom-up path over the ``len(in_features)`` FPN levels, or ``None``.
            top_block: extra levels (``num_levels``, ``in_feature``, ``forward(x) -> list``).
        """
        super().__init__(bottom_up, in_features, out_channels, norm=norm, fuse_type=fuse_type)
        if pan is not None and pan.num_levels != len(in_features):
            raise ValueError(f"PANNeck has {pan.num_levels} levels for {len(in_features)} inputs")
        self.pan = pan
        self.top_block = top_block
        if top_block is not None:
            last = self._out_features[-1]
            source = top_block.in_feature
            if source not in bottom_up.output_shape() and source != last:
                raise ValueError(
                    f"top block input {source!r} is neither a bottom-up feature "
                    f"({sorted(bottom_up.output_shape())}) nor the last neck level {last!r}"
                )
            stage = int(math.log2(self._out_feature_strides[last]))
            for s in range(stage + 1, stage + 1 + top_block.num_levels):
                self._out_feature_strides[f"p{s}"] = 2**s
            self._out_features = list(self._out_feature_strides)
            self._out_feature_channels = {k: out_channels for k in self._out_features}
        # As detectron2's FPN: inputs are padded to the largest bottom-up stride (e.g. 32); the
        # extra levels are stride-2 convs with padding, which take any size (ceil(H / 2)).

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

    def top_down(self, bottom_up_features: Dict[str, Tensor]) -> List[Tensor]:
        """The FPN outputs ``P`` (finest first) of a dict of bottom-up features."""
        prev = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results = [self.output_convs[0](prev)]
        finer = zip(self.lateral_convs[1:], self.output_convs[1:], self.in_features[-2::-1])
        for lateral_conv, output_conv, name in finer:
            lateral = lateral_conv(bottom_up_features[name])
            prev = lateral + F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, output_conv(prev))
        return results

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            x: (N, C, H, W) images, H and W multiples of :attr:`size_divisibility`.

        Returns:
            ``{"p<k>": (N, out_channels, H / 2**k, W / 2**k)}`` for every output level.
        """
        bottom_up_features = self.bottom_up(x)
        results = self.top_down(bottom_up_features)
        if self.pan is not None:
            results = self.pan(results)
        if self.top_block is not None:
            source = self.top_block.in_feature
            if source in bottom_up_features:
                results.extend(self.top_block(bottom_up_features[source]))
            else:
                results.extend(self.top_block(results[-1]))
        return dict(zip(self._out_features, results))
