"""PAA's score voting (modeling/score_voting.py): exact votes on hand-built boxes, what does not
vote, and the detector's inference with it (same detections and scores, boxes moved)."""

from __future__ import annotations

import math

import pytest
import torch
from detectron2.modeling import build_model

from bmc_detectron.modeling.score_voting import score_voting
from tests.helpers import make_inputs, tiny_cfg

KEPT = torch.tensor([[0.0, 0.0, 10.0, 10.0]])


def _vote(boxes, scores, classes, kept=KEPT, kept_classes=(0,), sigma=0.025):
    return score_voting(
        kept,
        torch.tensor(kept_classes),
        torch.tensor(boxes, dtype=torch.float32),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(classes),
        sigma,
    )


def test_one_neighbour_moves_the_box_by_the_exact_weighted_mean():
    # the neighbour is shifted 2 px right: IoU = 80 / 120
    out = _vote([[0, 0, 10, 10], [2, 0, 12, 10]], [0.9, 0.6], [0, 0], sigma=0.1)
    w_self, w_nb = 0.9, 0.6 * math.exp(-((1 - 80 / 120) ** 2) / 0.1)
    x0 = 2 * w_nb / (w_self + w_nb)
    expected = torch.tensor([[x0, 0.0, 10 + x0, 10.0]])
    assert torch.allclose(out, expected, atol=1e-5), out


def test_symmetric_neighbours_leave_the_box_where_it_is():
    out = _vote([[0, 0, 10, 10], [-2, 0, 8, 10], [2, 0, 12, 10]], [0.9, 0.5, 0.5], [0, 0, 0])
    assert torch.allclose(out, KEPT, atol=1e-5), out


def test_other_classes_and_disjoint_boxes_do_not_vote():
    out = _vote([[0, 0, 10, 10], [2, 0, 12, 10], [20, 20, 30, 30]], [0.9, 0.9, 0.9], [0, 1, 0])
    assert torch.equal(out, KEPT)


def test_a_kept_box_without_candidates_is_unchanged_and_empty_inputs_are_fine():
    assert torch.equal(_vote([[20, 20, 30, 30]], [0.9], [0]), KEPT)
    assert torch.equal(_vote(torch.zeros(0, 4).tolist(), [], []), KEPT)
    empty = score_voting(
        torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), KEPT, torch.ones(1),
        torch.zeros(1, dtype=torch.int64), 0.025,
    )  # fmt: skip
    assert empty.shape == (0, 4)


def test_sigma_must_be_positive():
    with pytest.raises(ValueError, match="sigma"):
        _vote([[0, 0, 10, 10]], [0.9], [0], sigma=0.0)


def test_the_detector_with_score_voting_keeps_its_detections_and_moves_boxes():
    opts = ["MODEL.RETINANET.SCORE_THRESH_TEST", 0.0, "MODEL.FPN.OUT_CHANNELS", 32]
    plain = tiny_cfg(opts)
    voting = tiny_cfg([*opts, "MODEL.BMC.SCORE_VOTING_SIGMA", 0.025])
    torch.manual_seed(0)
    a = build_model(plain).eval()
    b = build_model(voting).eval()
    b.load_state_dict(a.state_dict())
    batch = make_inputs((64, 64), [[[4, 6, 30, 28, 0]]])
    with torch.no_grad():
        ia, ib = a(batch)[0]["instances"], b(batch)[0]["instances"]
    assert len(ia) == len(ib) > 0
    assert torch.equal(ia.scores, ib.scores) and torch.equal(ia.pred_classes, ib.pred_classes)
    moved = (ia.pred_boxes.tensor - ib.pred_boxes.tensor).abs().amax(dim=1)
    assert moved.max() > 0


def test_a_negative_sigma_is_refused():
    with pytest.raises(ValueError, match="SCORE_VOTING_SIGMA"):
        build_model(tiny_cfg(["MODEL.BMC.SCORE_VOTING_SIGMA", -1.0]))
