"""ResNet with torchvision-based deformable / dilated 3x3 convs, and the ResNet+FPN+PAN backbone.

Both builders are registered in detectron2's ``BACKBONE_REGISTRY``:

- ``build_bmc_resnet_backbone``: detectron2's ResNet, with ``MODEL.RESNETS.DEFORM_ON_PER_STAGE``
  / ``DEFORM_MODULATED`` / ``DEFORM_NUM_GROUPS`` realised by
  :class:`~bmc_detectron.modeling.deform.DeformConv2dPack` (not detectron2's compiled op) and
  ``MODEL.BMC.BACKBONE.STAGE_DILATIONS`` applied to the 3x3 convs;
- ``build_bmc_resnet_pan_backbone``: that ResNet + FPN + optional PAN/SE + extra levels
  (:class:`~bmc_detectron.modeling.neck.BMCPANFPN`), configured by ``MODEL.FPN`` and
  ``MODEL.BMC.NECK``.

The modified conv of a block is always its ``conv2``: the only 3x3 conv of a bottleneck block
(ResNet-50 and deeper) and the second, stride-1, 3x3 conv of a basic block (ResNet-18/34, for
which detectron2 itself has no deformable variant). Parameter names are those of detectron2's
ResNet plus ``conv2.offset_conv.*``, so ImageNet checkpoints still load.
"""

from __future__ import annotations

import math
from typing import List, Sequence

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import ResNet, build_resnet_backbone

from bmc_detectron.modeling.deform import DeformConv2dPack
from bmc_detectron.modeling.neck import BMCPANFPN, PANNeck, make_top_block

__all__ = [
    "dilate_resnet_stages",
    "make_resnet_stages_deformable",
    "build_bmc_resnet_backbone",
    "build_bmc_resnet_pan_backbone",
]


def _stage_blocks(resnet: ResNet, flags: Sequence, what: str):
    """Yield (stage index 0..3, block) for every block of every stage listed in ``flags``."""
    if len(flags) != 4:
        raise ValueError(f"{what} needs one entry per stage res2..res5, got {list(flags)}")
    for name, stage in zip(resnet.stage_names, resnet.stages):
        idx = int(name[len("res") :]) - 2
        for block in stage:
            yield idx, block


def dilate_resnet_stages(resnet: ResNet, dilations: Sequence[int]) -> ResNet:
    """Set the dilation (and padding) of every block's 3x3 ``conv2`` in res2..res5, in place.

    Strides and feature sizes are unchanged (padding = dilation). An entry of 1 leaves the
    stage as built (so ``MODEL.RESNETS.RES5_DILATION`` still applies there).

    Args:
        resnet: a detectron2 ResNet; stages it does not have are ignored.
        dilations: 4 positive ints, for res2, res3, res4, res5.
    """
    if any(int(d) < 1 for d in dilations):
        raise ValueError(f"stage dilations must be >= 1, got {list(dilations)}")
    for idx, block in _stage_blocks(resnet, dilations, "MODEL.BMC.BACKBONE.STAGE_DILATIONS"):
        d = int(dilations[idx])
        if d == 1:
            continue
        conv = block.conv2
        if conv.kernel_size != (3, 3):
            raise ValueError(f"expected a 3x3 conv2 in {type(block).__name__}")
        conv.dilation = (d, d)
        conv.padding = (d, d)
    return resnet


