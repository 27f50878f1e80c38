"""The counting pipeline: detect nucleated cells, crop and recognise them, report the differential.

- :class:`~.counter.CellCounter` turns one field (a BGR image) into a list of
  :class:`~.counter.Cell` (large fields as overlapping tiles, :mod:`.tiling`);
- :mod:`bmc_detectron.structures.differential` holds the differential: counts, percentages,
  Wilson intervals, M:E ratio;
- :func:`~.run.run_count` counts a case's fields into a resumable report folder
  (``python -m bmc_detectron.tools.count``); :func:`~.slide_run.run_slide_count` counts a whole
  slide's monolayer zone through a field source (:mod:`.field_source`, ``count --slide``);
- :mod:`.field_prep`, :mod:`.field_checks`, :mod:`.auto_scale` and :mod:`.scale_plan`: fields
  resized to the model's scale (given, or found: the files' pixel size, the detector probe, the
  red cells; :mod:`.scale_decision`) and stain-normalised before detection, each field measured
  and flagged when it lies outside the training data (``training_profile.json``,
  :mod:`bmc_detectron.smear.profile`), and the case's scale plan.
"""

from bmc_detectron.pipeline.counter import Cell, CellCounter, FieldCount
from bmc_detectron.pipeline.detector import Detections, Detector
from bmc_detectron.pipeline.recognition import CellClassifier
from bmc_detectron.pipeline.run import run_count
from bmc_detectron.pipeline.run_io import OutputExistsError
from bmc_detectron.structures.differential import Lineage, wilson_interval

__all__ = [
    "Cell",
    "CellClassifier",
    "CellCounter",
    "Detections",
    "Detector",
    "FieldCount",
    "Lineage",
    "OutputExistsError",
    "run_count",
    "wilson_interval",
]
