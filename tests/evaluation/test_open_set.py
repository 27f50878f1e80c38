"""The open-set score, the threshold choice and the threshold file, on hand-made numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bmc_detectron.evaluation.open_set import (
    OpenSetError,
    OpenSetThreshold,
    auroc,
    choose_threshold,
    flagged_share,
    load_threshold_file,
    open_set_metrics,
    open_set_score,
    read_threshold,
    threshold_path,
    write_threshold,
)


def test_energy_is_logsumexp_of_the_logits():
    logits = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, math.log(3.0)]])
    got = open_set_score(logits, "energy")
    np.testing.assert_allclose(got, [math.log(2), 1 + math.log(2), math.log(4)], rtol=1e-12)


def test_energy_is_stable_for_large_logits_and_takes_torch():
    got = open_set_score(torch.tensor([[1000.0, 1000.0]]), "energy")
    np.testing.assert_allclose(got, [1000 + math.log(2)], rtol=1e-12)


def test_max_softmax_is_the_top_probability():
    got = open_set_score(np.array([[0.0, math.log(3.0)], [5.0, 5.0]]), "max_softmax")
    np.testing.assert_allclose(got, [0.75, 0.5], rtol=1e-12)


def test_scores_of_no_rows_and_bad_input():
    assert open_set_score(np.zeros((0, 4))).shape == (0,)
    with pytest.raises(ValueError, match="unknown open-set score"):
        open_set_score(np.zeros((1, 2)), "entropy")
    with pytest.raises(ValueError, match=r"\(N, K\) logits"):
        open_set_score(np.zeros(3))


def test_threshold_flags_at_most_the_allowed_share():
    scores = np.arange(1.0, 21.0)  # 20 known crops
    assert choose_threshold(scores, 0.05) == 2.0  # one may be lost: the one scoring 1
    assert flagged_share(scores, 2.0) == 0.05
    assert choose_threshold(scores, 0.0) == 1.0  # none flagged
    assert flagged_share(scores, 1.0) == 0.0
    assert choose_threshold([3.0, 1.0, 2.0, 4.0], 0.5) == 3.0  # unsorted input
    assert choose_threshold(scores, 0.149) == 3.0  # floor(2.98) = 2 lost


def test_threshold_with_ties_flags_fewer():
    assert choose_threshold([1.0, 1.0, 1.0, 2.0], 0.5) == 1.0
    assert flagged_share([1.0, 1.0, 1.0, 2.0], 1.0) == 0.0


def test_threshold_bad_input():
    with pytest.raises(ValueError, match="no known-type scores"):
        choose_threshold([], 0.05)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        choose_threshold([1.0], 1.0)
    with pytest.raises(ValueError, match="finite"):
        choose_threshold([1.0, math.nan], 0.05)


def test_auroc_and_metrics():
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auroc([0.0], [1.0]) == 0.0
    assert auroc([1.0, 2.0], [1.0]) == 0.75  # the tie counts half
    assert auroc([], [1.0]) is None
    m = open_set_metrics(np.arange(1.0, 21.0), [0.0, 1.5, 2.0, 5.0], 0.05)
    assert m["threshold"] == 2.0
    assert m["known_lost"] == 0.05
    assert m["unseen_flagged"] == 0.5
    assert (m["known"], m["unseen"]) == (20, 4)


def test_threshold_flags_rows_of_logits():
    t = OpenSetThreshold(threshold=math.log(3.0))
    flags = t.flags(np.array([[0.0, 0.0], [0.0, math.log(3.0)]]))  # log 2 and log 4
    assert flags.tolist() == [True, False]


def test_threshold_file_round_trip(tmp_path):
    weights = tmp_path / "model_final.pth"
    assert threshold_path(weights) == tmp_path / "model_final.open_set.json"
    assert read_threshold(weights) is None  # no file: the classifier behaves as before
    t = OpenSetThreshold(2.5, "energy", 0.05, 0.04, "pbc_marrow_val", 100, "abc")
    write_threshold(weights, t)
    assert read_threshold(weights, "abc") == t
    assert json.loads(threshold_path(weights).read_text())["format"] == "bmc-open-set/1"
    with pytest.raises(OpenSetError, match="other weights"):
        read_threshold(weights, "def")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{not json", "not valid JSON"),
        ('{"threshold": 1.0}', "not an open-set threshold"),
        ('{"format": "bmc-open-set/1", "threshold": "high"}', "finite number"),
        ('{"format": "bmc-open-set/1", "threshold": 1.0, "score": "odin"}', "unknown score"),
        ('{"format": "bmc-open-set/1", "threshold": 1.0, "crops": "many"}', "malformed"),
    ],
)
def test_bad_threshold_file_is_a_clear_error(tmp_path, text, problem):
    path = tmp_path / "cls.open_set.json"
    path.write_text(text)
    with pytest.raises(OpenSetError, match=problem) as err:
        load_threshold_file(path)
    assert str(path) in str(err.value)
