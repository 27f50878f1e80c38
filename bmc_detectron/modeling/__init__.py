"""Model components; importing this module registers them in detectron2's registries."""

from . import assigners
from .backbone import build_bmc_resnet_pan_backbone
from .head import BMCRetinaNetHead
from .meta_arch import BMCRetinaNet

__all__ = ["BMCRetinaNet", "BMCRetinaNetHead", "assigners", "build_bmc_resnet_pan_backbone"]
