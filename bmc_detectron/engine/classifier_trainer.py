"""Training and evaluation of the cell classifier (``MODEL.META_ARCHITECTURE BMCCellClassifier``).

``train_net.py`` picks :class:`BMCClassifierTrainer` for that architecture
(:func:`bmc_detectron.engine.trainer.trainer_class`), so training, ``--eval-only``,
checkpoints, ``--resume`` and multi-GPU ``launch`` work as for the detector. The datasets are
ordinary registered detection datasets: every annotated box becomes one training sample (a crop,
:mod:`bmc_detectron.data.crop_mapper`), e.g. ``pbc_marrow_train`` or ``bmc_synth_train``.
A dataset may have fewer classes than the classifier when they are its first ones, in order (the
11 marrow classes of ``marrow_real_*`` for the 12-class marrow + basophil classifier).

At the end of training the open-set threshold is chosen on every ``DATASETS.TEST``'s crops and
written beside ``model_final.pth`` (:func:`choose_open_set_threshold`;
:mod:`bmc_detectron.evaluation.open_set`), so the count can call cells of no known type Other; for
a feature score (the default, kNN) with the statistics of the training crops' features
(``model_final.open_set.npz``, :mod:`bmc_detectron.evaluation.feature_scores`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.utils import comm

from bmc_detectron.config import ConfigError
from bmc_detectron.data.checks import check_dataset_dicts
from bmc_detectron.data.crop_mapper import CellCropMapper, crop_records
from bmc_detectron.engine.loading import load_model
from bmc_detectron.engine.trainer import BMCTrainer
from bmc_detectron.evaluation.classification import ClassificationEvaluator
from bmc_detectron.evaluation.feature_scores import (
    FEATURE_SCORES,
    FeatureStatistics,
    fit_statistics,
)
from bmc_detectron.evaluation.open_set import (
    OpenSetThreshold,
    choose_threshold,
    flagged_share,
    open_set_score,
    write_threshold,
)
from bmc_detectron.modeling.classifier import classifier_class_names, classifier_other_index
from bmc_detectron.utils.io import file_sha256

logger = logging.getLogger(__name__)


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
        if thing_classes is not None and list(thing_classes) != class_names[: len(thing_classes)]:
            raise ConfigError(
                f"dataset {name!r} has the classes {list(thing_classes)} but the classifier "
                f"has {class_names} (MODEL.BMC.CLASSIFIER.NUM_CLASSES / CLASS_NAMES); a "
                "dataset's classes must be the classifier's first ones, in the same order"
            )
        dicts = check_dataset_dicts(
            dicts, name, num_classes, check_images=cfg.BMC.DATA.CHECK_IMAGES
        )
        records += crop_records(dicts, name, num_classes)
    return records


def _crop_batches(cfg: CfgNode, records: Sequence[dict]) -> Iterator[torch.Tensor]:
    """(B, 3, S, S) uint8 test crops (exact boxes, no augmentation) of crop records."""
    mapper = CellCropMapper(cfg, False)
    batch = max(1, int(cfg.MODEL.BMC.CLASSIFIER.BATCH_SIZE_TEST))
    for start in range(0, len(records), batch):
        yield torch.stack([mapper(r)["image"] for r in records[start : start + batch]])


def _numpy(x: object) -> np.ndarray:
    return torch.as_tensor(x).float().cpu().numpy()


def crop_outputs(
    cfg: CfgNode, model: torch.nn.Module, records: Sequence[dict]
) -> Tuple[np.ndarray, np.ndarray]:
    """(N, K) float32 logits and (N, C) float32 pooled features of crop records' test crops,
    from a model with ``predict_logits_and_features``; ValueError for no records."""
    if not hasattr(model, "predict_logits_and_features"):
        raise ValueError(f"{type(model).__name__} has no predict_logits_and_features")
    outs = [model.predict_logits_and_features(c) for c in _crop_batches(cfg, records)]
    if not outs:
        raise ValueError("crop_outputs: no crops")
    return np.concatenate([_numpy(o[0]) for o in outs]), np.concatenate(
        [_numpy(o[1]) for o in outs]
    )


def dataset_logits(
    cfg: CfgNode, model: torch.nn.Module, dataset_name: str
) -> Tuple[np.ndarray, np.ndarray]:
    """(N, K) float32 logits and (N,) int64 labels of the test crops (exact boxes, no
    augmentation) of a registered dataset, from a model with ``predict_logits``."""
    records = load_crop_records(cfg, [dataset_name])
    logits = [_numpy(model.predict_logits(c)) for c in _crop_batches(cfg, records)]
    labels = np.asarray([r["label"] for r in records], dtype=np.int64)
    return np.concatenate(logits), labels


def fit_open_set_statistics(
    cfg: CfgNode, model: torch.nn.Module, seed: int = 0
) -> FeatureStatistics:
    """The statistics of the feature score ``MODEL.BMC.CLASSIFIER.OPEN_SET_SCORE`` fitted on the
    features of ``DATASETS.TRAIN``'s crops (test crops; a seeded random ``OPEN_SET_FIT_CROPS`` of
    them when more; the kNN's k at most the crops there are). They describe the known cell
    types: crops of the classifier's own ``Other`` class (boxes of no whole cell) are left out."""
    clf = cfg.MODEL.BMC.CLASSIFIER
    records = load_crop_records(cfg, cfg.DATASETS.TRAIN)
    other = classifier_other_index(cfg)
    records = [r for r in records if r["label"] != other]
    if not records:
        raise ConfigError("no training crops to fit the open-set statistics on (DATASETS.TRAIN)")
    if len(records) > clf.OPEN_SET_FIT_CROPS:
        keep = np.random.default_rng(seed).choice(len(records), clf.OPEN_SET_FIT_CROPS, False)
        records = [records[i] for i in np.sort(keep)]
    _, features = crop_outputs(cfg, model, records)
    labels = np.asarray([r["label"] for r in records], dtype=np.int64)
    k = min(int(clf.OPEN_SET_KNN_K), len(records))
    return fit_statistics(clf.OPEN_SET_SCORE, features, labels, knn_k=k)


