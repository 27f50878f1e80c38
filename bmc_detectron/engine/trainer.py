"""The detector's trainer: a DefaultTrainer subclass with checked data and per-class COCO AP."""

from __future__ import annotations

import logging
import os
from typing import List, Sequence

from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.engine import DefaultTrainer

from ..config import ConfigError
from ..data.augment import build_bmc_augmentations
from ..data.checks import check_dataset_dicts
from ..evaluation import BMCCOCOEvaluator
from .precision import apply_precision

logger = logging.getLogger(__name__)


def load_checked_dicts(cfg: CfgNode, names: Sequence[str], filter_empty: bool) -> List[dict]:
    """Load registered datasets and validate every record before any training starts.

    Unreadable images, unknown classes and invalid boxes are reported by file (see
    :func:`~bmc_detectron.data.checks.check_dataset_dicts`); invalid boxes are dropped.
    """
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    dicts: List[dict] = []
    for name in names:
        if name not in DatasetCatalog.list():
            raise ConfigError(f"dataset {name!r} is not registered; known: {DatasetCatalog.list()}")
        thing_classes = MetadataCatalog.get(name).get("thing_classes")
        if thing_classes is not None and len(thing_classes) != num_classes:
            raise ConfigError(
                f"dataset {name!r} has {len(thing_classes)} classes but "
                f"MODEL.RETINANET.NUM_CLASSES is {num_classes}"
            )
        dicts += check_dataset_dicts(
            DatasetCatalog.get(name), name, num_classes, check_images=cfg.BMC.DATA.CHECK_IMAGES
        )
    if filter_empty:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    if not dicts:
        raise ConfigError(f"no training images with annotations in {list(names)}")
    return dicts


class BMCTrainer(DefaultTrainer):
    """detectron2's DefaultTrainer with checked data, smear augmentation, per-class COCO AP and
    the CPU precision options of ``BMC.PRECISION`` (bf16 network body, channels-last)."""

    @classmethod
    def build_model(cls, cfg):
        return apply_precision(super().build_model(cfg), cfg)

    @classmethod
    def build_train_loader(cls, cfg):
        dicts = load_checked_dicts(cfg, cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        mapper = DatasetMapper(cfg, True, augmentations=build_bmc_augmentations(cfg, True))
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        dicts = load_checked_dicts(cfg, [dataset_name], filter_empty=False)
        mapper = DatasetMapper(cfg, False, augmentations=build_bmc_augmentations(cfg, False))
        return build_detection_test_loader(dicts, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return BMCCOCOEvaluator(
            dataset_name,
            output_dir=output_folder,
            metrics_file=cfg.BMC.EVAL.METRICS_FILE,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
