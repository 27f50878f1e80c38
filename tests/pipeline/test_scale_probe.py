"""The scale probe (issue 31, section 2) on hand-made disc fields drawn at a known scale.

The stand-in detectors see discs only near one size in their input, as a trained detector sees
cells only near the size it was trained at: the probe must recover the factor that brings the
discs to that size.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bmc_detectron.pipeline import Detections
from bmc_detectron.pipeline.scale_probe import (
    CANDIDATES,
    probe_scale,
    training_cell_input_px,
)
from bmc_detectron.smear.profile import TrainingProfile
from bmc_detectron.smear.ranges import TrainingRanges
from bmc_detectron.smear.stain import ReinhardTarget
from tests.pipeline.helpers import (
    BACKGROUND,
    TRAINED_PX,
    DiscDetector,
    SelectiveDetector,
    disc_fields,
)


class ConstantDetector:
    """The same detections whatever it is shown: evidence that does not depend on the scale."""

    def __call__(self, image: np.ndarray) -> Detections:
        return Detections([[0, 0, 30, 30], [40, 40, 70, 70]], [0.9, 0.9], [0, 0])


@pytest.mark.parametrize("true_factor", [0.5, 0.75, 1.0, 2.0])
def test_probe_recovers_known_factor_by_size(true_factor):
    fields = disc_fields([TRAINED_PX / true_factor])
    probe = probe_scale(SelectiveDetector(), fields, training_cell_px=TRAINED_PX)
    assert probe.settled, probe.reason
    assert probe.method == "size"
    assert abs(probe.factor / true_factor - 1) < 0.15, probe.to_json()
    assert probe.confidence > 0.5
    assert [e.factor for e in probe.evidence] == sorted(e.factor for e in probe.evidence)
    assert set(CANDIDATES) <= {e.factor for e in probe.evidence}
    best = min(probe.evidence, key=lambda e: abs(e.factor - probe.factor))
    assert best.n > 0 and abs(best.median_box_px / TRAINED_PX - 1) < 0.25


@pytest.mark.parametrize("true_factor", [0.5, 1.0, 2.0])
def test_probe_recovers_known_factor_by_score(true_factor):
    fields = disc_fields([TRAINED_PX / true_factor])
    probe = probe_scale(SelectiveDetector(), fields)
    assert probe.settled, probe.reason
    assert probe.method == "score" and probe.training_cell_px is None
    assert abs(probe.factor / true_factor - 1) < 0.15, probe.to_json()


def test_selection_bias_size_beats_count():
    """A detector that finds every disc above a size (only big cells at small factors): the
    score is flat over the factors that find them all, the box sizes still settle it."""
    fields = disc_fields([40.0, 60.0, 80.0])  # median 60 px: the right factor is 0.5
    detector = SelectiveDetector(low=20.0, high=1e9, score=0.9)
    by_score = probe_scale(detector, fields)
    by_size = probe_scale(detector, fields, training_cell_px=TRAINED_PX)
    assert abs(by_size.factor / 0.5 - 1) < 0.15 and by_size.settled, by_size.to_json()
    # at 0.4 only the two bigger discs are found: their median overstates the cells
    at_04 = next(e for e in by_size.evidence if e.factor == 0.4)
    assert at_04.median_box_px > 0.4 * 60.0 * 1.1
    assert not by_score.settled and "flat" in by_score.reason, by_score.to_json()


def test_no_discs_not_settled():
    blank = [np.full((300, 300, 3), BACKGROUND, np.uint8)] * 3
    for target in (None, TRAINED_PX):
        probe = probe_scale(SelectiveDetector(), blank, training_cell_px=target)
        assert not probe.settled and probe.factor is None and probe.method == "none"
        assert "no candidate" in probe.reason
        assert all(e.n == 0 and e.median_box_px is None for e in probe.evidence)


def test_flat_evidence_not_settled():
    """By score: a detector that finds every disc at every factor, equally sure (no window cut:
    the fields are smaller than every window). By size: boxes that do not follow the factor."""
    fields = disc_fields([60.0], size=300)
    probe = probe_scale(DiscDetector(), fields)
    assert not probe.settled and probe.confidence < 0.1 and "flat" in probe.reason
    assert len({round(e.score, 6) for e in probe.evidence}) == 1
    probe = probe_scale(ConstantDetector(), fields, training_cell_px=TRAINED_PX)
    assert not probe.settled and probe.confidence < 0.1 and "flat" in probe.reason
    by_size = probe_scale(DiscDetector(), fields, training_cell_px=TRAINED_PX)
    assert by_size.settled and abs(by_size.factor / 0.5 - 1) < 0.15


def test_cells_never_at_training_size_not_settled():
    """Discs found only far from the training size (the candidates cannot reach it)."""
    fields = disc_fields([60.0])
    probe = probe_scale(
        SelectiveDetector(), fields, candidates=(0.4, 0.5, 0.7), training_cell_px=90.0
    )
    assert not probe.settled and "training size" in probe.reason


def test_sample_and_window_bound_the_work():
    fields = disc_fields([60.0], n=9, size=600)
    detector = SelectiveDetector()
    probe = probe_scale(detector, fields, candidates=(0.5, 2.5), sample=3, window=512, refine=False)
    assert len(probe.evidence) == 2
    assert len(detector.inputs) == 2 * 3
    assert max(max(s) for s in detector.inputs) <= 512 + 1
    js = probe.to_json()
    assert js["factor"] == probe.factor and len(js["evidence"]) == 2


def test_bad_arguments():
    with pytest.raises(ValueError):
        probe_scale(SelectiveDetector(), disc_fields([60.0]), candidates=(0.5, 0.0))
    with pytest.raises(ValueError):
        probe_scale(SelectiveDetector(), disc_fields([60.0]), training_cell_px=0)


def test_training_cell_input_px():
    ranges = TrainingRanges(lab_mean=[], lab_std=[], rbc_diameter_px=float("nan"))
    profile = TrainingProfile(ranges, ReinhardTarget((0, 0, 0), (1, 1, 1)), image_size=(480, 640))
    assert training_cell_input_px(profile, SelectiveDetector()) is None
    assert training_cell_input_px(None, SelectiveDetector()) is None
    profile.cell_diameter_px = {"n": 10, "median": 30.0}

    class Resizing:
        min_size, max_size, train_min_size, train_max_size = 240, 1000, (240,), 1000

    assert training_cell_input_px(profile, SelectiveDetector()) == pytest.approx(30.0)
    assert training_cell_input_px(profile, Resizing()) == pytest.approx(15.0)


def test_too_few_cells_do_not_settle_the_probe_by_size():
    # one field of a few big discs, one of them whole: the size of one cell is no measurement
    fields = disc_fields([TRAINED_PX / 0.75], n=1, size=int(TRAINED_PX / 0.75 * 3.2))
    probe = probe_scale(SelectiveDetector(), fields, training_cell_px=TRAINED_PX)
    assert not probe.settled
    assert probe.reason.startswith("too few cells to read their size"), probe.reason
    assert abs(probe.factor / 0.75 - 1) < 0.15  # the estimate is kept, but not trusted
    many = probe_scale(SelectiveDetector(), fields, training_cell_px=TRAINED_PX, min_cells=1)
    assert many.settled, many.reason


class FragmentingDetector(SelectiveDetector):
    """A :class:`SelectiveDetector` that also cuts cells seen far too big into many small pieces,
    as a trained detector does on a strongly enlarged field: dense false boxes at large factors."""

    def __call__(self, image: np.ndarray) -> Detections:
        found = super().__call__(image)
        mask = (np.abs(image.astype(np.int16) - BACKGROUND).max(axis=2) > 60).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        pieces = []
        for x, y, w, h, _ in stats[1:]:
            if np.sqrt(w * h) > 2 * TRAINED_PX:  # 16 pieces of 0.9 score per oversized cell
                for i in range(4):
                    for j in range(4):
                        x0, y0 = x + i * w // 4, y + j * h // 4
                        pieces.append([x0, y0, x0 + w // 4, y0 + h // 4])
        boxes = np.concatenate([found.boxes.reshape(-1, 4), np.reshape(pieces, (-1, 4))])
        scores = np.concatenate([found.scores, np.full(len(pieces), 0.9)])
        return Detections(boxes, scores, [0] * len(boxes))


def test_dense_false_boxes_at_large_factors_do_not_hide_the_right_small_factor():
    # cells drawn 2.5x the trained size: the right factor is 0.4; at 1.4-2.5 every cell is cut
    # into 16 pieces, so the density score of 0.4 is far below the top
    fields = disc_fields([TRAINED_PX * 2.5], n=4, size=720)
    probe = probe_scale(FragmentingDetector(), fields, training_cell_px=TRAINED_PX, min_cells=5)
    by_factor = {e.factor: e for e in probe.evidence}
    assert by_factor[0.4].score < 0.2 * max(e.score for e in probe.evidence)
    assert probe.settled, probe.reason
    assert abs(probe.factor / 0.4 - 1) < 0.15, probe.to_json()
