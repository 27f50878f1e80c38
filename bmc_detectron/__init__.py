"""bmc-detectron: bone-marrow cell detection and recognition on detectron2.

Importing the package registers its META_ARCHs (``BMCRetinaNet``, ``BMCCellClassifier``),
BACKBONE (``build_bmc_resnet_pan_backbone``), assigners and built-in datasets.
"""

from . import modeling  # noqa: F401  (registers the model components)
from .config import add_bmc_config, get_bmc_cfg
from .data.datasets import register_builtin_datasets

register_builtin_datasets()

__version__ = "0.1.0"
__all__ = ["add_bmc_config", "get_bmc_cfg", "register_builtin_datasets"]
