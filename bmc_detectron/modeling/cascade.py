"""More than one look: the refinement stage repeated as a cascade, each stage at a higher IoU.

One refinement stage (:mod:`bmc_detectron.modeling.refine`) is trained on samples whose IoU with
their cell is at least 0.5, and so learns the corrections that matter around that quality. Cascade
R-CNN's observation is that a regressor trained at one IoU improves boxes best near it; its
stages are trained at rising thresholds (0.5, 0.6, 0.7), each on the previous stage's refined
samples, with tighter delta weights, and its classifiers' scores are averaged. Here the stages
follow the dense detector's detections the same way.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.structures import Instances
from torch import Tensor, nn

from bmc_detectron.modeling.refine import REFINE_DELTA_WEIGHTS, BoxRefinementHead

__all__ = ["RefinementCascade", "build_refinement"]


class RefinementCascade(nn.Module):
    """Refinement stages applied in turn to a dense detector's detections.

    Cascade R-CNN (Cai & Vasconcelos, "Cascade R-CNN: Delving into High Quality Object
    Detection", CVPR 2018): stage t (a :class:`BoxRefinementHead`) is trained on stage t-1's
    refined samples (detached; the first stage samples the detections, the gt boxes and their
    jittered copies) with foreground IoU ``u_t`` and delta weights ``t x`` Faster R-CNN's; at
    inference each stage refines the previous stage's boxes, the last stage's IoU score and the
    mean of the stages' class probabilities rescore the detections, and the last stage's NMS
    setting applies. Stage t's losses are named ``loss_refine_*`` for the first and
    ``loss_refine_*_t`` (t = 2, 3, ...) after it, each at the stages' loss weight.
    """

    @configurable
    def __init__(self, *, stages: Sequence[BoxRefinementHead]):
        """
        Args:
            stages: the stages, first first (two or more).
        """
        super().__init__()
        if len(stages) < 2:
            raise ValueError(f"a refinement cascade needs two or more stages, got {len(stages)}")
        self.stages = nn.ModuleList(stages)

    @classmethod
    def from_config(cls, cfg, input_shapes: List[ShapeSpec]):
        ref = cfg.MODEL.BMC.REFINE
        base = BoxRefinementHead.from_config(cfg, input_shapes)
        stages = []
        for t, iou in enumerate([ref.FOREGROUND_IOU, *ref.CASCADE_IOUS], start=1):
            weights = tuple(w * t for w in REFINE_DELTA_WEIGHTS)
            kwargs = {**base, "foreground_iou": iou, "delta_weights": weights}
            stages.append(BoxRefinementHead(**kwargs))
        return {"stages": stages}

    def losses(
        self, features: List[Tensor], detections: List[Instances], gt: List[Instances]
    ) -> Dict[str, Tensor]:
        """Every stage's losses (see the class doc) on its samples.

        Args:
            features: per level (N, C, Hi, Wi) maps, finest first.
            detections: the N images' dense detections (detached).
            gt: the N images' ground truth (``gt_boxes``, ``gt_classes``).
        """
        samples = self.stages[0].samples(detections, gt)
        out: Dict[str, Tensor] = {}
        for t, stage in enumerate(self.stages, start=1):
            losses, samples = stage.sample_losses(features, samples, gt)
            out.update({(k if t == 1 else f"{k}_{t}"): v for k, v in losses.items()})
        return out

    def refine(self, features: List[Tensor], detections: List[Instances]) -> List[Instances]:
        """The detections refined by every stage in turn and rescored (see the class doc).

        Args:
            features: per level (N, C, Hi, Wi) maps, finest first.
            detections: the N images' detections (``pred_boxes``, ``scores``,
                ``pred_classes``) in the input's pixels.
        """
        boxes = [d.pred_boxes for d in detections]
        sizes = [d.image_size for d in detections]
        iou: Optional[Tensor] = None
        probs: List[Tensor] = []
        for stage in self.stages:
            deltas, iou, classes = stage.forward(features, boxes)
            if classes is not None:
                probs.append(classes.softmax(dim=1))
            boxes = stage.apply(deltas, boxes, sizes)
        mean = torch.stack(probs).mean(dim=0) if probs else None
        return self.stages[-1].finish(detections, boxes, iou, mean)


def build_refinement(cfg, input_shapes: List[ShapeSpec]) -> Optional[nn.Module]:
    """The detector's refinement from ``MODEL.BMC.REFINE``: None (off), one
    :class:`BoxRefinementHead`, or a :class:`RefinementCascade` when ``CASCADE_IOUS`` names
    further stages."""
    ref = cfg.MODEL.BMC.REFINE
    if not ref.ENABLED:
        return None
    if len(ref.CASCADE_IOUS) == 0:
        return BoxRefinementHead(cfg, input_shapes)
    return RefinementCascade(cfg, input_shapes)
