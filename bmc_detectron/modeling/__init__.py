"""Model components; importing this module registers them in detectron2's registries."""

from bmc_detectron.modeling import assigners
from bmc_detectron.modeling.backbone import build_bmc_resnet_pan_backbone
from bmc_detectron.modeling.classifier import BMCCellClassifier, classifier_class_names
from bmc_detectron.modeling.fcos import BMCFCOS
from bmc_detectron.modeling.head import BMCRetinaNetHead
from bmc_detectron.modeling.meta_arch import BMCRetinaNet

__all__ = [
    "BMCCellClassifier",
    "BMCFCOS",
    "BMCRetinaNet",
    "BMCRetinaNetHead",
    "assigners",
    "build_bmc_resnet_pan_backbone",
    "classifier_class_names",
]
