"""IoU-aware classification losses of the dense head, with their box regression loss.

Varifocal loss (Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector", CVPR 2021) or
quality focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020) on the classification
logits, whose targets are 1 (hard), the IoU of each positive's decoded box with its ground truth,
or a quality the assigner gives (TaskAligned's normalised alignment); the box loss is
detectron2's dense regression loss. The model divides both sums by its normaliser.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.layers import cat
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from torch import Tensor

from bmc_detectron.modeling.losses import (
    one_hot_quality_targets,
    quality_focal_loss,
    varifocal_loss,
)

CLS_LOSS_TYPES = ("focal", "varifocal", "quality_focal")
SOFT_TARGETS = ("iou", "alignment")


class QualityLosses:
    """The varifocal or quality focal classification loss and the box loss of the positives.

    Args of ``__call__`` (N images, R anchors over all levels, K classes):
        transform: the model's box transform (deltas or GFL's distances to boxes).
        anchors: per level the Ri anchors (``Boxes``), shared by the images.
        pred_logits: per level (N, Ri, K) classification logits.
        gt_labels: per image (R,) labels, ``K`` for background, -1 ignored.
        pred_anchor_deltas: per level (N, Ri, 4) deltas (or distances).
        gt_boxes: per image (R, 4) matched ground-truth boxes.
        assigned: per image (R,) qualities of the assigner (``soft_target`` "alignment").
    Returns the unnormalised sums ``{"loss_cls", "loss_box_reg"}`` and the number of positives.
    """

    def __init__(
        self,
        *,
        cls_type: str,
        num_classes: int,
        soft_labels: bool = False,
        soft_target: str = "iou",
        vfl_alpha: float = 0.75,
        vfl_gamma: float = 2.0,
        qfl_beta: float = 2.0,
        box_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.1,
    ):
        if cls_type not in CLS_LOSS_TYPES:
            raise ValueError(
                f"MODEL.BMC.LOSS.CLS_TYPE: unknown {cls_type!r}; use one of {CLS_LOSS_TYPES}"
            )
        if soft_labels and cls_type == "focal":
            raise ValueError(
                "MODEL.BMC.LOSS.SOFT_LABELS needs CLS_TYPE 'varifocal' or 'quality_focal'; the "
                "sigmoid focal loss takes binary targets"
            )
        if soft_target not in SOFT_TARGETS:
            raise ValueError(
                f"MODEL.BMC.LOSS.SOFT_TARGET: unknown {soft_target!r}; use one of {SOFT_TARGETS}"
            )
        self.cls_type, self.num_classes = cls_type, num_classes
        self.soft_labels, self.soft_target = soft_labels, soft_target
        self.vfl_alpha, self.vfl_gamma, self.qfl_beta = vfl_alpha, vfl_gamma, qfl_beta
        self.box_reg_loss_type, self.smooth_l1_beta = box_reg_loss_type, smooth_l1_beta

    def soft_targets(
        self, transform, anchors, pred_anchor_deltas, gt_boxes, pos_mask: Tensor, assigned
    ) -> Tensor:
        """(P,) float32 soft classification targets of the (N, R) ``pos_mask`` positives: the
        assigner's ``assigned`` quality ("alignment") or IoU(decoded box, gt) ("iou")."""
        if self.soft_target == "alignment":
            if assigned is None:
                raise ValueError("SOFT_TARGET 'alignment': losses() needs the assigner's quality")
            return torch.stack(assigned)[pos_mask].float()
        # decode the positives only: (P, 4) deltas against their (P, 4) anchors
        anchor_t = Boxes.cat(anchors).tensor.expand(len(pos_mask), -1, -1)[pos_mask]
        deltas = cat(pred_anchor_deltas, dim=1).detach()[pos_mask].float()
        pred = transform.apply_deltas(deltas, anchor_t.float())
        matched = torch.stack(gt_boxes)[pos_mask]
        iou = matched_pairwise_iou(Boxes(pred), Boxes(matched))
        return iou.clamp(min=0.0).float()

    def __call__(
        self,
        transform,
        anchors: List[Boxes],
        pred_logits: List[Tensor],
        gt_labels: List[Tensor],
        pred_anchor_deltas: List[Tensor],
        gt_boxes: List[Tensor],
        assigned: Optional[List[Tensor]] = None,
    ) -> Tuple[Dict[str, Tensor], int]:
        labels = torch.stack(gt_labels)  # (N, R)
        valid_mask = labels >= 0
        pos_mask = valid_mask & (labels != self.num_classes)
        num_pos = int(pos_mask.sum().item())
        quality = torch.ones_like(labels, dtype=torch.float32)
        if self.soft_labels and num_pos > 0:
            quality[pos_mask] = self.soft_targets(
                transform, anchors, pred_anchor_deltas, gt_boxes, pos_mask, assigned
            )
        targets = one_hot_quality_targets(labels[valid_mask], quality[valid_mask], self.num_classes)
        valid_logits = cat(pred_logits, dim=1)[valid_mask]  # of the (N, R, K) logits
        if self.cls_type == "varifocal":
            loss_cls = varifocal_loss(
                valid_logits, targets, alpha=self.vfl_alpha, gamma=self.vfl_gamma
            )
        else:
            loss_cls = quality_focal_loss(valid_logits, targets, beta=self.qfl_beta)
        loss_box_reg = _dense_box_regression_loss(
            anchors,
            transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg}, num_pos
