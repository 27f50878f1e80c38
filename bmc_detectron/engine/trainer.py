"""The detector's trainer: a DefaultTrainer subclass with checked data and per-class COCO AP, an
optional weight average (``BMC.EMA``, engine/ema.py); after training it writes the training data's
profile (``training_profile.json``) beside the weights."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import List, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.engine import DefaultTrainer, hooks
from detectron2.utils import comm

from bmc_detectron.config import ConfigError
from bmc_detectron.data.augment import build_bmc_augmentations
from bmc_detectron.data.checks import DatasetError, check_dataset_dicts
from bmc_detectron.engine.ema import EMAHook, TrainingCheckpointer, build_weight_ema
from bmc_detectron.engine.precision import apply_precision
from bmc_detectron.evaluation import BMCCOCOEvaluator
from bmc_detectron.modeling.tta import BMCRetinaNetWithTTA
from bmc_detectron.smear.profile import PROFILE_FILE, profile_from_dataset

logger = logging.getLogger(__name__)
_PERIODIC = re.compile(r"model_\d{7}\.pth")


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


def write_training_profile(cfg: CfgNode) -> Optional[Path]:
    """``OUTPUT_DIR/training_profile.json`` from ``BMC.DATA.PROFILE_IMAGES`` images of
    ``DATASETS.TRAIN`` (main process only; 0 images: none). A failure is logged, not raised:
    the trained model is there anyway, and ``estimate_scale --dataset`` makes the file later."""
    count = int(cfg.BMC.DATA.PROFILE_IMAGES)
    if count <= 0 or not comm.is_main_process() or not cfg.DATASETS.TRAIN:
        return None
    mpp = float(cfg.BMC.DATA.MICRONS_PER_PIXEL) or None
    try:
        profile = profile_from_dataset(cfg.DATASETS.TRAIN, max_images=count, microns_per_pixel=mpp)
        path = profile.save(Path(cfg.OUTPUT_DIR) / PROFILE_FILE)
    except (DatasetError, OSError, ValueError, KeyError) as e:
        logger.warning("no %s written: %s", PROFILE_FILE, e)
        return None
    logger.info("training data profile: %s", path)
    return path


def periodic_checkpoints(output_dir: str) -> List[str]:
    """The periodic checkpoints ``model_NNNNNNN.pth`` in ``output_dir``, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if _PERIODIC.fullmatch(p.name))


class BMCTrainer(DefaultTrainer):
    """detectron2's DefaultTrainer with checked data, smear augmentation, per-class COCO AP, the
    CPU precision options of ``BMC.PRECISION`` (bf16 network body, channels-last) and the weight
    average of ``BMC.EMA`` (attribute ``ema``: a :class:`~bmc_detectron.engine.ema.WeightEMA` or
    None). After ``train()`` the model holds the weights that ship, as ``model_final.pth``'s
    ``model`` does: the average when there is one (the trained ones are its ``model_raw``).
    """

    @classmethod
    def build_model(cls, cfg):
        return apply_precision(super().build_model(cfg), cfg)

    def train(self):
        """detectron2's training loop, the average (if any) into the model, then the training
        data's profile beside the weights."""
        results = super().train()
        if self.ema is not None:
            self.ema.copy_to(self.checkpointer.model)
        write_training_profile(self.cfg)
        return results

    def build_hooks(self):
        """DefaultTrainer's hooks; the periodic checkpointer keeps ``BMC.CHECKPOINTS_TO_KEEP``;
        with ``BMC.EMA.ENABLED`` the average is updated after each step, checkpointed as
        ``model`` and evaluated. The checkpointer is replaced first, as the hooks hold it."""
        self.ema = build_weight_ema(self.cfg)
        old = self.checkpointer
        self.checkpointer = TrainingCheckpointer(
            old.model, old.save_dir, ema=self.ema, **old.checkpointables
        )
        hook_list = super().build_hooks()
        keep = int(self.cfg.BMC.CHECKPOINTS_TO_KEEP)
        for hook in hook_list:
            if keep > 0 and isinstance(hook, hooks.PeriodicCheckpointer):
                hook.max_to_keep = keep
                # Those of an earlier (resumed) run count too, oldest first.
                hook.recent_checkpoints = periodic_checkpoints(self.cfg.OUTPUT_DIR)
        if self.ema is not None:
            hook_list = self._with_average(hook_list)
        return hook_list

    def _with_average(self, hook_list: List[hooks.HookBase]) -> List[hooks.HookBase]:
        """The EMA hook right after the LR scheduler (before PreciseBN, the checkpointer and the
        evaluation, which then see this step's average); evaluation on the average."""

        def test_average():
            with self.ema.applied(self.checkpointer.model):
                self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        out: List[hooks.HookBase] = []
        for hook in hook_list:
            if isinstance(hook, hooks.EvalHook):
                hook = hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, test_average)
            out.append(hook)
            if isinstance(hook, hooks.LRScheduler):
                out.append(EMAHook(self.ema, self.checkpointer.model))
        return out

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
    def test(cls, cfg, model, evaluators=None):
        """detectron2's evaluation, on the image and its flips when ``BMC.TEST_FLIPS`` lists any
        (:class:`~bmc_detectron.modeling.tta.BMCRetinaNetWithTTA`)."""
        if cfg.BMC.TEST_FLIPS:
            model = BMCRetinaNetWithTTA(cfg, model)
            logger.info("evaluating with test-time flips %s", list(cfg.BMC.TEST_FLIPS))
        return super().test(cfg, model, evaluators)

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
