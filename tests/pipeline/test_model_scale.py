"""The model's scale (``pipeline.model_scale``): which red-cell diameter a field's ruler reading
is divided by."""

from __future__ import annotations

from typing import Optional

import pytest

from bmc_detectron.pipeline.model_scale import (
    RULER_BIAS_TOLERANCE,
    ModelScale,
    red_cell_reference,
)
from bmc_detectron.smear import TrainingProfile
from bmc_detectron.smear.ranges import TrainingRanges
from bmc_detectron.smear.stain import ReinhardTarget


def _profile(ruler: Optional[float], known: Optional[float]) -> TrainingProfile:
    ranges = TrainingRanges([(0.0, 100.0)] * 3, [(0.0, 50.0)] * 3, ruler or 0.0)
    target = ReinhardTarget((50.0, 0.0, 0.0), (10.0, 5.0, 5.0))
    return TrainingProfile(
        ranges, target, (512, 512), 0.25, known_rbc_diameter_px=known, scale_source={}
    )


def test_a_ruler_that_misread_the_training_fields_gives_way_to_the_truth():
    # crowded composites: the ruler read 48.4 px where the generator drew 30 px (+61 %)
    assert red_cell_reference(_profile(48.4, 30.0)) == (30.0, "generator")
    scale = ModelScale.from_profile(_profile(48.4, 30.0), "p.json")
    assert scale.rbc_diameter_px == 30.0 and scale.rbc_reference == "generator"
    assert scale.to_json()["rbc_reference"] == "generator"


def test_a_ruler_that_read_the_training_fields_well_keeps_its_bias_cancelling():
    within = 30.0 * (1 + RULER_BIAS_TOLERANCE) - 0.01
    assert red_cell_reference(_profile(within, 30.0)) == (pytest.approx(within), "ruler")
    assert red_cell_reference(_profile(33.0, 30.0)) == (33.0, "ruler")
    assert red_cell_reference(_profile(26.0, 30.0)) == (26.0, "ruler")


def test_only_one_value_known():
    assert red_cell_reference(_profile(80.0, None)) == (80.0, "ruler")
    assert red_cell_reference(_profile(None, 30.0)) == (30.0, "generator")
    assert red_cell_reference(_profile(None, None)) == (None, "")
