"""Pluggable label assigners, one per file, behind the contract in :mod:`.base`."""
from .base import (
    ASSIGNER_REGISTRY,
    AnchorLayout,
    AssignResult,
    BaseAssigner,
    build_assigner,
    empty_result,
)
from .max_iou import MaxIoU

__all__ = [
    "ASSIGNER_REGISTRY",
    "AnchorLayout",
    "AssignResult",
    "BaseAssigner",
    "MaxIoU",
    "build_assigner",
    "empty_result",
]
