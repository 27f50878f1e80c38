"""bmc-detectron: bone-marrow cell detection and recognition on detectron2.

Importing the package registers its META_ARCHs (``BMCRetinaNet``, ``BMCCellClassifier``),
BACKBONE (``build_bmc_resnet_pan_backbone``), assigners and built-in datasets.
"""

from bmc_detectron import modeling  # noqa: F401  (registers the model components)
from bmc_detectron.config import add_bmc_config, get_bmc_cfg
from bmc_detectron.data.datasets import register_builtin_datasets

register_builtin_datasets()

__version__ = "0.1.0"
__all__ = ["add_bmc_config", "get_bmc_cfg", "register_builtin_datasets"]
