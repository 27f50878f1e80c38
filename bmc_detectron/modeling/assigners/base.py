"""The label-assignment contract shared by every assigner.

An assigner labels the anchors of **one image**. It follows detectron2's ``Matcher`` convention:

- ``matched_idxs`` (R,) int64: index of the gt each anchor is matched to (any value, e.g. 0, for
  anchors that are not foreground);
- ``labels`` (R,) int8: 1 foreground, 0 background, -1 ignored (no loss);
- and, outside the tuple, ``quality`` (R,) float32 or None: the classification target of each
  positive, for the assigners that define one (``gives_quality = True``, e.g. TaskAligned's
  normalised alignment); None for the others and for images without gt.

:class:`~bmc_detectron.modeling.meta_arch.BMCRetinaNet` turns these into class labels in
``0..K`` (``K`` = background) exactly as detectron2's ``RetinaNet.label_anchors`` does.

Assigners whose decision depends on the current predictions (OTA, SimOTA, PAA, DynamicSoft) set
``needs_predictions = True`` and receive **detached** per-anchor logits and decoded boxes. They must
work for images without gt, run under ``torch.no_grad()``, compute costs in float32, contain no
Python loop over anchors, and never build a (gt x anchors x classes) tensor.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from bmc_detectron.registry import ASSIGNER_REGISTRY


class AnchorLayout(NamedTuple):
    """The anchors of one image, all levels concatenated.

    Attributes:
        boxes: (R, 4) XYXY anchors, level after level; inside a level the order is
            (H, W, A) as produced by detectron2's ``DefaultAnchorGenerator``.
        num_per_level: anchors per level, summing to R.
        num_per_location: anchors per feature-map location (A), the same on every level.
        strides: stride in pixels of each level.
    """

    boxes: Tensor
    num_per_level: List[int]
    num_per_location: int
    strides: List[int]

    def level_strides(self) -> Tensor:
        """(R,) float stride of each anchor's level."""
        counts = torch.as_tensor(self.num_per_level, device=self.boxes.device)
        strides = torch.as_tensor(self.strides, dtype=torch.float32, device=self.boxes.device)
        return torch.repeat_interleave(strides, counts)

    def centers(self) -> Tensor:
        """(R, 2) anchor centres (x, y)."""
        return (self.boxes[:, :2] + self.boxes[:, 2:]) / 2


class _MatchedLabels(NamedTuple):
    matched_idxs: Tensor  # (R,) int64
    labels: Tensor  # (R,) int8 in {-1, 0, 1}


class AssignResult(_MatchedLabels):
    """Output of an assigner; see the module docstring.

    It unpacks as ``matched_idxs, labels``; ``quality`` is an attribute outside the tuple (None
    unless the assigner set it with :meth:`with_quality`).
    """

    quality: Optional[Tensor] = None

    def with_quality(self, quality: Tensor) -> AssignResult:
        """This result with (R,) float32 ``quality``: the soft target of positives, 0 elsewhere."""
        out = AssignResult(*self)
        out.quality = quality
        return out


class BaseAssigner:
    """Base class: subclasses implement :meth:`assign` for one image."""

    #: whether :meth:`assign` needs ``pred_logits`` and ``pred_boxes``
    needs_predictions: bool = False
    #: whether its :class:`AssignResult` carries a per-anchor ``quality`` (soft target)
    gives_quality: bool = False

    def assign(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Optional[Tensor] = None,
        pred_boxes: Optional[Tensor] = None,
    ) -> AssignResult:
        """Label the anchors of one image.

        Args:
            anchors: the image's anchors (R of them).
            gt_boxes: (G, 4) XYXY gt boxes; G may be 0.
            gt_classes: (G,) int64 class indices in 0..K-1.
            pred_logits: (R, K) detached classification logits, if ``needs_predictions``.
            pred_boxes: (R, 4) detached decoded XYXY boxes, if ``needs_predictions``.
        """
        raise NotImplementedError

    def __call__(self, *args, **kwargs) -> AssignResult:
        with torch.no_grad():
            return self.assign(*args, **kwargs)


