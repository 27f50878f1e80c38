"""RetinaNet head with dilated and (optionally) deformable tower convs."""

from __future__ import annotations

from typing import List, Sequence

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from torch import nn

from bmc_detectron.modeling.deform import DeformConv2dPack

__all__ = ["BMCRetinaNetHead"]


class BMCRetinaNetHead(RetinaNetHead):
    """detectron2's RetinaNet head (Lin et al., "Focal Loss for Dense Object Detection", ICCV
    2017) whose classification and box towers use dilated convs (Yu & Koltun, "Multi-Scale
    Context Aggregation by Dilated Convolutions", ICLR 2016) and, optionally, a deformable last
    conv (Dai et al., ICCV 2017; modulated: Zhu et al., CVPR 2019).

    The towers are built by :class:`RetinaNetHead` and then modified in place: dilation and
    padding of each tower conv are set (spatial size unchanged) and the last tower conv is
    replaced by a :class:`~bmc_detectron.modeling.deform.DeformConv2dPack` sharing its weight and
    bias. ``forward`` is inherited: inputs are the per-level (N, C, H_i, W_i) features, outputs
    (N, A*K, H_i, W_i) logits and (N, A*4, H_i, W_i) box deltas. With the defaults (dilation 1,
    no deformable conv) the head has the same parameter names and outputs as ``RetinaNetHead``;
    a deformable conv adds ``offset_conv.*`` parameters, zero-initialised, so a fresh head still
    computes what the stock head would with the same weights.

    With ``reg_max`` > 0 the box branch predicts GFL's box distributions (Li et al., "Generalized
    Focal Loss", NeurIPS 2020; :mod:`bmc_detectron.modeling.gfl`): ``bbox_pred`` outputs
    (N, A*4*(reg_max+1), H_i, W_i) bin logits, those of one side consecutive.
    """

    @configurable
    def __init__(
        self,
        *,
        dilations: Sequence[int] = (1,),
        deform_last: bool = False,
        deform_modulated: bool = True,
        reg_max: int = 0,
        **kwargs,
    ):
        """
        Args:
            dilations: dilation of the tower convs: one value for all of them or one per conv
                (``len(conv_dims)``); each conv's padding equals its dilation.
            deform_last: make the last conv of each tower deformable.
            deform_modulated: that deformable conv is DCNv2 (offsets + mask) rather than DCNv1.
            reg_max: 0 for 4 box deltas per anchor; > 0 for 4 distributions over
                ``reg_max + 1`` bins per anchor (GFL).
            kwargs: the arguments of :class:`RetinaNetHead` (``input_shape``, ``num_classes``,
                ``num_anchors``, ``conv_dims``, ``norm``, ``prior_prob``).
        """
        super().__init__(**kwargs)
        num_convs = len(kwargs["conv_dims"])
        dilations = [int(d) for d in dilations]
        if len(dilations) == 1:
            dilations = dilations * num_convs
        if len(dilations) != num_convs or any(d < 1 for d in dilations):
            raise ValueError(
                f"head dilations must be one positive value or {num_convs} (one per tower "
                f"conv), got {dilations}"
            )
        for tower in (self.cls_subnet, self.bbox_subnet):
            positions = [i for i, layer in enumerate(tower) if isinstance(layer, nn.Conv2d)]
            for i, d in zip(positions, dilations):
                tower[i].dilation = (d, d)
                tower[i].padding = (d, d)
            if deform_last:
                tower[positions[-1]] = DeformConv2dPack.from_conv(
                    tower[positions[-1]], modulated=deform_modulated
                )
        if reg_max < 0:
            raise ValueError(f"MODEL.BMC.HEAD.REG_MAX must be >= 0, got {reg_max}")
        self.reg_max = int(reg_max)
        if self.reg_max > 0:
            old = self.bbox_pred
            out = old.out_channels * (self.reg_max + 1)
            self.bbox_pred = nn.Conv2d(
                old.in_channels, out, kernel_size=old.kernel_size, padding=old.padding
            )
            nn.init.normal_(self.bbox_pred.weight, mean=0, std=0.01)
            nn.init.constant_(self.bbox_pred.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        head = cfg.MODEL.BMC.HEAD
        ret["dilations"] = list(head.DILATIONS)
        ret["deform_last"] = head.DEFORM_LAST
        ret["deform_modulated"] = head.DEFORM_MODULATED
        ret["reg_max"] = head.REG_MAX
        return ret
