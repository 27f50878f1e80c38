"""The ruler-bias study (studies/scale/ruler_bias.py) on hand-built fields of known red cells."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from studies.scale.ruler_bias import BiasSummary, ruler_bias, table


def _field(diameter: int, size: int = 256) -> np.ndarray:
    """An RGB field of pink red cells of ``diameter`` px in a loose grid on pale plasma."""
    image = np.full((size, size, 3), (246, 236, 240), np.uint8)
    step = int(diameter * 1.6)
    for y in range(step // 2, size - diameter // 2, step):
        for x in range(step // 2, size - diameter // 2, step):
            cv2.circle(image, (x, y), diameter // 2, (226, 140, 150), -1, cv2.LINE_AA)
    return image


def test_ruler_bias_on_two_hand_built_fields():
    blank = np.full((128, 128, 3), 240, np.uint8)  # no red cell: a failure
    summary = ruler_bias([(_field(20), 20.0), (_field(36), 36.0), (blank, 30.0)])
    assert summary.truths == [20.0, 36.0, 30.0] and summary.failures == 1
    assert np.isnan(summary.readings[2])
    assert np.all(np.abs(summary.bias) < 0.1)  # discs: the ruler reads about their diameter
    stats = summary.stats()
    assert stats["fields"] == 3 and stats["failures"] == 1
    assert stats["within"] == 2 / 3 and abs(stats["mean"]) < 0.1
    exact = BiasSummary([22.0, 36.0], [20.0, 40.0])
    np.testing.assert_allclose(exact.bias, [0.1, -0.1])
    assert abs(exact.stats()["median"]) < 1e-12 and exact.stats()["iqr"] == pytest.approx(0.1)
    text = table([("hand", "two", 28.0, exact)])
    assert "| hand | two | 28.0 | 2 | 0 | +0.0 % | +0.0 % | 10.0 % | 100 % |" in text
    assert "| hand | all |" in text
