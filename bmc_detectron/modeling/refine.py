"""A second look at a one-stage detector's boxes: RoI features, one box head, one refinement.

A dense detector regresses each box from the features of one location of one pyramid level.
Faster R-CNN's advantage over it on BCCD is mostly box quality (AP75) and small platelets; its
second stage pools the features inside each proposal and regresses again. This module adds that
second stage to RetinaNet's final detections, as one stage of Cascade R-CNN does to its
proposals: RoIAlign on the neck's levels, Faster R-CNN's box head, class-agnostic deltas, and
optionally an IoU-Net-style localisation score and / or Faster R-CNN's classifier (classes +
background) that re-rank the detections.
"""

from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.box_head import FastRCNNConvFCHead
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.structures.boxes import matched_pairwise_iou
from torch import Tensor, nn

__all__ = ["BoxRefinementHead", "RefinementOutputs", "jitter_boxes"]

#: Faster R-CNN's delta weights of its box head (detectron2's ROI_BOX_HEAD.BBOX_REG_WEIGHTS).
REFINE_DELTA_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def jitter_boxes(
    boxes: Tensor, copies: int, scale: float, generator: Optional[torch.Generator] = None
) -> Tensor:
    """(G * copies, 4) XYXY boxes: each of the (G, 4) ``boxes`` moved by up to ``scale`` of its
    width / height and resized by up to a factor ``exp(+-scale)``, uniformly at random (drawn
    on the CPU from ``generator``, or the global generator)."""
    if copies == 0 or len(boxes) == 0:
        return boxes.new_zeros((0, 4))
    boxes = boxes.float().repeat(copies, 1)
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0)
    centre = (boxes[:, 2:] + boxes[:, :2]) / 2
    noise = (torch.rand(boxes.shape, generator=generator) * 2 - 1).to(boxes.device)
    centre = centre + noise[:, :2] * scale * wh
    wh = wh * torch.exp(noise[:, 2:] * scale)
    return torch.cat([centre - wh / 2, centre + wh / 2], dim=1)


class RefinementOutputs(NamedTuple):
    """What the head predicts for M boxes."""

    deltas: Tensor  # (M, 4) float32, weighted by REFINE_DELTA_WEIGHTS
    iou: Optional[Tensor]  # (M,) IoU logits, with iou_score
    classes: Optional[Tensor]  # (M, K + 1) class logits, background last, with classify


