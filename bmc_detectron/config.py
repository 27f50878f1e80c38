"""Configuration namespace of bmc-detectron.

Every key this project adds lives under ``MODEL.BMC`` (model) or ``BMC`` (data, augmentation,
evaluation). :func:`add_bmc_config` adds them to a config object; it never touches detectron2's
global defaults, so ``detectron2.config.get_cfg()`` stays stock.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Optional, Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file, key or value that cannot be used (the message names it)."""


def _add_model_config(cfg: CN) -> None:
    bmc = cfg.MODEL.BMC = CN()

    # ---- Neck: FPN followed by a bottom-up path-aggregation path (PANet) with SE fusion.
    # The FPN part uses detectron2's keys: MODEL.FPN.IN_FEATURES (e.g. res3-res5 or res2-res5),
    # OUT_CHANNELS (every FPN/PAN level), NORM (also used by the PAN convs) and FUSE_TYPE. ----
    bmc.NECK = CN()
    # Add the bottom-up path N_low = P_low, N_{i+1} = Conv3x3(w * Down(N_i) + P_{i+1}).
    bmc.NECK.PAN = True
    # Weight the downsampled lower level with SE-style channel attention computed from P_{i+1}.
    bmc.NECK.ATTENTION = True
    # Reduction ratio of the SE bottleneck (channels -> channels / ratio -> channels).
    bmc.NECK.SE_REDUCTION = 16
    # Extra levels on top of the last PAN/FPN level: "P6P7" (RetinaNet), "P6" or "" (none).
    bmc.NECK.TOP_BLOCK = "P6P7"
    # Input of the extra levels: "p5" (last PAN/FPN output, as in FCOS) or "res5" (RetinaNet).
    bmc.NECK.TOP_BLOCK_IN = "p5"

    # ---- Label assignment (one assigner per file in modeling/assigners) ----
    bmc.ASSIGNER = CN()
    # Registered assigner: "MaxIoU", "ATSS", "OTA", "SimOTA", "PAA" or "DynamicSoft".
    bmc.ASSIGNER.NAME = "MaxIoU"
    # MaxIoU: allow each gt to keep its best anchor below the foreground threshold (RetinaNet).
    bmc.ASSIGNER.ALLOW_LOW_QUALITY_MATCHES = True
    # ATSS: candidates per level and gt (see ATSS.TOPK_PER_LOCATION for what k counts).
    bmc.ASSIGNER.ATSS_TOPK = 9
    # ATSS: True -> k locations (k x anchors-per-location anchors); False -> k anchors (paper).
    bmc.ASSIGNER.ATSS_TOPK_PER_LOCATION = False
    # OTA / SimOTA / DynamicSoft: weight of the IoU cost relative to the classification cost.
    bmc.ASSIGNER.IOU_WEIGHT = 3.0
    # OTA / SimOTA: centre-prior radius in units of the anchor's stride.
    bmc.ASSIGNER.CENTER_RADIUS = 2.5
    # OTA / SimOTA / DynamicSoft: dynamic k of a gt = sum of its top-q candidate IoUs (>= 1).
    bmc.ASSIGNER.DYNAMIC_TOPQ = 10
    # OTA: Sinkhorn entropy regularisation epsilon.
    bmc.ASSIGNER.SINKHORN_EPS = 0.1
    # OTA: number of Sinkhorn iterations.
    bmc.ASSIGNER.SINKHORN_ITERS = 50
    # OTA / SimOTA: cost added to anchors outside the gt box and its centre region.
    bmc.ASSIGNER.OUTSIDE_COST = 1.0e5
    # OTA / SimOTA / DynamicSoft: at most this many candidates per gt (bounds memory).
    bmc.ASSIGNER.MAX_CANDIDATES = 1000
    # PAA: pre-assigned candidates per level and gt (by IoU with the anchors).
    bmc.ASSIGNER.PAA_TOPK = 9
    # PAA: EM iterations of the per-gt two-component Gaussian mixture.
    bmc.ASSIGNER.PAA_EM_ITERS = 10
    # PAA: positives are candidates scoring at most the low-loss component's mean ("peak", as the
    # authors' code) or with posterior >= 0.5 for that component ("boundary").
    bmc.ASSIGNER.PAA_SEPARATION = "peak"
    # PAA: weight of the IoU loss in the anchor score.
    bmc.ASSIGNER.PAA_IOU_WEIGHT = 1.0
    # DynamicSoft: base of the soft centre prior, 10^(distance / stride - shift).
    bmc.ASSIGNER.SOFT_CENTER_POWER = 10.0
    # DynamicSoft: the soft centre prior costs 1 at this distance (in strides) from the gt centre.
    bmc.ASSIGNER.SOFT_CENTER_SHIFT = 3.0

    # ---- Losses ----
    bmc.LOSS = CN()
    # Classification loss: "focal" (sigmoid focal), "varifocal" or "quality_focal".
    bmc.LOSS.CLS_TYPE = "focal"
    # Use IoU(decoded prediction, gt) as the classification target of positives (soft labels).
    bmc.LOSS.SOFT_LABELS = False
    # Weight of the classification loss.
    bmc.LOSS.CLS_WEIGHT = 1.0
    # Weight of the box regression loss (its type is MODEL.RETINANET.BBOX_REG_LOSS_TYPE).
    bmc.LOSS.BOX_WEIGHT = 1.0
    # Varifocal loss: alpha (negatives) and gamma.
    bmc.LOSS.VFL_ALPHA = 0.75
    # Varifocal loss gamma.
    bmc.LOSS.VFL_GAMMA = 2.0
    # Quality focal loss beta.
    bmc.LOSS.QFL_BETA = 2.0

    # ---- Head ----
    bmc.HEAD = CN()
    # Dilation of each conv of the cls/box towers (one entry per MODEL.RETINANET.NUM_CONVS, or one).
    bmc.HEAD.DILATIONS = [1]
    # Make the last conv of each tower deformable.
    bmc.HEAD.DEFORM_LAST = False
    # Deformable convs in the head are modulated (DCNv2) rather than DCNv1.
    bmc.HEAD.DEFORM_MODULATED = True

    # ---- Backbone extras (deformable ResNet stages use MODEL.RESNETS.DEFORM_*; here via
    # torchvision.ops.deform_conv2d, not detectron2's compiled DeformConv) ----
    bmc.BACKBONE = CN()
    # Dilation of the 3x3 conv in each ResNet stage res2..res5 (1 = none). Strides are unchanged.
    bmc.BACKBONE.STAGE_DILATIONS = [1, 1, 1, 1]


