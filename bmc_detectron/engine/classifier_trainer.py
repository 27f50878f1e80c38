"""Training and evaluation of the cell classifier (``MODEL.META_ARCHITECTURE BMCCellClassifier``).

``train_net.py`` picks :class:`BMCClassifierTrainer` for that architecture
(:func:`bmc_detectron.engine.trainer.trainer_class`), so training, ``--eval-only``,
checkpoints, ``--resume`` and multi-GPU ``launch`` work as for the detector. The datasets are
ordinary registered detection datasets: every annotated box becomes one training sample (a crop,
:mod:`bmc_detectron.data.crop_mapper`), e.g. ``pbc_marrow_train`` or ``bmc_synth_train``.
"""

from __future__ import annotations

import os
from typing import List, Sequence

from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)

from bmc_detectron.config import ConfigError
from bmc_detectron.data.checks import check_dataset_dicts
from bmc_detectron.data.crop_mapper import CellCropMapper, crop_records
from bmc_detectron.engine.trainer import BMCTrainer
from bmc_detectron.evaluation.classification import ClassificationEvaluator
from bmc_detectron.modeling.classifier import classifier_class_names


def load_crop_records(cfg: CfgNode, names: Sequence[str]) -> List[dict]:
    """Crop records (:func:`~bmc_detectron.data.crop_mapper.crop_records`) of registered datasets.

    The datasets are validated first (missing / corrupt images, unknown classes, invalid boxes:
    :func:`~bmc_detectron.data.checks.check_dataset_dicts`) and must carry the classifier's
    classes (``classifier_class_names(cfg)``), in the same order.
    """
    num_classes = cfg.MODEL.BMC.CLASSIFIER.NUM_CLASSES
    class_names = classifier_class_names(cfg)
    records: List[dict] = []
    for name in names:
        if name not in DatasetCatalog.list():
            raise ConfigError(f"dataset {name!r} is not registered; known: {DatasetCatalog.list()}")
        dicts = DatasetCatalog.get(name)
        thing_classes = MetadataCatalog.get(name).get("thing_classes")
        if thing_classes is not None and list(thing_classes) != class_names:
            raise ConfigError(
                f"dataset {name!r} has the classes {list(thing_classes)} but the classifier "
                f"has {class_names} (MODEL.BMC.CLASSIFIER.NUM_CLASSES / CLASS_NAMES)"
            )
        dicts = check_dataset_dicts(
            dicts, name, num_classes, check_images=cfg.BMC.DATA.CHECK_IMAGES
        )
        records += crop_records(dicts, name, num_classes)
    return records


class BMCClassifierTrainer(BMCTrainer):
    """:class:`BMCTrainer` for the cell classifier: crop loaders and classification metrics.

    The model, optimizer, schedule, checkpoints, hooks and CPU precision options are
    ``BMCTrainer``'s (detectron2's DefaultTrainer).
    """

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        records = load_crop_records(cfg, cfg.DATASETS.TRAIN)
        return build_detection_train_loader(
            cfg, mapper=CellCropMapper(cfg, True), dataset=records, aspect_ratio_grouping=False
        )

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(
            load_crop_records(cfg, [dataset_name]),
            mapper=CellCropMapper(cfg, False),
            batch_size=cfg.MODEL.BMC.CLASSIFIER.BATCH_SIZE_TEST,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return ClassificationEvaluator(
            dataset_name, classifier_class_names(cfg), output_dir=output_folder
        )
