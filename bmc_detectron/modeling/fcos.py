"""detectron2's FCOS, buildable from a yacs config (detectron2 ships it for LazyConfig only)."""

from __future__ import annotations

from typing import Dict

from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead


@META_ARCH_REGISTRY.register()
class BMCFCOS(FCOS):
    """FCOS: anchor-free one-stage detection with centre sampling and a centre-ness branch.

    Tian, Shen, Chen, He, "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019.
    The model is detectron2's :class:`~detectron2.modeling.meta_arch.fcos.FCOS` unchanged; this
    class only adds :meth:`from_config`, so that the one- vs two-stage comparison trains it
    with the same trainer, data and schedule as every RetinaNet config. The head, focal loss and
    test settings come from ``MODEL.RETINANET`` (``NUM_CLASSES``, ``IN_FEATURES``, ``NUM_CONVS``,
    ``NORM``, ``PRIOR_PROB``, ``FOCAL_LOSS_*``, ``*_TEST``), the centre-sampling radius from
    ``MODEL.BMC.FCOS``.
    """

    @configurable
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, object]:
        backbone = build_backbone(cfg)
        r = cfg.MODEL.RETINANET
        shapes = backbone.output_shape()
        in_shapes = [shapes[f] for f in r.IN_FEATURES]
        head = FCOSHead(
            input_shape=in_shapes,
            conv_dims=[in_shapes[0].channels] * r.NUM_CONVS,
            num_classes=r.NUM_CLASSES,
            norm=r.NORM,
            prior_prob=r.PRIOR_PROB,
        )
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": list(r.IN_FEATURES),
            "num_classes": r.NUM_CLASSES,
            "center_sampling_radius": cfg.MODEL.BMC.FCOS.CENTER_SAMPLING_RADIUS,
            "focal_loss_alpha": r.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": r.FOCAL_LOSS_GAMMA,
            "test_score_thresh": r.SCORE_THRESH_TEST,
            "test_topk_candidates": r.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": r.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }
