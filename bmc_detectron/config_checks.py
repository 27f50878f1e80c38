"""The checks of a built config: values that name nothing registered or allowed, classifier keys
that do not fit together, weights that would need a download (:func:`check_cfg`, run by
:func:`bmc_detectron.config.build_cfg`). The keys themselves are in :mod:`bmc_detectron.config`.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

from detectron2.config import CfgNode as CN


class ConfigError(ValueError):
    """A config file, key or value that cannot be used (the message names it)."""


def _registered_choices(cfg: CN) -> Dict[str, tuple]:
    """Config keys whose value names a registry entry or a fixed choice -> (value, allowed)."""
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

    from bmc_detectron.registry import ASSIGNER_REGISTRY

    def names(registry) -> list:
        return sorted(name for name, _ in registry)

    return {
        "MODEL.META_ARCHITECTURE": (cfg.MODEL.META_ARCHITECTURE, names(META_ARCH_REGISTRY)),
        "MODEL.BACKBONE.NAME": (cfg.MODEL.BACKBONE.NAME, names(BACKBONE_REGISTRY)),
        "MODEL.BMC.ASSIGNER.NAME": (cfg.MODEL.BMC.ASSIGNER.NAME, names(ASSIGNER_REGISTRY)),
        "MODEL.BMC.LOSS.CLS_TYPE": (
            cfg.MODEL.BMC.LOSS.CLS_TYPE,
            ["focal", "quality_focal", "varifocal"],
        ),
        "MODEL.BMC.LOSS.SOFT_TARGET": (cfg.MODEL.BMC.LOSS.SOFT_TARGET, ["alignment", "iou"]),
        "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": (
            cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE,
            ["ciou", "diou", "giou", "smooth_l1"],
        ),
    }


CLASSIFIER_ARCH = "BMCCellClassifier"
#: the view counts MODEL.BMC.CLASSIFIER.TEST_FLIPS takes (modeling/classifier.dihedral_views)
CLASSIFIER_TEST_FLIPS = (1, 2, 8)

#: test-time flips (``BMC.TEST_FLIPS``): "h" mirrors left-right, "v" top-bottom, "hv" both
TEST_FLIPS = ("h", "v", "hv")
#: how the flipped passes' detections merge (``BMC.TEST_FLIP_MERGE``)
TEST_FLIP_MERGES = ("nms", "wbf")


def check_test_flips(flips: Sequence[str], merge: str) -> List[str]:
    """The test-time flips as a list, after checking them and the merge (ConfigError naming the
    key)."""
    flips = list(flips)
    if any(f not in TEST_FLIPS for f in flips) or len(set(flips)) != len(flips):
        raise ConfigError(f"BMC.TEST_FLIPS {flips!r}: use distinct entries of {list(TEST_FLIPS)}")
    if merge not in TEST_FLIP_MERGES:
        raise ConfigError(
            f"BMC.TEST_FLIP_MERGE {merge!r} is not known; allowed: {', '.join(TEST_FLIP_MERGES)}"
        )
    return flips


def _check_classifier(cfg: CN) -> None:
    """Class-agnostic detection needs one class; the classifier's keys must fit together."""
    is_classifier = cfg.MODEL.META_ARCHITECTURE == CLASSIFIER_ARCH
    if cfg.BMC.DATA.CLASS_AGNOSTIC:
        if is_classifier:
            raise ConfigError(
                "BMC.DATA.CLASS_AGNOSTIC is for detectors, not for MODEL.META_ARCHITECTURE "
                f"{CLASSIFIER_ARCH}"
            )
        if cfg.MODEL.RETINANET.NUM_CLASSES != 1:
            raise ConfigError(
                "BMC.DATA.CLASS_AGNOSTIC True detects one 'cell' class: set "
                f"MODEL.RETINANET.NUM_CLASSES 1 (it is {cfg.MODEL.RETINANET.NUM_CLASSES})"
            )
    if not is_classifier:
        return
    clf, jitter = cfg.MODEL.BMC.CLASSIFIER, cfg.BMC.CLASSIFIER_AUG.BOX_JITTER
    problems = {
        "NUM_CLASSES": (clf.NUM_CLASSES < 2, "needs at least 2 classes"),
        "CLASS_NAMES": (
            bool(clf.CLASS_NAMES) and len(clf.CLASS_NAMES) != clf.NUM_CLASSES,
            f"has {len(clf.CLASS_NAMES)} names but NUM_CLASSES is {clf.NUM_CLASSES}",
        ),
        "IN_FEATURE": (
            clf.IN_FEATURE not in cfg.MODEL.RESNETS.OUT_FEATURES,
            f"must be one of MODEL.RESNETS.OUT_FEATURES {list(cfg.MODEL.RESNETS.OUT_FEATURES)}",
        ),
        "CROP_SIZE": (clf.CROP_SIZE < 32, "must be >= 32 (the ResNet's stride)"),
        "CROP_MARGIN": (clf.CROP_MARGIN < 0, "must be >= 0"),
        "TEST_FLIPS": (clf.TEST_FLIPS not in CLASSIFIER_TEST_FLIPS, "must be 1, 2 or 8"),
        "LABEL_SMOOTHING": (not 0 <= clf.LABEL_SMOOTHING < 1, "must be in [0, 1)"),
        "OPEN_SET_SCORE": (
            clf.OPEN_SET_SCORE not in ("knn", "mahalanobis", "energy", "max_softmax"),
            "must be 'knn', 'mahalanobis', 'energy' or 'max_softmax'",
        ),
        "OPEN_SET_KNN_K": (clf.OPEN_SET_KNN_K < 1, "must be >= 1"),
        "OPEN_SET_FIT_CROPS": (clf.OPEN_SET_FIT_CROPS < 1, "must be >= 1"),
        "OPEN_SET_MAX_KNOWN_LOST": (
            clf.OPEN_SET_MAX_KNOWN_LOST >= 1,
            "must be below 1 (negative: no threshold)",
        ),
    }
    for key, (bad, why) in problems.items():
        if bad:
            raise ConfigError(f"MODEL.BMC.CLASSIFIER.{key} {clf[key]!r}: {why}")
    if not 0 <= jitter < 0.5:
        raise ConfigError(f"BMC.CLASSIFIER_AUG.BOX_JITTER {jitter!r}: must be in [0, 0.5)")


def _check_refinement(cfg: CN) -> None:
    """MODEL.BMC.REFINE: only BMCRetinaNet has the stage; sizes and fractions in range."""
    ref = cfg.MODEL.BMC.REFINE
    if not ref.ENABLED:
        return
    if cfg.MODEL.META_ARCHITECTURE != "BMCRetinaNet":
        raise ConfigError(
            "MODEL.BMC.REFINE.ENABLED: the refinement stage belongs to BMCRetinaNet, not "
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}"
        )
    problems = {
        "POOLER_RESOLUTION": ref.POOLER_RESOLUTION < 1,
        "FC_DIM": ref.FC_DIM < 1,
        "NUM_FC": ref.NUM_FC < 1,
        "PROPOSALS_PER_IMAGE": ref.PROPOSALS_PER_IMAGE < 0,
        "GT_COPIES": ref.GT_COPIES < 0,
        "JITTER": not 0 <= ref.JITTER < 1,
        "FOREGROUND_IOU": not 0 < ref.FOREGROUND_IOU <= 1,
        "LOSS_WEIGHT": ref.LOSS_WEIGHT < 0,
    }
    for key, bad in problems.items():
        if bad:
            raise ConfigError(f"MODEL.BMC.REFINE.{key} {ref[key]!r}: out of range")
    if not all(0 < float(u) <= 1 for u in ref.CASCADE_IOUS):
        raise ConfigError(
            f"MODEL.BMC.REFINE.CASCADE_IOUS {list(ref.CASCADE_IOUS)!r}: each must be in (0, 1]"
        )


def check_cfg(cfg: CN) -> None:
    """Raise :class:`ConfigError` for a value that names nothing registered or allowed."""
    for key, (value, allowed) in _registered_choices(cfg).items():
        if value not in allowed:
            raise ConfigError(f"{key} {value!r} is not known; allowed: {', '.join(allowed)}")
    _check_classifier(cfg)
    if int(cfg.BMC.CHECKPOINTS_TO_KEEP) < 0:
        raise ConfigError(f"BMC.CHECKPOINTS_TO_KEEP {cfg.BMC.CHECKPOINTS_TO_KEEP!r}: must be >= 0")
    check_test_flips(cfg.BMC.TEST_FLIPS, cfg.BMC.TEST_FLIP_MERGE)
    _check_refinement(cfg)
    ema = cfg.BMC.EMA
    if not 0 <= ema.DECAY < 1 or ema.WARMUP < 0:
        raise ConfigError(f"BMC.EMA: DECAY {ema.DECAY!r} not in [0, 1) or WARMUP {ema.WARMUP} < 0")
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" in weights:
        raise ConfigError(
            f"MODEL.WEIGHTS {weights!r}: nothing is downloaded at run time; give a local "
            ".pth/.pkl path or leave it empty to train from scratch"
        )
    if weights and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS {weights!r}: file not found")