def _known_scores(cfg: CfgNode, model: torch.nn.Module, dataset: str, stats) -> np.ndarray:
    """The open-set scores of the (known-type) crops of ``dataset``."""
    if stats is not None:
        _, features = crop_outputs(cfg, model, load_crop_records(cfg, [dataset]))
        return stats.scores(features)
    logits, _ = dataset_logits(cfg, model, dataset)
    return open_set_score(logits, cfg.MODEL.BMC.CLASSIFIER.OPEN_SET_SCORE)


def choose_open_set_threshold(
    cfg: CfgNode,
    weights: str,
    datasets: Union[None, str, Sequence[str]] = None,
    *,
    model: Optional[torch.nn.Module] = None,
) -> Path:
    """Choose the open-set threshold of a trained classifier and write it beside ``weights``.

    The score is ``MODEL.BMC.CLASSIFIER.OPEN_SET_SCORE`` (a feature score's statistics are fitted
    first, :func:`fit_open_set_statistics`, and written beside the weights too); at most
    ``MODEL.BMC.CLASSIFIER.OPEN_SET_MAX_KNOWN_LOST`` of the crops of EACH of ``datasets``
    (default: every ``DATASETS.TEST``; every crop is of a known type) fall below it: the lowest
    of the per-dataset thresholds, so that single PBC cells and crops cut from crowded fields
    both keep their known cells. ``model``: the loaded model (default: ``weights`` loaded as
    the count loads them). Returns the JSON's path.
    """
    clf = cfg.MODEL.BMC.CLASSIFIER
    if not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: classifier weights not found")
    names = [datasets] if isinstance(datasets, str) else list(datasets or cfg.DATASETS.TEST)
    if not names:
        raise ConfigError("no dataset to choose the open-set threshold on (DATASETS.TEST)")
    model = load_model(cfg, weights) if model is None else model
    stats = fit_open_set_statistics(cfg, model) if clf.OPEN_SET_SCORE in FEATURE_SCORES else None
    per_set = {name: _known_scores(cfg, model, name, stats) for name in names}
    max_lost = float(clf.OPEN_SET_MAX_KNOWN_LOST)
    value = min(choose_threshold(s, max_lost) for s in per_set.values())
    lost = {name: float(flagged_share(s, value)) for name, s in per_set.items()}
    threshold = OpenSetThreshold(
        threshold=value,
        score=clf.OPEN_SET_SCORE,
        max_known_lost=max_lost,
        known_lost=max(lost.values()),
        dataset=", ".join(names),
        crops=int(sum(s.size for s in per_set.values())),
        weights_sha256=file_sha256(weights),
        statistics=stats,
    )
    path = write_threshold(weights, threshold)
    shares = ", ".join(f"{100 * v:.1f} % of {per_set[k].size} on {k}" for k, v in lost.items())
    logger.info(
        "open-set threshold %.4g (%s): known crops flagged %s -> %s",
        value,
        threshold.score,
        shares,
        path,
    )
    return path


class BMCClassifierTrainer(BMCTrainer):
    """:class:`BMCTrainer` for the cell classifier: crop loaders and classification metrics.

    The model, optimizer, schedule, checkpoints, hooks and CPU precision options are
    ``BMCTrainer``'s (detectron2's DefaultTrainer).
    """

    def train(self):
        """Training, then the open-set threshold beside ``model_final.pth`` (main process;
        ``OPEN_SET_MAX_KNOWN_LOST`` < 0 or no ``DATASETS.TEST``: none)."""
        results = super().train()
        final = Path(self.cfg.OUTPUT_DIR) / "model_final.pth"
        clf = self.cfg.MODEL.BMC.CLASSIFIER
        if comm.is_main_process() and self.cfg.DATASETS.TEST and clf.OPEN_SET_MAX_KNOWN_LOST >= 0:
            if final.is_file():
                choose_open_set_threshold(self.cfg, str(final))
        return results

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