class BoxRefinementHead(nn.Module):
    """Refines a dense detector's detections once from RoI-pooled features.

    The box head of Faster R-CNN (Ren et al., "Faster R-CNN: Towards Real-Time Object Detection
    with Region Proposal Networks", NeurIPS 2015) applied as one refinement stage of Cascade
    R-CNN (Cai & Vasconcelos, "Cascade R-CNN: Delving into High Quality Object Detection",
    CVPR 2018) to RetinaNet's detections, with the localisation score of IoU-Net (Jiang et al.,
    "Acquisition of Localization Confidence for Accurate Object Detection", ECCV 2018) as an
    option, and Faster R-CNN's own classifier (K classes + background) as another. The boxes are
    refined class-agnostically: the detections keep the dense head's classes.

    Training samples the dense head's own detections (detached, as inference makes them), the
    ground-truth boxes and jittered copies of them; a sample whose best IoU with a gt box is
    >= ``foreground_iou`` learns that box's deltas (L1, summed and divided by the number of
    samples, as Faster R-CNN does); with ``iou_score``, every sample also
    learns the IoU of its refined box with its best gt (binary cross-entropy); with
    ``classify``, its gt's class, or background below ``foreground_iou`` (cross-entropy).
    Rescoring multiplies the dense score by the predicted IoU and / or the RoI classifier's
    probability of the detection's class, and takes the geometric mean of the factors.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        strides: Sequence[int],
        pooler_resolution: int = 7,
        fc_dim: int = 256,
        num_fc: int = 2,
        iou_score: bool = False,
        classify: bool = False,
        num_classes: int = 0,
        proposals_per_image: int = 100,
        gt_copies: int = 4,
        jitter: float = 0.15,
        foreground_iou: float = 0.5,
        loss_weight: float = 0.25,
        detach_features: bool = False,
        nms_thresh: float = 0.5,
        second_nms: bool = True,
        delta_weights: Sequence[float] = REFINE_DELTA_WEIGHTS,
    ):
        """
        Args:
            in_channels: channels of every pyramid level the detector's head reads.
            strides: their strides (powers of two, consecutive levels), e.g. (8, 16, ..., 128).
            pooler_resolution: side of the RoIAlign grid.
            fc_dim, num_fc: the box head's fully connected layers.
            iou_score: also predict the refined box's IoU with its object; inference scores
                become ``sqrt(score * IoU)``.
            classify: also classify each box among ``num_classes`` + background; inference
                scores take the probability of the detection's class as a factor.
            num_classes: K, the detector's classes (with ``classify``).
            proposals_per_image: most detections of each training image sampled (best first).
            gt_copies, jitter: jittered copies of each gt box added to the samples, moved and
                rescaled by up to ``jitter`` of its size.
            foreground_iou: samples at or above this IoU with a gt learn its deltas.
            loss_weight: multiplier of the refinement losses.
            detach_features: training does not reach the features (the dense detector trains
                as it would alone).
            nms_thresh: IoU of the per-class NMS after refinement (refined duplicates converge).
            second_nms: run that NMS; False keeps every refined detection.
            delta_weights: the box transform's (wx, wy, ww, wh); larger for later stages of a
                cascade, whose boxes are closer (:mod:`bmc_detectron.modeling.cascade`).
        """
        super().__init__()
        levels = [math.log2(s) for s in strides]
        if any(lv != int(lv) for lv in levels):
            raise ValueError(f"box refinement: strides must be powers of two, got {strides}")
        self.pooler = ROIPooler(
            output_size=pooler_resolution,
            scales=[1.0 / s for s in strides],
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        )
        shape = ShapeSpec(channels=in_channels, height=pooler_resolution, width=pooler_resolution)
        self.box_head = FastRCNNConvFCHead(shape, conv_dims=[], fc_dims=[fc_dim] * num_fc)
        self.deltas = _predictor(fc_dim, 4, std=0.001)
        self.iou = _predictor(fc_dim, 1, std=0.01) if iou_score else None
        if classify and num_classes < 1:
            raise ValueError(f"box refinement: classify needs num_classes >= 1, got {num_classes}")
        self.classes = _predictor(fc_dim, num_classes + 1, std=0.01) if classify else None
        self.transform = Box2BoxTransform(weights=tuple(delta_weights))
        self.proposals_per_image = proposals_per_image
        self.gt_copies, self.jitter = gt_copies, jitter
        self.foreground_iou, self.loss_weight = foreground_iou, loss_weight
        self.nms_thresh, self.second_nms = nms_thresh, second_nms
        self.detach_features = detach_features
        # the jitter's own generator: training draws nothing from the global one
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, ()).item()))

    @classmethod
    def from_config(cls, cfg, input_shapes: List[ShapeSpec]):
        ref = cfg.MODEL.BMC.REFINE
        return {
            "in_channels": input_shapes[0].channels,
            "strides": [s.stride for s in input_shapes],
            "pooler_resolution": ref.POOLER_RESOLUTION,
            "fc_dim": ref.FC_DIM,
            "num_fc": ref.NUM_FC,
            "iou_score": ref.IOU_SCORE,
            "classify": ref.CLASSIFY,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "proposals_per_image": ref.PROPOSALS_PER_IMAGE,
            "gt_copies": ref.GT_COPIES,
            "jitter": ref.JITTER,
            "foreground_iou": ref.FOREGROUND_IOU,
            "loss_weight": ref.LOSS_WEIGHT,
            "detach_features": ref.DETACH_FEATURES,
            "nms_thresh": cfg.MODEL.RETINANET.NMS_THRESH_TEST,
            "second_nms": ref.SECOND_NMS,
        }

    def forward(self, features: List[Tensor], boxes: List[Boxes]) -> RefinementOutputs:
        """The head's predictions for boxes.

        Args:
            features: per level (N, C, Hi, Wi) maps, finest first.
            boxes: N images' XYXY boxes in the input's pixels, M in all.
        """
        pooled = self.pooler([f.float() for f in features], boxes)  # (M, C, S, S)
        hidden = self.box_head(pooled)
        iou = None if self.iou is None else self.iou(hidden).float().squeeze(1)
        classes = None if self.classes is None else self.classes(hidden).float()
        return RefinementOutputs(self.deltas(hidden).float(), iou, classes)

    @staticmethod
    def rescore(
        scores: Tensor, labels: Tensor, iou: Optional[Tensor], class_probs: Optional[Tensor]
    ) -> Tensor:
        """(M,) scores: the geometric mean of the dense ``scores`` and, where predicted, the IoU
        (from its (M,) logits) and the RoI classifier's probability of each detection's class
        ``labels`` (from the (M, K + 1) ``class_probs``)."""
        factors = [scores]
        if iou is not None:
            factors.append(iou.sigmoid())
        if class_probs is not None:
            factors.append(class_probs.gather(1, labels[:, None]).squeeze(1))
        if len(factors) == 1:
            return scores
        return torch.stack(factors).prod(dim=0) ** (1.0 / len(factors))

    def apply(
        self, deltas: Tensor, boxes: List[Boxes], sizes: Sequence[Tuple[int, int]]
    ) -> List[Boxes]:
        """Per image the (Mi, 4) ``boxes`` moved by their rows of the (M, 4) ``deltas``, clipped
        to the image's (height, width) in ``sizes``."""
        # slices, not Tensor.split: an ONNX trace bakes the sizes in, and a Slice past the rows
        # an image has clamps where a Split fails (the count varies from image to image)
        out, start = [], 0
        for b, size in zip(boxes, sizes):
            moved = Boxes(self.transform.apply_deltas(deltas[start : start + len(b)], b.tensor))
            moved.clip(size)
            out.append(moved)
            start += len(b)
        return out

    def refine(self, features: List[Tensor], detections: List[Instances]) -> List[Instances]:
        """The detections (``pred_boxes``, ``scores``, ``pred_classes``, per image in the input's
        pixels) with refined boxes clipped to their image, rescored (:meth:`rescore`), and
        per-class NMS again with ``second_nms``."""
        boxes = [d.pred_boxes for d in detections]
        deltas, iou, classes = self.forward(features, boxes)
        moved = self.apply(deltas, boxes, [d.image_size for d in detections])
        return self.finish(detections, moved, iou, None if classes is None else classes.softmax(1))

    def finish(
        self,
        detections: List[Instances],
        boxes: List[Boxes],
        iou: Optional[Tensor],
        class_probs: Optional[Tensor],
    ) -> List[Instances]:
        """The detections with the refined ``boxes`` (per image), scores by :meth:`rescore`
        from the (M,) IoU logits and (M, K + 1) class probabilities, best first or after the
        second NMS."""
        out, start = [], 0
        for det, new in zip(detections, boxes):
            part = slice(start, start + len(det))
            refined = Instances(det.image_size)
            refined.pred_boxes = new
            refined.scores = self.rescore(
                det.scores,
                det.pred_classes,
                None if iou is None else iou[part],
                None if class_probs is None else class_probs[part],
            )
            refined.pred_classes = det.pred_classes
            if self.second_nms:
                keep = batched_nms(
                    refined.pred_boxes.tensor, refined.scores, refined.pred_classes, self.nms_thresh
                )
                refined = refined[keep]
            elif iou is not None or class_probs is not None:  # best first, as NMS returns them
                refined = refined[refined.scores.argsort(descending=True)]
            out.append(refined)
            start += len(det)
        return out

    def samples(self, detections: List[Instances], gt: List[Instances]) -> List[Boxes]:
        """Each image's training boxes: its best detections, its gt boxes and jittered copies."""
        out = []
        for det, g in zip(detections, gt):
            order = det.scores.argsort(descending=True)[: self.proposals_per_image]
            gt_boxes = g.gt_boxes.tensor.float()
            jittered = jitter_boxes(gt_boxes, self.gt_copies, self.jitter, self.generator)
            boxes = Boxes(torch.cat([det.pred_boxes.tensor[order].float(), gt_boxes, jittered]))
            boxes.clip(g.image_size)
            out.append(boxes[boxes.nonempty()])
        return out

    def losses(
        self, features: List[Tensor], detections: List[Instances], gt: List[Instances]
    ) -> Dict[str, Tensor]:
        """``loss_refine_box`` (and ``loss_refine_iou``, ``loss_refine_cls``) on the samples of
        :meth:`samples`."""
        return self.sample_losses(features, self.samples(detections, gt), gt)[0]

    def sample_losses(
        self, features: List[Tensor], samples: List[Boxes], gt: List[Instances]
    ) -> Tuple[Dict[str, Tensor], List[Boxes]]:
        """The losses on each image's sample boxes, and those boxes refined by the current
        weights (detached, clipped, empty ones dropped: the next stage's samples)."""
        if self.detach_features:
            features = [f.detach() for f in features]
        deltas, iou_logits, class_logits = self.forward(features, samples)
        best_iou, matched, labels = _match(samples, gt)
        proposals = torch.cat([b.tensor for b in samples])
        fg = best_iou >= self.foreground_iou
        targets = self.transform.get_deltas(proposals[fg], matched[fg])
        # Faster R-CNN's normalisation: the L1 sum over the foreground by the number of samples
        loss_box = F.l1_loss(deltas[fg], targets, reduction="sum") / max(len(proposals), 1)
        out = {"loss_refine_box": loss_box * self.loss_weight}
        with torch.no_grad():
            refined = self.transform.apply_deltas(deltas.detach(), proposals)
        if iou_logits is not None:
            with torch.no_grad():
                has_gt = best_iou > 0
                quality = torch.zeros_like(best_iou)
                quality[has_gt] = matched_pairwise_iou(
                    Boxes(refined[has_gt]), Boxes(matched[has_gt])
                ).clamp(min=0.0)
            loss_iou = F.binary_cross_entropy_with_logits(iou_logits, quality)
            out["loss_refine_iou"] = loss_iou * self.loss_weight
        if class_logits is not None:
            background = class_logits.shape[1] - 1
            target = torch.where(fg, labels, torch.full_like(labels, background))
            out["loss_refine_cls"] = F.cross_entropy(class_logits, target) * self.loss_weight
        return out, _next_samples(refined, samples, gt)


