"""The recognition stage: a ResNet cell classifier on square cell crops.

Detect first (class-agnostic), then recognise each cell with this classifier, then count.
``BMCCellClassifier`` is a detectron2 META_ARCH: detectron2's ResNet (``build_resnet_backbone``,
R-18 in the CPU configs, R-50 on GPU), global average pooling of one feature map
(``MODEL.BMC.CLASSIFIER.IN_FEATURE``), one linear layer. Crops come from
:func:`bmc_detectron.data.crops.crop_boxes` (training: :class:`~bmc_detectron.data.crop_mapper.
CellCropMapper`; the count pipeline: detector boxes).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn

from bmc_detectron.config import ConfigError
from bmc_detectron.config_checks import CLASSIFIER_TEST_FLIPS
from bmc_detectron.structures.differential import OTHER_LABEL

__all__ = ["BMCCellClassifier", "classifier_class_names", "dihedral_views"]


def dihedral_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """The first ``views`` of the square crops' eight flips and quarter turns, stacked view by
    view: as they are, mirrored left-right, then turned by 90, 180 and 270 degrees, each also
    mirrored (a cell has no up or left on a smear).

    Args:
        x: (N, C, S, S) crops.
        views: 1, 2 or 8.

    Returns:
        (views * N, C, S, S); rows ``v * N .. (v + 1) * N`` hold view ``v``.
    """
    if views not in CLASSIFIER_TEST_FLIPS:
        raise ValueError(
            f"dihedral_views: views must be one of {CLASSIFIER_TEST_FLIPS}, got {views}"
        )
    # quarter turns as transposes and flips (what ONNX exports; torch.rot90 has no ONNX op)
    turns = [x]
    if views == 8:
        across = x.transpose(2, 3)
        turns += [across.flip(2), x.flip((2, 3)), across.flip(3)]  # rot90 by 1, 2, 3
    out = []
    for turned in turns:
        out += [turned, turned.flip(3)] if views > 1 else [turned]
    return torch.cat(out)


def classifier_class_names(cfg: CfgNode) -> List[str]:
    """Class names of the classifier in class-id order (length ``NUM_CLASSES``).

    ``MODEL.BMC.CLASSIFIER.CLASS_NAMES`` when given, else the ``thing_classes`` of
    ``DATASETS.TRAIN[0]``'s metadata. Raises :class:`ConfigError` when neither gives
    ``NUM_CLASSES`` names.
    """
    clf = cfg.MODEL.BMC.CLASSIFIER
    names = list(clf.CLASS_NAMES)
    source = "MODEL.BMC.CLASSIFIER.CLASS_NAMES"
    if not names:
        if not cfg.DATASETS.TRAIN:
            raise ConfigError("MODEL.BMC.CLASSIFIER.CLASS_NAMES is empty and DATASETS.TRAIN too")
        name = cfg.DATASETS.TRAIN[0]
        source = f"thing_classes of dataset {name!r}"
        if MetadataCatalog.get(name).get("thing_classes") is None and name in DatasetCatalog.list():
            DatasetCatalog.get(name)  # loading a COCO json sets them
        names = list(MetadataCatalog.get(name).get("thing_classes") or [])
    if len(names) != clf.NUM_CLASSES:
        raise ConfigError(
            f"{source} has {len(names)} classes but MODEL.BMC.CLASSIFIER.NUM_CLASSES is "
            f"{clf.NUM_CLASSES}"
        )
    return names


def classifier_other_index(cfg: CfgNode) -> Optional[int]:
    """The class id of the classifier's own ``Other`` class (boxes of no whole cell, counted
    apart from the differential); None when it has none."""
    names = classifier_class_names(cfg)
    return names.index(OTHER_LABEL) if OTHER_LABEL in names else None


@META_ARCH_REGISTRY.register()
class BMCCellClassifier(nn.Module):
    """ResNet + global average pooling + linear layer over square crops of single cells.

    Inputs are crops in ``input_format`` (BGR by default) with pixel values 0..255; the model
    normalises them with ``pixel_mean`` / ``pixel_std`` itself, as detectron2's models do.
    Two options shape the features for the open-set scores: a cosine layer (the logits are a
    scale times the cosine between the pooled features and each class's weight vector; Wang et
    al., "NormFace: L2 Hypersphere Embedding for Face Verification", ACM MM 2017) and logit
    normalisation of the training loss (Wei et al., "Mitigating Neural Network Overconfidence
    with Logit Normalization", ICML 2022).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        in_feature: str,
        num_classes: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "BGR",
        label_smoothing: float = 0.0,
        logit_norm_tau: float = 0.0,
        cosine_scale: float = 0.0,
        class_names: Sequence[str] = (),
        test_batch_size: int = 64,
        test_flips: int = 1,
    ):
        """
        Args:
            backbone: a detectron2 backbone whose output includes ``in_feature``.
            in_feature: the feature map that is average-pooled (e.g. ``"res5"``).
            num_classes: K, the number of outputs.
            pixel_mean, pixel_std: per-channel normalisation, in ``input_format`` order.
            input_format: channel order of the input crops ("BGR" or "RGB").
            label_smoothing: of the training cross-entropy.
            logit_norm_tau: > 0: the training cross-entropy reads the (N, K) logits divided by
                ``tau`` times their L2 norm per crop (LogitNorm); 0: the logits as they are.
            cosine_scale: > 0: the logits are this scale times the cosine between the pooled
                features and each class's weight vector (no bias); 0: the linear layer.
            class_names: K names (only stored, for tools and the count pipeline).
            test_batch_size: crops per forward pass in :meth:`predict_crops`.
            test_flips: views of each crop whose pooled features are averaged in eval mode
                (:func:`dihedral_views`; 1: the crop as it is). Training sees one view.
        """
        super().__init__()
        self.backbone = backbone
        self.in_feature = in_feature
        channels = backbone.output_shape()[in_feature].channels
        self.cls_score = nn.Linear(channels, num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.constant_(self.cls_score.bias, 0.0)
        self.num_classes = num_classes
        self.input_format = input_format
        self.label_smoothing = float(label_smoothing)
        if logit_norm_tau < 0:
            raise ValueError(f"logit_norm_tau must be >= 0, got {logit_norm_tau}")
        self.logit_norm_tau = float(logit_norm_tau)
        if cosine_scale < 0:
            raise ValueError(f"cosine_scale must be >= 0, got {cosine_scale}")
        self.cosine_scale = float(cosine_scale)
        self.class_names = list(class_names)
        self.test_batch_size = int(test_batch_size)
        if test_flips not in CLASSIFIER_TEST_FLIPS:
            raise ValueError(f"test_flips must be one of {CLASSIFIER_TEST_FLIPS}, got {test_flips}")
        self.test_flips = int(test_flips)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, object]:
        clf = cfg.MODEL.BMC.CLASSIFIER
        if clf.IN_FEATURE not in cfg.MODEL.RESNETS.OUT_FEATURES:
            raise ConfigError(
                f"MODEL.BMC.CLASSIFIER.IN_FEATURE {clf.IN_FEATURE!r} is not in "
                f"MODEL.RESNETS.OUT_FEATURES {list(cfg.MODEL.RESNETS.OUT_FEATURES)}"
            )
        try:
            class_names = classifier_class_names(cfg)
        except ConfigError:
            if clf.CLASS_NAMES or cfg.DATASETS.TRAIN:
                raise
            class_names = []  # a bare model (tests, export) needs no names
        backbone = build_resnet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        return {
            "backbone": backbone,
            "in_feature": clf.IN_FEATURE,
            "num_classes": clf.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "label_smoothing": clf.LABEL_SMOOTHING,
            "logit_norm_tau": clf.LOGIT_NORM_TAU,
            "cosine_scale": clf.COSINE_SCALE,
            "class_names": class_names,
            "test_batch_size": clf.BATCH_SIZE_TEST,
            "test_flips": clf.TEST_FLIPS,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of raw crops; the graph to export (ONNX) for the count pipeline.

        Args:
            x: (N, 3, S, S) float tensor of **raw** pixels (0..255, not normalised) in
                ``input_format`` channel order, on the model's device. Normalisation is part of
                this function, so an exported model needs only ``crop_boxes`` + HWC->CHW + float.

        Returns:
            (N, K) logits.
        """
        return self.logits_of_features(self.forward_features(x))

    def logits_of_features(self, features: torch.Tensor) -> torch.Tensor:
        """The last layer: (N, C) pooled features -> (N, K) logits (the linear layer, or the
        scaled cosines with ``cosine_scale``)."""
        if self.cosine_scale > 0:
            weight = F.normalize(self.cls_score.weight, dim=1)
            return self.cosine_scale * F.linear(F.normalize(features, dim=1), weight)
        return self.cls_score(features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features of raw crops: ``IN_FEATURE`` (res5) averaged over
        space, what the linear layer reads (the feature-space open-set scores of
        :mod:`bmc_detectron.evaluation.feature_scores` are computed from them).

        Args:
            x: (N, 3, S, S) raw crops, as :meth:`forward_logits`.

        Returns:
            (N, C) features (C: the channels of ``in_feature``, 512 for R-18); in eval mode the
            mean over the ``test_flips`` views of each crop.
        """
        x = (x - self.pixel_mean) / self.pixel_std
        views = 1 if self.training else self.test_flips
        if views > 1:
            x = dihedral_views(x, views)
        pooled = self.backbone(x)[self.in_feature].mean(dim=(2, 3))
        return pooled.unflatten(0, (views, -1)).mean(dim=0) if views > 1 else pooled

    def _stack(self, batched_inputs: List[dict]) -> torch.Tensor:
        """(N, 3, S, S) float32 on the model's device from the inputs' ``"image"`` tensors."""
        images = [d["image"] for d in batched_inputs]
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"BMCCellClassifier: expected equal (3, S, S) crops, got {shapes}")
        return torch.stack(images).to(device=self.device, dtype=torch.float32)

    def forward(
        self, batched_inputs: List[dict]
    ) -> Union[Dict[str, torch.Tensor], List[Dict[str, object]]]:
        """
        Args:
            batched_inputs: dicts with ``"image"``, a (3, S, S) uint8 crop in ``input_format``,
                and in training ``"label"``, the int class id.

        Returns:
            training: ``{"loss_cls": cross-entropy}``; eval: one dict per input with
            ``"probs"`` ((K,) float softmax), ``"pred_class"`` (int), ``"score"`` (float).
        """
        images = self._stack(batched_inputs)
        if self.training:
            labels = [int(d["label"]) for d in batched_inputs]
            if any(not 0 <= c < self.num_classes for c in labels):
                raise ValueError(
                    f"BMCCellClassifier: labels {sorted(set(labels))} outside "
                    f"[0, {self.num_classes}) (MODEL.BMC.CLASSIFIER.NUM_CLASSES)"
                )
            logits = self.forward_logits(images).float()
            if self.logit_norm_tau > 0:
                norms = logits.norm(dim=1, keepdim=True).clamp_min(1e-7)
                logits = logits / (self.logit_norm_tau * norms)
            target = torch.tensor(labels, device=logits.device)
            loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
            return {"loss_cls": loss}
        probs = self.forward_logits(images).float().softmax(dim=1)
        score, pred = probs.max(dim=1)
        return [
            {"probs": p, "pred_class": int(c), "score": float(s)}
            for p, c, s in zip(probs, pred.tolist(), score.tolist())
        ]

    @torch.no_grad()
    def predict_logits(self, crops: torch.Tensor) -> torch.Tensor:
        """Class logits of a stack of crops, in eval mode, batched (what the open-set score of
        :mod:`bmc_detectron.evaluation.open_set` is computed from).

        Args:
            crops: (N, 3, S, S) uint8 or float crops (0..255) in ``input_format``, on any device;
                N may be 0.

        Returns:
            (N, K) float32 logits on ``crops``' device.
        """
        return self.predict_logits_and_features(crops)[0]

    @torch.no_grad()
    def predict_features(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, C) float32 pooled features (:meth:`forward_features`) of a stack of crops (as
        :meth:`predict_logits`)."""
        return self.predict_logits_and_features(crops)[1]

    @torch.no_grad()
    def predict_logits_and_features(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N, K) logits and (N, C) pooled features of a stack of crops in one pass, in eval
        mode, batched; both float32 on ``crops``' device (crops as :meth:`predict_logits`)."""
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError(
                f"predict_logits: expected (N, 3, S, S) crops, got {tuple(crops.shape)}"
            )
        was_training = self.training
        self.eval()
        logits, features = [], []
        try:
            for chunk in crops.split(max(1, self.test_batch_size)):
                feature = self.forward_features(chunk.to(self.device, torch.float32))
                logits.append(self.logits_of_features(feature).float())
                features.append(feature.float())
        finally:
            self.train(was_training)
        if not logits:
            channels = self.cls_score.in_features
            return (
                torch.zeros((0, self.num_classes), device=crops.device),
                torch.zeros((0, channels), device=crops.device),
            )
        return torch.cat(logits).to(crops.device), torch.cat(features).to(crops.device)

    @torch.no_grad()
    def predict_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Softmax class probabilities of a stack of crops (as :meth:`predict_logits`).

        Returns:
            (N, K) float32 probabilities (rows sum to 1) on ``crops``' device.
        """
        return self.predict_logits(crops).softmax(dim=1)
