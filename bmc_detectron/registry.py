"""Registries of this package besides detectron2's, kept low so that config checks can read them.

``ASSIGNER_REGISTRY`` holds the label assigners (``MODEL.BMC.ASSIGNER.NAME``); they register
themselves when :mod:`bmc_detectron.modeling.assigners` is imported (``import bmc_detectron``).
"""

from detectron2.utils.registry import Registry

ASSIGNER_REGISTRY = Registry("BMC_ASSIGNER")
ASSIGNER_REGISTRY.__doc__ = """Label assigners; the name is MODEL.BMC.ASSIGNER.NAME."""
