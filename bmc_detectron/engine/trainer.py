"""The training/evaluation entry points: a DefaultTrainer subclass and the config set-up."""

from __future__ import annotations

import argparse
import logging
import os
from typing import List, Sequence

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import CLASSIFIER_ARCH, ConfigError, build_cfg
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


def setup(args: argparse.Namespace) -> CfgNode:
    """Config plus detectron2's logging / seeding / output-dir set-up for a command-line run."""
    cfg = build_cfg(args.config_file, args.opts)
    default_setup(cfg, args)
    # this package's messages (data checks, classification tables) in the console and log.txt;
    # still propagated, so that handlers on the root logger (pytest's caplog) see them too
    setup_logger(
        cfg.OUTPUT_DIR,
        distributed_rank=comm.get_rank(),
        name="bmc_detectron",
        enable_propagation=True,
    )
    return cfg


def trainer_class(cfg: CfgNode) -> type:
    """The trainer of ``cfg.MODEL.META_ARCHITECTURE``: the cell classifier's, else BMCTrainer."""
    if cfg.MODEL.META_ARCHITECTURE == CLASSIFIER_ARCH:
        from .classifier_trainer import BMCClassifierTrainer

        return BMCClassifierTrainer
    return BMCTrainer


def main(args: argparse.Namespace):
    """Train (optionally resuming) or, with ``--eval-only``, evaluate; returns the metrics."""
    cfg = setup(args)
    trainer_cls = trainer_class(cfg)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return trainer_cls.test(cfg, model)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