def _add_data_config(cfg: CN) -> None:
    bmc = cfg.BMC = CN()
    # Training augmentation for smears (all applied after the resize).
    bmc.AUG = CN()
    # Random horizontal flip with probability 0.5.
    bmc.AUG.HFLIP = True
    # Random vertical flip with probability 0.5.
    bmc.AUG.VFLIP = True
    # Random rotation by a multiple of 90 degrees.
    bmc.AUG.ROT90 = True
    # Brightness jitter range (factor), [] to disable.
    bmc.AUG.BRIGHTNESS = [0.85, 1.15]
    # Contrast jitter range (factor), [] to disable.
    bmc.AUG.CONTRAST = [0.85, 1.15]
    # Saturation jitter range (factor), [] to disable (stain intensity variation).
    bmc.AUG.SATURATION = [0.8, 1.2]

    bmc.DATA = CN()
    # Validate every image (readable, size) and box before training starts.
    bmc.DATA.CHECK_IMAGES = True

    bmc.EVAL = CN()
    # JSON with AP, AP50, AP75, APs/m/l, per-class AP/AP50, in OUTPUT_DIR/inference/<dataset>/.
    bmc.EVAL.METRICS_FILE = "coco_metrics.json"


def add_bmc_config(cfg: CN) -> CN:
    """Add every bmc-detectron key (``MODEL.BMC.*`` and ``BMC.*``) to ``cfg`` in place.

    Returns ``cfg`` for chaining. Calling it twice is harmless.
    """
    if "BMC" not in cfg.MODEL:
        _add_model_config(cfg)
    if "BMC" not in cfg:
        _add_data_config(cfg)
    return cfg


def get_bmc_cfg() -> CN:
    """A fresh copy of detectron2's defaults with the bmc-detectron keys added."""
    return add_bmc_config(get_cfg())


def _merge(source: str, merge: Callable[[], None]) -> None:
    try:
        merge()
    except KeyError as e:
        raise ConfigError(f"{source}: {e.args[0] if e.args else e}") from None
    except (ValueError, AssertionError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from None


def _registered_choices(cfg: CN) -> Dict[str, tuple]:
    """Config keys whose value names a registry entry or a fixed choice -> (value, allowed)."""
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

    from .modeling.assigners import ASSIGNER_REGISTRY

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
        "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": (
            cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE,
            ["ciou", "diou", "giou", "smooth_l1"],
        ),
    }


def check_cfg(cfg: CN) -> None:
    """Raise :class:`ConfigError` for a value that names nothing registered or allowed."""
    for key, (value, allowed) in _registered_choices(cfg).items():
        if value not in allowed:
            raise ConfigError(f"{key} {value!r} is not known; allowed: {', '.join(allowed)}")
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" in weights:
        raise ConfigError(
            f"MODEL.WEIGHTS {weights!r}: nothing is downloaded at run time; give a local "
            ".pth/.pkl path or leave it empty to train from scratch"
        )
    if weights and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS {weights!r}: file not found")


def build_cfg(config_file: Optional[str], opts: Sequence[str] = ()) -> CN:
    """A frozen config: bmc defaults, then ``config_file``, then ``KEY VALUE`` overrides.

    Raises :class:`ConfigError` naming the file or key on unknown keys, bad values, unknown
    registry names, a missing file or a weights path that would need a download. Falls back to
    CPU (with a warning) when the config asks for CUDA and there is none.
    """
    cfg = get_bmc_cfg()
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"{config_file}: config file not found")
        _merge(config_file, lambda: cfg.merge_from_file(config_file))
    if opts:
        _merge("command-line overrides", lambda: cfg.merge_from_list(list(opts)))
    check_cfg(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %s but CUDA is not available: using cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    if cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda"):
        # detectron2's AMPTrainer is CUDA-only (fp16 autocast + GradScaler)
        logger.info(
            "SOLVER.AMP.ENABLED: mixed precision is for CUDA; training in float32 on %s",
            cfg.MODEL.DEVICE,
        )
        cfg.SOLVER.AMP.ENABLED = False
    cfg.freeze()
    return cfg
