"""Robustness to another lab's microscope: stain space and stain jitter, Reinhard normalisation,
red cells as a ruler for the field's scale, out-of-distribution checks, and the training data's
profile saved beside a model (``training_profile.json``).

Only numpy, OpenCV and detectron2: this package sits below ``data/`` (whose
augmentations use ``RandomStainJitter``). The sweep that evaluates models under rescaling and
stain shifts is :mod:`studies.robustness.sweep`.
"""

from bmc_detectron.smear.profile import (
    PROFILE_FILE,
    DataProfile,
    profile_from_dataset,
    profile_from_records,
)
from bmc_detectron.smear.ranges import FieldCheck, TrainingProfile, check_field
from bmc_detectron.smear.ruler import (
    RBCEstimate,
    case_scale,
    estimate_rbc_diameter,
    rescale_factor,
)
from bmc_detectron.smear.stain import (
    RandomStainJitter,
    ReinhardTarget,
    StainTransform,
    hed2rgb,
    hue_shift,
    reinhard_normalize,
    rgb2hed,
    saturation_scale,
    stain_shift,
)

__all__ = [
    "PROFILE_FILE",
    "DataProfile",
    "FieldCheck",
    "RBCEstimate",
    "RandomStainJitter",
    "ReinhardTarget",
    "StainTransform",
    "TrainingProfile",
    "case_scale",
    "check_field",
    "estimate_rbc_diameter",
    "hed2rgb",
    "profile_from_dataset",
    "profile_from_records",
    "hue_shift",
    "reinhard_normalize",
    "rescale_factor",
    "rgb2hed",
    "saturation_scale",
    "stain_shift",
]
