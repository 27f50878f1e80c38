"""Configuration namespace of bmc-detectron.

Every key this project adds lives under ``MODEL.BMC`` (model) or ``BMC`` (data, augmentation,
evaluation). :func:`add_bmc_config` adds them to a config object; it never touches detectron2's
global defaults, so ``detectron2.config.get_cfg()`` stays stock.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from bmc_detectron.config_checks import CLASSIFIER_ARCH, ConfigError, check_cfg

logger = logging.getLogger(__name__)

__all__ = [
    "CLASSIFIER_ARCH",
    "ConfigError",
    "add_bmc_config",
    "build_cfg",
    "check_cfg",
    "get_bmc_cfg",
]


def _add_model_config(cfg: CN) -> None:
    bmc = cfg.MODEL.BMC = CN()
    _add_neck_config(bmc)
    _add_assigner_config(bmc)
    _add_loss_head_config(bmc)


def _add_neck_config(bmc: CN) -> None:
    # ---- Neck: FPN, optionally followed by a bottom-up path-aggregation path (PANet) with SE
    # fusion; by default (PAN and ATTENTION off) the plain FPN.
    # The FPN part uses detectron2's keys: MODEL.FPN.IN_FEATURES (e.g. res3-res5 or res2-res5),
    # OUT_CHANNELS (every FPN/PAN level), NORM (also used by the PAN convs) and FUSE_TYPE. ----
    bmc.NECK = CN()
    # Add the bottom-up path N_low = P_low, N_{i+1} = Conv3x3(w * Down(N_i) + P_{i+1}).
    bmc.NECK.PAN = False
    # Weight the downsampled lower level with SE-style channel attention computed from P_{i+1}.
    bmc.NECK.ATTENTION = False
    # Reduction ratio of the SE bottleneck (channels -> channels / ratio -> channels).
    bmc.NECK.SE_REDUCTION = 16
    # Initial bias of the SE gate's last layer: 0 starts the gate near sigmoid(0) = 0.5 (halving
    # the bottom-up signal early), 3 near 0.95 (plain PAN fusion at the start).
    bmc.NECK.SE_GATE_BIAS = 0.0
    # Extra levels on top of the last PAN/FPN level: "P6P7" (RetinaNet), "P6" or "" (none).
    bmc.NECK.TOP_BLOCK = "P6P7"
    # Input of the extra levels: "p5" (last PAN/FPN output, as in FCOS) or "res5" (RetinaNet).
    bmc.NECK.TOP_BLOCK_IN = "p5"


def _center_cost_node() -> CN:
    """The keys OTA and SimOTA share: the cost and the candidates of a centre-prior assigner."""
    node = CN()
    # Weight of the -log(IoU) cost relative to the focal classification cost.
    node.IOU_WEIGHT = 3.0
    # Half-side of the centre square around a gt centre, in strides of the anchor's level.
    node.CENTER_RADIUS = 2.5
    # Dynamic k of a gt = floor(sum of its top-q candidate IoUs), at least 1.
    node.DYNAMIC_TOPQ = 10
    # Candidates (nearest anchors) of a gt with no anchor centre in its box or centre square.
    node.FALLBACK_K = 10
    # Cost added to pairs whose anchor centre is not in both the gt box and its centre square.
    node.OUTSIDE_COST = 1.0e5
    # At most this many candidates per gt, the nearest to its centre (bounds memory).
    node.MAX_CANDIDATES = 1000
    return node


def _add_assigner_config(bmc: CN) -> None:
    # ---- Label assignment: one sub-node per assigner (one file each in modeling/assigners);
    # an assigner reads only its own sub-node. The focal-cost alpha / gamma of OTA, SimOTA and PAA
    # are the loss's MODEL.RETINANET.FOCAL_LOSS_ALPHA / GAMMA; MaxIoU's thresholds and labels are
    # detectron2's MODEL.RETINANET.IOU_THRESHOLDS / IOU_LABELS. ----
    bmc.ASSIGNER = CN()
    # Registered assigner: "MaxIoU", "ATSS", "OTA", "SimOTA", "PAA", "DynamicSoft" or "TaskAligned".
    bmc.ASSIGNER.NAME = "MaxIoU"

    max_iou = bmc.ASSIGNER.MAX_IOU = CN()
    # Keep each gt's best anchors even below the foreground threshold (as RetinaNet does).
    max_iou.ALLOW_LOW_QUALITY_MATCHES = True

    atss = bmc.ASSIGNER.ATSS = CN()
    # Candidates per level and gt, nearest to the gt centre (what k counts: TOPK_PER_LOCATION).
    atss.TOPK = 9
    # True: k locations (k x anchors-per-location anchors); False: k anchors (the paper's text).
    atss.TOPK_PER_LOCATION = False

    ota = bmc.ASSIGNER.OTA = _center_cost_node()
    # Entropic regularisation epsilon of the Sinkhorn solver.
    ota.SINKHORN_EPS = 0.1
    # Number of Sinkhorn iterations.
    ota.SINKHORN_ITERS = 50

    bmc.ASSIGNER.SIMOTA = _center_cost_node()

    paa = bmc.ASSIGNER.PAA = CN()
    # Pre-assigned candidates per level and gt (highest IoU among the anchors it owns).
    paa.TOPK = 9
    # EM iterations of the per-gt two-component Gaussian mixture.
    paa.EM_ITERS = 10
    # Positives: "peak" (score <= low-loss component mean) or "boundary" (posterior >= 0.5).
    paa.SEPARATION = "peak"
    # Weight of the IoU loss in the candidate score.
    paa.IOU_WEIGHT = 1.0

    dsl = bmc.ASSIGNER.DYNAMIC_SOFT = CN()
    # Weight of the -log(IoU) cost relative to the soft classification cost.
    dsl.IOU_WEIGHT = 3.0
    # Dynamic k of a gt = floor(sum of its top-q candidate IoUs), at least 1 (RTMDet's topk).
    dsl.DYNAMIC_TOPQ = 13
    # Candidates (nearest anchors) of a gt that contains no anchor centre.
    dsl.FALLBACK_K = 10
    # At most this many candidates per gt, the nearest to its centre (bounds memory).
    dsl.MAX_CANDIDATES = 1000
    # Base of the soft centre prior POWER ** (distance / stride - SHIFT).
    dsl.SOFT_CENTER_POWER = 10.0
    # Distance (in strides) from the gt centre at which the soft centre prior costs 1.
    dsl.SOFT_CENTER_SHIFT = 3.0

    tal = bmc.ASSIGNER.TASK_ALIGNED = CN()
    # Positives per gt at most: its top-k in-box candidates by alignment t (TOOD's 13).
    tal.TOPK = 13
    # Exponent of the gt-class score s in the alignment t = s^ALPHA * IoU^BETA (TOOD's 1).
    tal.ALPHA = 1.0
    # Exponent of the IoU of the decoded box with the gt in the alignment (TOOD's 6).
    tal.BETA = 6.0


def _add_loss_head_config(bmc: CN) -> None:
    # ---- Losses ----
    bmc.LOSS = CN()
    # Classification loss: "focal" (sigmoid focal), "varifocal" or "quality_focal".
    bmc.LOSS.CLS_TYPE = "focal"
    # Soft classification targets of positives (soft labels; which: SOFT_TARGET) instead of 1.
    bmc.LOSS.SOFT_LABELS = False
    # Soft target with SOFT_LABELS: "iou" (IoU of the decoded box with its gt) or "alignment"
    # (TOOD's normalised alignment, from an assigner that gives one: TaskAligned).
    bmc.LOSS.SOFT_TARGET = "iou"
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
    # Weight of the distribution focal loss of GFL's box distributions (HEAD.REG_MAX > 0; GFL 0.25).
    bmc.LOSS.DFL_WEIGHT = 0.25
    # HEAD.REG_MAX > 0: weight each positive's box and DFL losses by its detached best class
    # score, normalised by their sum (GFL); False: unweighted, normalised by the positive count.
    bmc.LOSS.BOX_SCORE_WEIGHTS = True

    # ---- Head ----
    bmc.HEAD = CN()
    # Dilation of each conv of the cls/box towers (one entry per MODEL.RETINANET.NUM_CONVS, or one).
    bmc.HEAD.DILATIONS = [1]
    # Make the last conv of each tower deformable.
    bmc.HEAD.DEFORM_LAST = False
    # Deformable convs in the head are modulated (DCNv2) rather than DCNv1.
    bmc.HEAD.DEFORM_MODULATED = True
    # 0: box deltas (4 per anchor); > 0: GFL's box distributions, REG_MAX + 1 bins per side over
    # 0..REG_MAX strides from the anchor centre, integrated (needs a GIoU/DIoU/CIoU box loss).
    bmc.HEAD.REG_MAX = 0

    # PAA's score voting after NMS (modeling/score_voting.py): width sigma of the IoU weight
    # exp(-(1 - IoU)^2 / sigma) (PAA: 0.025); 0 = off (detectron2's inference).
    bmc.SCORE_VOTING_SIGMA = 0.0

    # ---- Box refinement (modeling/refine.py): Faster R-CNN's box head refines the final
    # detections once from RoIAlign features of the head's levels (Cascade R-CNN's stage) ----
    bmc.REFINE = CN()
    # Add the refinement stage (trained jointly, applied after NMS; the head's classes are kept).
    bmc.REFINE.ENABLED = False
    # Side of the RoIAlign grid pooled from each box's level.
    bmc.REFINE.POOLER_RESOLUTION = 7
    # Width of the box head's fully connected layers.
    bmc.REFINE.FC_DIM = 256
    # Number of those layers.
    bmc.REFINE.NUM_FC = 2
    # Also predict the refined box's IoU with its cell (IoU-Net); scores become sqrt(score * IoU).
    bmc.REFINE.IOU_SCORE = False
    # Also classify each box (Faster R-CNN's classifier: the detector's classes + background);
    # scores become the geometric mean of the score, that class's probability (and the IoU).
    bmc.REFINE.CLASSIFY = False
    # Training samples: at most this many of each image's own detections (best first) ...
    bmc.REFINE.PROPOSALS_PER_IMAGE = 100
    # ... plus its gt boxes and this many jittered copies of each ...
    bmc.REFINE.GT_COPIES = 4
    # ... moved and rescaled by up to this fraction of the box's size.
    bmc.REFINE.JITTER = 0.15
    # Samples whose best IoU with a gt box is at least this learn its deltas.
    bmc.REFINE.FOREGROUND_IOU = 0.5
    # Further stages (Cascade R-CNN), one per value: each refines the previous stage's boxes and
    # trains at this foreground IoU, e.g. [0.6, 0.7]; empty: one stage.
    bmc.REFINE.CASCADE_IOUS = []
    # Backbone maps the stage pools from (strides consecutive powers of two), e.g. ["p2", "p3",
    # "p4", "p5"] with a neck that makes p2 (MODEL.FPN.IN_FEATURES from res2); empty: the head's.
    bmc.REFINE.IN_FEATURES = []
    # Multiplier of the refinement losses (loss_refine_box, loss_refine_iou). The box loss is
    # divided by the sample count, as Faster R-CNN's is; there at most a quarter of its 512 samples
    # are foreground, here most are, so 0.25 keeps its weight per foreground box (at 1.0 the toy
    # training of tests/test_configs.py diverges without a gradient clip).
    bmc.REFINE.LOSS_WEIGHT = 0.25
    # Per-class NMS again after refinement, at MODEL.RETINANET.NMS_THRESH_TEST (refined duplicates
    # may converge); False: every refined detection is kept.
    bmc.REFINE.SECOND_NMS = True
    # Train the refinement on detached features: the dense detector trains exactly as without it
    # (detectron2 clips each parameter's gradient on its own), the second stage only reads it.
    bmc.REFINE.DETACH_FEATURES = False

    # ---- Backbone extras (deformable ResNet stages use MODEL.RESNETS.DEFORM_*; here via
    # torchvision.ops.deform_conv2d, not detectron2's compiled DeformConv) ----
    bmc.BACKBONE = CN()
    # Dilation of the 3x3 conv in each ResNet stage res2..res5 (1 = none). Strides are unchanged.
    bmc.BACKBONE.STAGE_DILATIONS = [1, 1, 1, 1]

    # ---- FCOS (META_ARCHITECTURE "BMCFCOS", detectron2's FCOS from yacs): the head, focal loss
    # and test settings are read from MODEL.RETINANET.* as for RetinaNet ----
    bmc.FCOS = CN()
    # Anchor points within this many strides of a gt's centre are its positives (FCOS's radius).
    bmc.FCOS.CENTER_SAMPLING_RADIUS = 1.5


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
    # H&E stain jitter [scale_range, shift_range] (smear/stain.py), [] to disable.
    bmc.AUG.STAIN_HED = []
    # Scale jitter: resize by a factor drawn log-uniformly from [low, high], [] to disable.
    bmc.AUG.SCALE_RANGE = []
    # After the scale jitter, a random crop of at most this side in pixels (0 = no crop).
    bmc.AUG.SCALE_CROP = 0
    # Gaussian blur sigma range in pixels [low, high], [] to disable.
    bmc.AUG.BLUR_SIGMA = []
    # Resolution loss (scanner): downsample by a factor in [low, high] (>= 1) and back, [] = off.
    bmc.AUG.RESOLUTION_LOSS = []
    # JPEG compression quality range [low, high] (1-100), [] to disable.
    bmc.AUG.JPEG_QUALITY = []
    # Probability that each of BLUR_SIGMA, RESOLUTION_LOSS and JPEG_QUALITY is applied to an image.
    bmc.AUG.DEGRADE_PROB = 0.5

    bmc.DATA = CN()
    # Validate every image (readable, size) and box before training starts.
    bmc.DATA.CHECK_IMAGES = True
    # Detect one "cell" class: each DATASETS name is replaced by its merged variant (data/agnostic).
    bmc.DATA.CLASS_AGNOSTIC = False
    # Physical pixel size of the training images in micrometres, 0 = unknown (recorded only).
    bmc.DATA.MICRONS_PER_PIXEL = 0.0
    # Median red-cell diameter in pixels of the training images (smear/ruler.py), 0 = unknown.
    bmc.DATA.RBC_DIAMETER_PX = 0.0
    # Images of DATASETS.TRAIN measured for OUTPUT_DIR/training_profile.json (scale and colour
    # reference of the count command, smear/profile.py) after training; 0 = none.
    bmc.DATA.PROFILE_IMAGES = 32

    # Periodic checkpoints (model_NNNNNNN.pth) kept in OUTPUT_DIR, newest first; older ones are
    # deleted as training saves new ones (model_final.pth always stays); 0 = keep all
    # (detectron2's behaviour). Resuming needs only the newest.
    bmc.CHECKPOINTS_TO_KEEP = 2

    bmc.EVAL = CN()
    # JSON with AP, AP50, AP75, APs/m/l, per-class AP/AP50, in OUTPUT_DIR/inference/<dataset>/.
    bmc.EVAL.METRICS_FILE = "coco_metrics.json"

    # Test-time flips of the dense detectors' evaluation (modeling/tta.py): extra passes on the
    # mirrored image, entries of "h" (left-right), "v" (top-bottom), "hv" (both); [] = off.
    bmc.TEST_FLIPS = []
    # How the passes' detections merge: "nms" (class-wise, MODEL.RETINANET.NMS_THRESH_TEST) or
    # "wbf" (weighted box fusion, matching at the same IoU).
    bmc.TEST_FLIP_MERGE = "nms"

    # Precision on CPU (CUDA mixed precision is detectron2's SOLVER.AMP.ENABLED).
    bmc.PRECISION = CN()
    # bfloat16 autocast for the forward pass of training and inference on CPU; losses,
    # assigners and IoU-aware targets stay float32 (engine/precision.py).
    bmc.PRECISION.CPU_BF16 = False
    # Channels-last (NHWC) conv weights and backbone input, oneDNN's preferred CPU layout.
    bmc.PRECISION.CHANNELS_LAST = False

    # Exponential moving average of the detector's weights while it trains (engine/ema.py).
    bmc.EMA = CN()
    # Keep the average: checkpoints hold it as "model" (what evaluation, load_model, the count and
    # the ONNX export read) and the trained weights as "model_raw" (read back by --resume).
    bmc.EMA.ENABLED = False
    # Decay of the average after warm-up (mmdetection's ExpMomentumEMA: 1 - 0.0002), in [0, 1).
    bmc.EMA.DECAY = 0.9998
    # Warm-up in iterations: step n keeps DECAY * (1 - exp(-n / WARMUP)) of the average; 0 = none.
    bmc.EMA.WARMUP = 2000.0


def _add_classifier_config(cfg: CN) -> None:
    # ---- Recognition stage: the cell classifier (META_ARCHITECTURE "BMCCellClassifier") on crops
    # cut by data/crops.crop_boxes; its backbone is detectron2's ResNet (MODEL.RESNETS.*). ----
    clf = cfg.MODEL.BMC.CLASSIFIER = CN()
    # Number of cell classes (the linear layer's outputs).
    clf.NUM_CLASSES = 11
    # Class names in class-id order; [] = thing_classes of DATASETS.TRAIN[0].
    clf.CLASS_NAMES = []
    # Side of the square crops in pixels (training, evaluation and the count pipeline).
    clf.CROP_SIZE = 64
    # Context around the box on every side, as a fraction of the box's longer side.
    clf.CROP_MARGIN = 0.15
    # Backbone feature that is average-pooled into the linear layer (in MODEL.RESNETS.OUT_FEATURES).
    clf.IN_FEATURE = "res5"
    # Label smoothing of the cross-entropy loss (0 = none).
    clf.LABEL_SMOOTHING = 0.0
    # Logit normalisation of the training loss (Wei et al. 2022): the cross-entropy reads
    # logits / (tau * ||logits||), which keeps their norm from growing; tau > 0 turns it on (the
    # paper's 0.04), 0 = the plain cross-entropy. Inference logits are unchanged.
    clf.LOGIT_NORM_TAU = 0.0
    # Cosine last layer (NormFace, Wang et al. 2017): > 0: the logits are this scale times the
    # cosine between the pooled features and each class's weights (e.g. 16); 0 = a linear layer.
    clf.COSINE_SCALE = 0.0
    # Crops per forward pass at inference (test loader batches, predict_crops chunks).
    clf.BATCH_SIZE_TEST = 64
    # Views of each crop averaged at inference (modeling/classifier.dihedral_views): 1 as is, 2
    # with its mirror image, 8 with its flips and quarter turns. The pooled features are averaged,
    # so logits, the open-set score, the threshold and the ONNX graph all see the same views.
    clf.TEST_FLIPS = 1
    # Open-set score of the "Other" outcome (evaluation/open_set.py): "knn" or "mahalanobis" (the
    # pooled features against statistics of the training crops', evaluation/feature_scores.py),
    # "energy" or "max_softmax" (the logits).
    clf.OPEN_SET_SCORE = "knn"
    # k of the "knn" score: the distance to the k-th nearest training feature.
    clf.OPEN_SET_KNN_K = 10
    # At most this many DATASETS.TRAIN crops (a seeded random sample) feed a feature score's
    # statistics (the kNN bank's size).
    clf.OPEN_SET_FIT_CROPS = 4000
    # Share of each DATASETS.TEST's crops the open-set threshold may flag, chosen after training
    # and stored beside model_final.pth; negative: no threshold is chosen.
    clf.OPEN_SET_MAX_KNOWN_LOST = 0.05

    # Training augmentation of the crops (the smear augmentation of data/augment.py).
    aug = cfg.BMC.CLASSIFIER_AUG = CN()
    # Random horizontal flip with probability 0.5.
    aug.HFLIP = True
    # Random vertical flip with probability 0.5.
    aug.VFLIP = True
    # Random rotation by a multiple of 90 degrees.
    aug.ROT90 = True
    # Brightness jitter range (factor), [] to disable.
    aug.BRIGHTNESS = [0.85, 1.15]
    # Contrast jitter range (factor), [] to disable.
    aug.CONTRAST = [0.85, 1.15]
    # Saturation jitter range (factor), [] to disable (stain intensity variation).
    aug.SATURATION = [0.8, 1.2]
    # Random box shift / resize before cropping, up to this fraction of its side (detector boxes).
    aug.BOX_JITTER = 0.1


def add_bmc_config(cfg: CN) -> CN:
    """Add every bmc-detectron key (``MODEL.BMC.*`` and ``BMC.*``) to ``cfg`` in place.

    Returns ``cfg`` for chaining. Calling it twice is harmless.
    """
    if "BMC" not in cfg.MODEL:
        _add_model_config(cfg)
    if "BMC" not in cfg:
        _add_data_config(cfg)
    if "CLASSIFIER" not in cfg.MODEL.BMC:
        _add_classifier_config(cfg)
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
    if cfg.BMC.DATA.CLASS_AGNOSTIC:
        from bmc_detectron.data.agnostic import use_agnostic_datasets

        use_agnostic_datasets(cfg)
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
