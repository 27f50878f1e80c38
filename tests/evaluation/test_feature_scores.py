"""The feature-space open-set scores (Mahalanobis, kNN), their statistics file and its threshold,
on hand-built features."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bmc_detectron.evaluation.feature_scores import (
    FeatureStatistics,
    OpenSetError,
    fit_knn,
    fit_mahalanobis,
    fit_statistics,
    knn_score,
    ledoit_wolf,
    read_statistics,
    statistics_path,
    write_statistics,
)
from bmc_detectron.evaluation.open_set import (
    OpenSetThreshold,
    choose_threshold,
    read_threshold,
    threshold_path,
    write_threshold,
)

# two tight clusters, class 0 around (0, 0) and class 1 around (10, 0): within-class covariance
# 0.5 I exactly, so Ledoit-Wolf does not shrink it and the precision is 2 I
CROSS = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
TRAIN = np.concatenate([CROSS, CROSS + [10.0, 0.0]])
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_ledoit_wolf_on_hand_computed_numbers():
    # S = diag(0.5, 2), mu = 1.25, d = (0.75^2 + 0.75^2) / 2 = 0.5625,
    # b = (sum |x|^4 / n - |S|^2) / (n p) = (34 / 4 - 4.25) / 8 = 0.53125 -> a = 17 / 18
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    covariance, shrinkage = ledoit_wolf(x)
    assert shrinkage == pytest.approx(17 / 18, rel=1e-12)
    expected = np.diag([0.5, 2.0]) / 18 + 17 / 18 * 1.25 * np.eye(2)
    np.testing.assert_allclose(covariance, expected, rtol=1e-12)
    _, none = ledoit_wolf(CROSS)  # already mu * I: nothing to shrink
    assert none == 0.0


def test_mahalanobis_is_minus_the_nearest_class_distance():
    stats = fit_mahalanobis(TRAIN, LABELS)
    np.testing.assert_allclose(stats.arrays["means"], [[0, 0], [10, 0]], atol=1e-6)
    np.testing.assert_allclose(stats.arrays["precision"], 2 * np.eye(2), rtol=1e-6)
    # (3, 0): 2 * 9 to class 0; (10, 1): 2 * 1 to class 1; the outlier (5, 8): 2 * 89 to both
    got = stats.scores(np.array([[3.0, 0.0], [10.0, 1.0], [5.0, 8.0]]))
    np.testing.assert_allclose(got, [-18.0, -2.0, -178.0], rtol=1e-6)


def test_knn_is_minus_the_distance_to_the_kth_normalised_neighbour():
    bank = fit_knn(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]), k=2)
    np.testing.assert_allclose(bank.arrays["bank"], [[1, 0], [1, 0], [0, 1]])
    got = bank.scores(np.array([[5.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    expected = [0.0, -math.sqrt(2), -math.sqrt(2 - math.sqrt(2))]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="k=4"):
        knn_score(np.ones((1, 2)), bank.arrays["bank"], 4)
    assert fit_knn(np.random.default_rng(0).normal(size=(50, 3)), 5, max_bank=20).crops == 20


def test_two_gaussian_clusters_and_an_outlier():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    train = np.concatenate([rng.normal(c, 0.3, (200, 3)) for c in centres])
    labels = np.repeat([0, 1], 200)
    known = np.concatenate([rng.normal(c, 0.3, (20, 3)) for c in centres])
    outlier = np.array([[3.0, 3.0, 3.0]])  # between the clusters and off their plane
    for score in ("mahalanobis", "knn"):
        stats = fit_statistics(score, train, labels, knn_k=5)
        threshold = choose_threshold(stats.scores(known), 0.0)  # no known crop flagged
        assert not (stats.scores(known) < threshold).any()
        assert (stats.scores(outlier) < threshold).all()
        assert stats.scores(outlier)[0] < stats.scores(known).min()


def test_statistics_round_trip(tmp_path):
    for stats in (fit_mahalanobis(TRAIN, LABELS), fit_knn(TRAIN, k=3)):
        path = write_statistics(tmp_path / f"{stats.score}.npz", stats)
        back = read_statistics(path)
        assert (back.score, back.k, back.crops) == (stats.score, stats.k, stats.crops)
        for name, array in stats.arrays.items():
            assert back.arrays[name].dtype == np.float32
            np.testing.assert_array_equal(back.arrays[name], array)


def test_a_feature_threshold_stores_and_reads_its_statistics(tmp_path):
    weights = tmp_path / "model_final.pth"
    stats = fit_knn(TRAIN, k=2)
    threshold = OpenSetThreshold(-0.5, score="knn", crops=8, statistics=stats)
    assert write_threshold(weights, threshold) == threshold_path(weights)
    data = json.loads(threshold_path(weights).read_text())
    assert data["score"] == "knn" and data["statistics"] == "model_final.open_set.npz"
    assert statistics_path(weights).is_file()
    back = read_threshold(weights)
    assert back.needs_features and back.statistics_file == "model_final.open_set.npz"
    features = np.array([[1.0, 0.0], [5.0, 8.0]])
    np.testing.assert_array_equal(back.flags(None, features), threshold.flags(None, features))
    with pytest.raises(ValueError, match="needs features"):
        back.flags(np.zeros((2, 3)))


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"not a zip at all", "cannot read the open-set statistics"),
        (None, "is missing"),
        ("wrong_kind", "statistics of 'mahalanobis', not 'knn'"),
        ("bad_k", "inconsistent open-set statistics"),
    ],
)
def test_a_corrupt_statistics_file_names_itself(tmp_path, content, problem):
    weights = tmp_path / "model_final.pth"
    write_threshold(weights, OpenSetThreshold(-0.5, score="knn", statistics=fit_knn(TRAIN, 2)))
    path = statistics_path(weights)
    if content is None:
        path.unlink()
    elif content == "wrong_kind":
        write_statistics(path, fit_mahalanobis(TRAIN, LABELS))
    elif content == "bad_k":
        write_statistics(path, FeatureStatistics("knn", {"bank": np.ones((3, 2))}, k=9))
    else:
        path.write_bytes(content)
    with pytest.raises(OpenSetError, match=problem) as err:
        read_threshold(weights)
    assert str(path) in str(err.value)


def test_a_feature_threshold_names_its_statistics(tmp_path):
    path = tmp_path / "model_final.open_set.json"
    data = {"format": "bmc-open-set/1", "threshold": -1.0, "score": "mahalanobis"}
    path.write_text(json.dumps(data))
    with pytest.raises(OpenSetError, match="names its statistics file") as err:
        read_threshold(tmp_path / "model_final.pth")
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="needs its statistics"):
        write_threshold(tmp_path / "x.pth", OpenSetThreshold(-1.0, score="knn"))