def make_resnet_stages_deformable(
    resnet: ResNet,
    deform_on_per_stage: Sequence[bool],
    *,
    modulated: bool = False,
    deform_num_groups: int = 1,
) -> ResNet:
    """Replace ``conv2`` of every block of the chosen stages by a :class:`DeformConv2dPack`.

    The new conv shares the old one's weight and norm (and its stride, padding, dilation and
    groups), with a zero-initialised offset predictor, so the network's output is unchanged
    until the offsets are trained. Works for bottleneck and basic (R-18/34) blocks. Call it
    before freezing: the offset convs of frozen stages must be frozen as well.

    Args:
        resnet: a detectron2 ResNet, modified in place; stages it does not have are ignored.
        deform_on_per_stage: 4 bools, for res2, res3, res4, res5.
        modulated: DCNv2 (offsets and mask) instead of DCNv1.
        deform_num_groups: offset groups of each deformable conv.
    """
    flags = _stage_blocks(resnet, deform_on_per_stage, "MODEL.RESNETS.DEFORM_ON_PER_STAGE")
    for idx, block in flags:
        if deform_on_per_stage[idx] and not isinstance(block.conv2, DeformConv2dPack):
            block.conv2 = DeformConv2dPack.from_conv(
                block.conv2, modulated=modulated, deform_num_groups=deform_num_groups
            )
    return resnet


@BACKBONE_REGISTRY.register()
def build_bmc_resnet_backbone(
    cfg, input_shape: ShapeSpec, out_features: List[str] | None = None
) -> ResNet:
    """detectron2's ResNet from ``MODEL.RESNETS`` with our deformable and dilated 3x3 convs.

    Args:
        cfg: a config from :func:`bmc_detectron.config.get_bmc_cfg`.
        input_shape: the image channels.
        out_features: overrides ``MODEL.RESNETS.OUT_FEATURES`` if given.
    """
    resnets = cfg.MODEL.RESNETS
    stock = cfg.clone()
    stock.defrost()
    stock.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False] * 4  # ours replace detectron2's _C ops
    stock.MODEL.BACKBONE.FREEZE_AT = 0  # frozen below, after the deformable convs exist
    if out_features is not None:
        stock.MODEL.RESNETS.OUT_FEATURES = list(out_features)
    resnet = build_resnet_backbone(stock, input_shape)
    dilate_resnet_stages(resnet, cfg.MODEL.BMC.BACKBONE.STAGE_DILATIONS)
    make_resnet_stages_deformable(
        resnet,
        resnets.DEFORM_ON_PER_STAGE,
        modulated=resnets.DEFORM_MODULATED,
        deform_num_groups=resnets.DEFORM_NUM_GROUPS,
    )
    return resnet.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_bmc_resnet_pan_backbone(cfg, input_shape: ShapeSpec) -> BMCPANFPN:
    """ResNet -> FPN -> optional PAN with SE fusion -> extra levels, from ``MODEL.BMC.NECK``.

    The ResNet outputs exactly what the neck needs (``MODEL.FPN.IN_FEATURES`` plus ``TOP_BLOCK_IN``
    when that is a ResNet stage), whatever ``MODEL.RESNETS.OUT_FEATURES`` says. Outputs are
    named ``p<log2 stride>`` (e.g. p3..p7) in every variant.
    """
    neck, fpn = cfg.MODEL.BMC.NECK, cfg.MODEL.FPN
    in_features = list(fpn.IN_FEATURES)
    needed = list(in_features)
    if neck.TOP_BLOCK and neck.TOP_BLOCK_IN.startswith("res") and neck.TOP_BLOCK_IN not in needed:
        needed.append(neck.TOP_BLOCK_IN)
    bottom_up = build_bmc_resnet_backbone(cfg, input_shape, out_features=needed)
    shapes = bottom_up.output_shape()
    names = [f"p{int(math.log2(shapes[f].stride))}" for f in in_features]
    top_in_channels = (
        shapes[neck.TOP_BLOCK_IN].channels if neck.TOP_BLOCK_IN in shapes else fpn.OUT_CHANNELS
    )
    return BMCPANFPN(
        bottom_up,
        in_features,
        fpn.OUT_CHANNELS,
        norm=fpn.NORM,
        fuse_type=fpn.FUSE_TYPE,
        pan=PANNeck(cfg, num_levels=len(in_features), level_names=names) if neck.PAN else None,
        top_block=make_top_block(
            neck.TOP_BLOCK, neck.TOP_BLOCK_IN, top_in_channels, fpn.OUT_CHANNELS
        ),
    )