def _predictor(in_dim: int, out_dim: int, std: float) -> nn.Linear:
    """A linear predictor with normal(0, std) weights and zero bias (Faster R-CNN's init)."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return layer


def _next_samples(refined: Tensor, samples: List[Boxes], gt: List[Instances]) -> List[Boxes]:
    """The (M, 4) ``refined`` boxes split per image as ``samples`` are, clipped to the image,
    empty ones dropped."""
    out = []
    for part, g in zip(refined.split([len(b) for b in samples]), gt):
        moved = Boxes(part)
        moved.clip(g.image_size)
        out.append(moved[moved.nonempty()])
    return out


def _match(samples: List[Boxes], gt: List[Instances]) -> Tuple[Tensor, Tensor, Tensor]:
    """Each sample's best IoU with its image's gt boxes (S,), that gt's box (S, 4) and class
    (S,) int64 (0, 0 and the sample itself for an image without gt)."""
    best_iou, matched, labels = [], [], []
    for boxes, g in zip(samples, gt):
        if len(g) == 0:
            best_iou.append(boxes.tensor.new_zeros(len(boxes)))
            matched.append(boxes.tensor.float().clone())
            labels.append(torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device))
            continue
        value, index = pairwise_iou(boxes, g.gt_boxes).max(dim=1)  # over (S, G)
        best_iou.append(value)
        matched.append(g.gt_boxes.tensor[index].float())
        labels.append(g.gt_classes[index])
    return torch.cat(best_iou), torch.cat(matched), torch.cat(labels)
