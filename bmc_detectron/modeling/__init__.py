"""Model components; importing this module registers them in detectron2's registries."""

from . import assigners
from .backbone import build_bmc_resnet_pan_backbone
from .classifier import BMCCellClassifier, classifier_class_names
from .fcos import BMCFCOS
from .head import BMCRetinaNetHead
from .meta_arch import BMCRetinaNet

__all__ = [
    "BMCCellClassifier",
    "BMCFCOS",
    "BMCRetinaNet",
    "BMCRetinaNetHead",
    "assigners",
    "build_bmc_resnet_pan_backbone",
    "classifier_class_names",
]
