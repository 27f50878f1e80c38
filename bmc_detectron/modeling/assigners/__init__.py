"""Pluggable label assigners, one per file, behind the contract in :mod:`.base`.

Shared pieces live in their own modules: :mod:`.candidates` (per-gt candidate anchors),
:mod:`.costs` (classification costs), :mod:`.matching` (claims to one gt per anchor, dynamic k),
:mod:`.center_prior` (the base of OTA and SimOTA) and :mod:`.chunked_iou` (IoU maxima in chunks).
"""

from bmc_detectron.modeling.assigners.atss import ATSS
from bmc_detectron.modeling.assigners.base import (
    ASSIGNER_REGISTRY,
    AnchorLayout,
    AssignResult,
    BaseAssigner,
    build_assigner,
    empty_result,
)
from bmc_detectron.modeling.assigners.center_prior import CenterPriorAssigner
from bmc_detectron.modeling.assigners.dynamic_soft import DynamicSoft
from bmc_detectron.modeling.assigners.max_iou import MaxIoU
from bmc_detectron.modeling.assigners.ota import OTA
from bmc_detectron.modeling.assigners.paa import PAA
from bmc_detectron.modeling.assigners.simota import SimOTA
from bmc_detectron.modeling.assigners.task_aligned import TaskAligned

__all__ = [
    "ASSIGNER_REGISTRY",
    "ATSS",
    "CenterPriorAssigner",
    "DynamicSoft",
    "OTA",
    "PAA",
    "SimOTA",
    "TaskAligned",
    "AnchorLayout",
    "AssignResult",
    "BaseAssigner",
    "MaxIoU",
    "build_assigner",
    "empty_result",
]
