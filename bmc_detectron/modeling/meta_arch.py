"""BMCRetinaNet: detectron2's RetinaNet with pluggable label assignment and IoU-aware losses."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor
from torchvision.ops import batched_nms

from bmc_detectron.modeling.assigners import AnchorLayout, BaseAssigner, MaxIoU, build_assigner
from bmc_detectron.modeling.cascade import RefinementCascade, build_refinement
from bmc_detectron.modeling.feature_tap import FeatureTap
from bmc_detectron.modeling.gfl import DistributionBoxLosses, dense_distances
from bmc_detectron.modeling.head import BMCRetinaNetHead
from bmc_detectron.modeling.quality_losses import QualityLosses
from bmc_detectron.modeling.refine import BoxRefinementHead
from bmc_detectron.modeling.score_voting import vote_instances


@META_ARCH_REGISTRY.register()
class BMCRetinaNet(RetinaNet):
    """RetinaNet (Lin et al., ICCV 2017) whose anchor labelling goes through an assigner.

    With the :class:`MaxIoU` assigner, the focal loss and detectron2's head and backbone, it is
    numerically identical to detectron2's ``RetinaNet``. Assigners that look at predictions
    (OTA, SimOTA, PAA, DynamicSoft) receive detached logits and decoded boxes; the loss code stays
    detectron2's, except for the IoU-aware classification losses (varifocal, quality focal) and,
    with ``reg_max`` > 0, GFL's box distributions (:mod:`bmc_detectron.modeling.gfl`): the head's
    bin logits are integrated into pixel distances (l, t, r, b) from the anchor centre, which
    take the place of the box deltas everywhere (assigners, losses, inference, export), decoded
    by ``Box2BoxTransformLinear(normalize_by_size=False)``; training adds ``loss_dfl``.
    """

    @configurable
    def __init__(
        self,
        *,
        assigner: Optional[BaseAssigner] = None,
        cls_loss_type: str = "focal",
        soft_labels: bool = False,
        soft_target: str = "iou",
        cls_loss_weight: float = 1.0,
        box_loss_weight: float = 1.0,
        vfl_alpha: float = 0.75,
        vfl_gamma: float = 2.0,
        qfl_beta: float = 2.0,
        reg_max: int = 0,
        dfl_weight: float = 0.25,
        box_score_weights: bool = True,
        score_voting_sigma: float = 0.0,
        refinement: BoxRefinementHead | RefinementCascade | None = None,
        refine_in_features: Optional[List[str]] = None,
        **kwargs,
    ):
        """
        Args:
            assigner: labels anchors per image; ``None`` builds detectron2's RetinaNet matcher
                from ``anchor_matcher``.
            cls_loss_type: "focal", "varifocal" or "quality_focal".
            soft_labels: classification target of a positive = a quality in [0, 1], not 1.
            soft_target: that quality: "iou" (IoU of the decoded box with its gt) or
                "alignment" (the assigner's ``quality``, e.g. TaskAligned's normalised
                alignment; needs an assigner with ``gives_quality``).
            cls_loss_weight, box_loss_weight: multipliers of the two losses.
            vfl_alpha, vfl_gamma, qfl_beta: parameters of the varifocal / quality focal losses.
            reg_max: 0 for box deltas; > 0 for GFL's box distributions over ``reg_max + 1`` bins
                (the head must have been built with the same ``reg_max``).
            dfl_weight: multiplier of the distribution focal loss (``reg_max`` > 0).
            box_score_weights: ``reg_max`` > 0: weight each positive's box losses by its
                detached best class score, normalised by their sum (at least 1), as GFL does;
                False: unweighted, averaged over the batch's positives.
            score_voting_sigma: > 0: after NMS, move each detection's box to the score- and
                IoU-weighted mean of its class's candidates (PAA's score voting,
                :mod:`bmc_detectron.modeling.score_voting`); 0: off.
            refinement: a second stage that refines the final detections from RoI features
                (:mod:`bmc_detectron.modeling.refine`), or several in turn
                (:mod:`bmc_detectron.modeling.cascade`); None: off.
            refine_in_features: the backbone's maps the refinement pools from, when they are not
                the head's (kept by a :class:`FeatureTap`); None: the head's.
            kwargs: the arguments of detectron2's :class:`RetinaNet`.
        """
        super().__init__(**kwargs)
        self.quality_losses = QualityLosses(
            cls_type=cls_loss_type,
            num_classes=self.num_classes,
            soft_labels=soft_labels,
            soft_target=soft_target,
            vfl_alpha=vfl_alpha,
            vfl_gamma=vfl_gamma,
            qfl_beta=qfl_beta,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        if assigner is None:
            m = self.anchor_matcher
            assigner = MaxIoU(
                thresholds=m.thresholds[1:-1],
                labels=m.labels,
                allow_low_quality_matches=m.allow_low_quality_matches,
            )
        if soft_target == "alignment" and not (soft_labels and assigner.gives_quality):
            raise ValueError(
                "MODEL.BMC.LOSS.SOFT_TARGET 'alignment' needs SOFT_LABELS True and an assigner "
                f"that gives a quality (TaskAligned); got SOFT_LABELS {soft_labels}, "
                f"{type(assigner).__name__}"
            )
        if score_voting_sigma < 0:
            raise ValueError(
                f"MODEL.BMC.SCORE_VOTING_SIGMA must be >= 0 (0 = off), got {score_voting_sigma}"
            )
        self.score_voting_sigma = float(score_voting_sigma)
        self.refinement = refinement
        self.refine_tap = None
        if refinement is not None and refine_in_features:
            self.refine_tap = FeatureTap(self.backbone, refine_in_features)
        self.assigner = assigner
        self.cls_loss_weight = cls_loss_weight
        self.box_loss_weight = box_loss_weight
        if getattr(self.head, "reg_max", 0) != reg_max:
            raise ValueError(
                f"MODEL.BMC.HEAD.REG_MAX {reg_max}: the head was built with "
                f"{getattr(self.head, 'reg_max', 0)}"
            )
        self.reg_max = int(reg_max)
        self.distribution_losses = None
        if self.reg_max > 0:
            self.distribution_losses = DistributionBoxLosses(
                self.reg_max, self.box_reg_loss_type, box_score_weights, dfl_weight
            )
            self.box2box_transform = self.distribution_losses.transform

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        feature_shapes = [
            ret["backbone"].output_shape()[f] for f in cfg.MODEL.RETINANET.IN_FEATURES
        ]
        ret["head"] = BMCRetinaNetHead(cfg, feature_shapes)
        loss = cfg.MODEL.BMC.LOSS
        ret.update(
            assigner=build_assigner(cfg),
            cls_loss_type=loss.CLS_TYPE,
            soft_labels=loss.SOFT_LABELS,
            soft_target=loss.SOFT_TARGET,
            cls_loss_weight=loss.CLS_WEIGHT,
            box_loss_weight=loss.BOX_WEIGHT,
            vfl_alpha=loss.VFL_ALPHA,
            vfl_gamma=loss.VFL_GAMMA,
            qfl_beta=loss.QFL_BETA,
            reg_max=cfg.MODEL.BMC.HEAD.REG_MAX,
            dfl_weight=loss.DFL_WEIGHT,
            box_score_weights=loss.BOX_SCORE_WEIGHTS,
            score_voting_sigma=cfg.MODEL.BMC.SCORE_VOTING_SIGMA,
        )
        refine_in = list(cfg.MODEL.BMC.REFINE.IN_FEATURES)
        if refine_in and refine_in != list(cfg.MODEL.RETINANET.IN_FEATURES):
            ret["refine_in_features"] = refine_in
            shapes = ret["backbone"].output_shape()
            if not set(refine_in) <= set(shapes):
                raise ValueError(
                    f"MODEL.BMC.REFINE.IN_FEATURES {refine_in}: the backbone makes {sorted(shapes)}"
                )
            feature_shapes = [shapes[f] for f in refine_in]
        # initialised without drawing from the global generator, so that what follows (the
        # data loader's worker seeds) is as without the refinement
        with torch.random.fork_rng(devices=[]):
            ret["refinement"] = build_refinement(cfg, feature_shapes)
        return ret

    def refine_features(self, features: List[Tensor]) -> List[Tensor]:
        """The maps the refinement pools from: the head's ``features``, or the tapped ones."""
        return features if self.refine_tap is None else self.refine_tap.take()

    def forward_training(self, images, features, predictions, gt_instances):
        losses = self._dense_losses(features, predictions, gt_instances)
        if self.refinement is not None:
            # what inference would refine, from the current weights; copies, as detectron2's
            # inference applies the sigmoid to the logits in place
            with torch.no_grad():
                copies = [[x.detach().clone() for x in p] for p in predictions]
                detections = self.dense_detections(images, features, copies)
            refine_features = self.refine_features(features)
            losses.update(self.refinement.losses(refine_features, detections, gt_instances))
        return losses

    def _dense_losses(self, features, predictions, gt_instances):
        distributions = None
        if self.reg_max > 0:  # per level (N, Ri, 4 * (reg_max + 1)) bin logits, for the DFL
            distributions = self._transpose_dense_predictions(
                [predictions[1]], [4 * (self.reg_max + 1)]
            )[0]
            distributions = [x.float() for x in distributions]
            predictions = self.integrate_boxes(predictions)
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        # losses in float32 whatever precision the network ran in (CUDA AMP, CPU bf16 autocast)
        pred_logits = [x.float() for x in pred_logits]
        pred_anchor_deltas = [x.float() for x in pred_anchor_deltas]
        anchors = self.anchor_generator(features)
        quality = None
        if self.quality_losses.soft_target == "alignment":
            gt_labels, gt_boxes, quality = self.label_anchors(
                anchors, gt_instances, pred_logits, pred_anchor_deltas, with_quality=True
            )
        else:
            gt_labels, gt_boxes = self.label_anchors(
                anchors, gt_instances, pred_logits, pred_anchor_deltas
            )
        return self.losses(
            anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, quality, distributions
        )

    def forward_inference(self, images, features, predictions):
        results = self.dense_detections(images, features, predictions)
        if self.refinement is not None:
            results = self.refinement.refine(self.refine_features(features), results)
        return results

    def dense_detections(self, images, features, predictions) -> List[Instances]:
        """detectron2's RetinaNet inference: per image the detections after NMS."""
        # decode boxes and scores in float32 whatever precision the network ran in: bf16 keeps
        # 8 mantissa bits, about 2 px at a 300 px coordinate
        predictions = [[x.float() for x in level] for level in predictions]
        return super().forward_inference(images, features, self.integrate_boxes(predictions))

    def inference_single_image(self, anchors, box_cls, box_delta, image_size):
        """detectron2's single-image inference, then score voting when the sigma is > 0."""
        if self.score_voting_sigma <= 0:
            return super().inference_single_image(anchors, box_cls, box_delta, image_size)
        # the candidates the parent's inference decodes (its own hook), NMS as it does
        pred = self._decode_multi_level_predictions(
            anchors, box_cls, box_delta, self.test_score_thresh, self.test_topk_candidates,
            image_size,
        )  # fmt: skip
        keep = batched_nms(
            pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh
        )
        return vote_instances(pred, keep[: self.max_detections_per_image], self.score_voting_sigma)

    def integrate_boxes(self, predictions: List[List[Tensor]]) -> List[List[Tensor]]:
        """The head's ``[logits, box outputs]`` with the box outputs as box deltas: unchanged
        for ``reg_max`` 0; else the per-level (N, A*4*(reg_max+1), Hi, Wi) bin logits become
        (N, A*4, Hi, Wi) float32 integral distances in pixels."""
        if self.reg_max == 0:
            return predictions
        logits, bins = predictions
        strides = self.anchor_generator.strides
        return [logits, dense_distances([b.float() for b in bins], strides, self.reg_max)]

    def anchor_layout(self, anchors: List[Boxes]) -> AnchorLayout:
        """Concatenate per-level anchors into the assigners' :class:`AnchorLayout`."""
        num_per_location = self.anchor_generator.num_anchors
        return AnchorLayout(
            boxes=Boxes.cat(anchors).tensor,
            num_per_level=[len(a) for a in anchors],
            num_per_location=int(num_per_location[0]),
            strides=[int(s) for s in self.anchor_generator.strides],
        )

    def _decode_all(self, anchors: Tensor, deltas: List[Tensor]) -> Tensor:
        """(N, R, 4) decoded boxes from per-level (N, Ri, 4) deltas, without gradients."""
        deltas = cat(deltas, dim=1).detach().float()
        n = deltas.shape[0]
        boxes = self.box2box_transform.apply_deltas(
            deltas.reshape(-1, 4), anchors.repeat(n, 1).float()
        )
        return boxes.view(n, -1, 4)

    @torch.no_grad()
    def assignment_inputs(self, batched_inputs: List[dict]) -> Tuple[AnchorLayout, Tensor, Tensor]:
        """What the assigner receives for a batch, without gt: the anchor layout, the detached
        (N, R, K) float32 logits and the (N, R, 4) boxes decoded from the current weights."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        logits, deltas = self._transpose_dense_predictions(
            self.integrate_boxes(self.head(features)), [self.num_classes, 4]
        )
        layout = self.anchor_layout(self.anchor_generator(features))
        boxes = self._decode_all(layout.boxes, deltas)
        return layout, cat(logits, dim=1).detach().float(), boxes

    @torch.no_grad()
    def label_anchors(
        self,
        anchors: List[Boxes],
        gt_instances: List[Instances],
        pred_logits: Optional[List[Tensor]] = None,
        pred_anchor_deltas: Optional[List[Tensor]] = None,
        with_quality: bool = False,
    ) -> Tuple[List[Tensor], ...]:
        """Like :meth:`RetinaNet.label_anchors`, through ``self.assigner``.

        Args:
            anchors: per-level anchors of one image.
            gt_instances: N per-image gt with ``gt_boxes`` and ``gt_classes``.
            pred_logits, pred_anchor_deltas: per-level (N, Ri, K) and (N, Ri, 4) predictions,
                required when the assigner needs predictions.
            with_quality: also return the assigner's per-anchor ``quality`` (0 for an image
                without gt).

        Returns:
            N tensors (R,) of labels in {-1, 0..K} (K = background) and N tensors (R, 4) of
            matched gt boxes (undefined where not foreground); with ``with_quality``, also N
            float32 tensors (R,) of soft targets.
        """
        layout = self.anchor_layout(anchors)
        logits = boxes = None
        if self.assigner.needs_predictions:
            if pred_logits is None or pred_anchor_deltas is None:
                raise ValueError(f"{type(self.assigner).__name__} needs the predictions")
            logits = cat(pred_logits, dim=1).detach().float()  # costs in float32 under AMP
            boxes = self._decode_all(layout.boxes, pred_anchor_deltas)

        gt_labels, matched_gt_boxes, quality = [], [], []
        for i, gt in enumerate(gt_instances):
            gt_box = gt.gt_boxes.tensor
            result = self.assigner(
                layout,
                gt_box,
                gt.gt_classes,
                None if logits is None else logits[i],
                None if boxes is None else boxes[i],
            )
            if len(gt) > 0:
                labels_i = gt.gt_classes[result.matched_idxs]
                labels_i[result.labels == 0] = self.num_classes
                labels_i[result.labels == -1] = -1
                matched_gt_boxes.append(gt_box[result.matched_idxs])
            else:
                labels_i = torch.full_like(result.matched_idxs, self.num_classes)
                matched_gt_boxes.append(torch.zeros_like(layout.boxes))
            gt_labels.append(labels_i)
            if with_quality:
                zeros = torch.zeros(len(layout.boxes), device=layout.boxes.device)
                quality.append(zeros if result.quality is None else result.quality.float())
        if with_quality:
            return gt_labels, matched_gt_boxes, quality
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors,
        pred_logits,
        gt_labels,
        pred_anchor_deltas,
        gt_boxes,
        quality=None,
        distributions=None,
    ):
        """detectron2's losses, or the IoU-aware ones; ``quality``: N (R,) soft targets of the
        assigner, used when ``soft_target`` is "alignment"; ``distributions``: per level
        (N, Ri, 4 * (reg_max + 1)) bin logits (``reg_max`` > 0), whose GFL box losses replace
        ``loss_box_reg`` and add ``loss_dfl``."""
        if self.quality_losses.cls_type == "focal":
            out = super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        else:
            sums, num_pos = self.quality_losses(
                self.box2box_transform,
                anchors,
                pred_logits,
                gt_labels,
                pred_anchor_deltas,
                gt_boxes,
                quality,
            )
            get_event_storage().put_scalar("num_pos_anchors", num_pos / len(gt_labels))
            normalizer = self._ema_update("loss_normalizer", max(num_pos, 1), 100)
            out = {name: loss / normalizer for name, loss in sums.items()}
        if distributions is not None:
            pos_mask = torch.stack(gt_labels) >= 0
            pos_mask &= torch.stack(gt_labels) != self.num_classes
            layout = self.anchor_layout(anchors)
            out.update(
                self.distribution_losses(
                    layout, pred_anchor_deltas, distributions, pred_logits, gt_boxes, pos_mask
                )
            )
        if self.cls_loss_weight != 1.0:
            out["loss_cls"] = out["loss_cls"] * self.cls_loss_weight
        if self.box_loss_weight != 1.0:
            out["loss_box_reg"] = out["loss_box_reg"] * self.box_loss_weight
        return out
