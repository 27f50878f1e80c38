"""A smear's colour and scale, the primitives a field is prepared and checked with:

- :mod:`.stain`: stain space and stain jitter, Reinhard normalisation (:data:`STAIN_METHODS`);
- :mod:`.ruler`: red cells as a ruler for the field's scale (classical estimate, case median);
- :mod:`.profile`: the training data's profile saved beside a model, ``training_profile.json``
  (:class:`TrainingProfile`);
- :mod:`.ranges`: its out-of-distribution ranges (:class:`TrainingRanges`).

Only numpy, OpenCV and detectron2: this package sits below ``data/`` (whose augmentations use
``RandomStainJitter``) and ``pipeline/`` (whose :mod:`~bmc_detectron.pipeline.field_prep`,
:mod:`~bmc_detectron.pipeline.field_checks` and :mod:`~bmc_detectron.pipeline.scale_plan` use it
in the count). The sweep that evaluates models under rescaling and stain shifts is
:mod:`studies.robustness.sweep`.
"""

from bmc_detectron.smear.profile import (
    PROFILE_FILE,
    TrainingProfile,
    profile_from_dataset,
    profile_from_records,
)
from bmc_detectron.smear.ranges import TrainingRanges
from bmc_detectron.smear.ruler import (
    RBCEstimate,
    case_scale,
    estimate_rbc_diameter,
    rescale_factor,
)
from bmc_detectron.smear.stain import (
    STAIN_METHODS,
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
    "RBCEstimate",
    "STAIN_METHODS",
    "RandomStainJitter",
    "ReinhardTarget",
    "StainTransform",
    "TrainingProfile",
    "TrainingRanges",
    "case_scale",
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