class PredictionAssigner(BaseAssigner):
    """Base of the assigners that look at the predictions (OTA, SimOTA, PAA, DynamicSoft).

    :meth:`assign` answers an image without gt (or without anchors) with all background, checks
    that the predictions were given, casts boxes and logits to float32 (costs are always float32)
    and hands over to the subclass's :meth:`match`.
    """

    needs_predictions = True

    def assign(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Optional[Tensor] = None,
        pred_boxes: Optional[Tensor] = None,
    ) -> AssignResult:
        num_anchors = len(anchors.boxes)
        if len(gt_boxes) == 0 or num_anchors == 0:
            return empty_result(num_anchors, anchors.boxes.device)
        check_predictions(type(self).__name__, pred_logits, pred_boxes)
        gt_boxes, pred_logits, pred_boxes = as_float32(gt_boxes, pred_logits, pred_boxes)
        return self.match(anchors, gt_boxes, gt_classes.long(), pred_logits, pred_boxes)

    def match(
        self,
        anchors: AnchorLayout,
        gt_boxes: Tensor,
        gt_classes: Tensor,
        pred_logits: Tensor,
        pred_boxes: Tensor,
    ) -> AssignResult:
        """Label the anchors of one image with G >= 1 gts and R >= 1 anchors.

        Args:
            anchors: the image's R anchors.
            gt_boxes: (G, 4) float32 XYXY gt boxes.
            gt_classes: (G,) int64 class indices.
            pred_logits: (R, K) float32 detached logits.
            pred_boxes: (R, 4) float32 detached decoded XYXY boxes.
        """
        raise NotImplementedError


def empty_result(num_anchors: int, device: torch.device) -> AssignResult:
    """Every anchor background: the answer for an image without gt."""
    return AssignResult(
        torch.zeros(num_anchors, dtype=torch.int64, device=device),
        torch.zeros(num_anchors, dtype=torch.int8, device=device),
    )


def check_predictions(
    name: str, pred_logits: Optional[Tensor], pred_boxes: Optional[Tensor]
) -> None:
    """Raise ``ValueError`` if an assigner that needs predictions did not get them."""
    if pred_logits is None or pred_boxes is None:
        raise ValueError(f"{name} needs pred_logits and pred_boxes (needs_predictions=True)")


def as_float32(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """The tensors in float32 (costs are always computed in float32, even for half inputs)."""
    return tuple(t.float() for t in tensors)


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of corresponding XYXY boxes, broadcasting over leading dimensions.

    ``paired_iou(gt[:, None], anchors[None])`` is the (G, R) IoU matrix; it works coordinate by
    coordinate, so no (G, R, 2) intermediate is built.

    Args:
        boxes1: (..., 4) boxes.
        boxes2: (..., 4) boxes, broadcastable against ``boxes1``.

    Returns:
        (...) IoU; 0 where the union is empty. Inverted boxes count as empty.
    """
    x1, y1, x2, y2 = boxes1.unbind(-1)
    u1, v1, u2, v2 = boxes2.unbind(-1)
    inter_w = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0)
    inter_h = (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)
    inter = inter_w * inter_h
    area1 = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area2 = (u2 - u1).clamp(min=0) * (v2 - v1).clamp(min=0)
    union = area1 + area2 - inter  # >= 0; 0 only where inter is 0 too
    return inter / union.clamp(min=1e-12)


def build_assigner(cfg) -> BaseAssigner:
    """Build the assigner named by ``cfg.MODEL.BMC.ASSIGNER.NAME``.

    Every assigner is ``@configurable``: its ``from_config(cfg)`` reads its own sub-node
    (``MODEL.BMC.ASSIGNER.<ASSIGNER>``), and it can be built directly from keyword arguments.
    """
    name = cfg.MODEL.BMC.ASSIGNER.NAME
    if name not in ASSIGNER_REGISTRY:
        known = ", ".join(sorted(k for k, _ in ASSIGNER_REGISTRY))
        raise KeyError(f"MODEL.BMC.ASSIGNER.NAME: unknown assigner {name!r}; known: {known}")
    return ASSIGNER_REGISTRY.get(name)(cfg)
