"""Pluggable label assigners, one per file, behind the contract in :mod:`.base`."""

from .atss import ATSS
from .base import (
    ASSIGNER_REGISTRY,
    AnchorLayout,
    AssignResult,
    BaseAssigner,
    build_assigner,
    empty_result,
)
from .dynamic_soft import DynamicSoft
from .max_iou import MaxIoU
from .ota import OTA
from .paa import PAA
from .simota import SimOTA

__all__ = [
    "ASSIGNER_REGISTRY",
    "ATSS",
    "DynamicSoft",
    "OTA",
    "PAA",
    "SimOTA",
    "AnchorLayout",
    "AssignResult",
    "BaseAssigner",
    "MaxIoU",
    "build_assigner",
    "empty_result",
]
