"""Feature-space open-set scores: how far a crop's features lie from the training crops'.

The logit scores of :mod:`bmc_detectron.evaluation.open_set` (energy, max-softmax) only see what
the linear layer makes of a crop; a cell of an unseen type that resembles a known one (a left-out
neutrophil stage and its neighbour) gets a confident logit. These scores look at the classifier's
pooled penultimate features instead (:meth:`~bmc_detectron.modeling.classifier.
BMCCellClassifier.forward_features`), against statistics of the TRAINING crops' features:

* ``"mahalanobis"`` (Lee et al., NeurIPS 2018): minus the smallest squared Mahalanobis distance to
  a class mean, with one covariance shared by the classes (pooled within-class), shrunk towards
  ``mu * I`` by the Ledoit-Wolf formula (:func:`ledoit_wolf`) so it can be inverted.
* ``"knn"`` (Sun et al., ICML 2022): minus the Euclidean distance of the L2-normalised feature to
  its k-th nearest L2-normalised training feature.

Higher = more like a known type, as for the logit scores. :class:`FeatureStatistics` holds what a
score needs (class means + precision matrix, or the kNN bank; float32, bounded) and is stored
beside the weights as ``<weights stem>.open_set.npz`` (:func:`statistics_path`,
:func:`write_statistics`, :func:`read_statistics`); the threshold file names it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from bmc_detectron.utils.io import PathLike, atomic_write_bytes

#: the feature-space scores
FEATURE_SCORES = ("mahalanobis", "knn")
#: the ``format`` stored in a statistics file
STATISTICS_FORMAT = "bmc-open-set-statistics/1"
#: default k of the kNN score (Sun et al. use k = 50 for 50,000 training images; the bank here
#: holds a few thousand crops)
DEFAULT_KNN_K = 10
#: default bound on the crops the statistics are fitted on (and on the kNN bank)
DEFAULT_MAX_CROPS = 4000

_ARRAYS = {"mahalanobis": ("means", "precision"), "knn": ("bank",)}


class OpenSetError(ValueError):
    """An open-set file that cannot be used (the message names the file and the problem)."""


def _features(features: Any, name: str = "features") -> np.ndarray:
    if hasattr(features, "detach"):
        features = features.detach().cpu().float().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected (N, C) features, got shape {array.shape}")
    return array


def l2_normalise(features: Any) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), float64."""
    array = _features(features)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms > 0, norms, 1.0)


def ledoit_wolf(centred: np.ndarray) -> Tuple[np.ndarray, float]:
    """The Ledoit-Wolf shrunk covariance of already centred (n, p) samples and its shrinkage.

    With ``S = X^T X / n`` and ``mu = trace(S) / p``: ``(1 - a) S + a mu I``, where
    ``a = min(b, d) / d``, ``d = ||S - mu I||_F^2 / p`` and
    ``b = (sum_i ||x_i||^4 / n - ||S||_F^2) / (n p)`` (Ledoit & Wolf 2004; ``a = 0`` when
    ``d = 0``, S being ``mu I`` already).
    """
    x = np.asarray(centred, dtype=np.float64)
    n, p = x.shape
    if n < 1 or p < 1:
        raise ValueError(f"ledoit_wolf: no samples (shape {x.shape})")
    s = x.T @ x / n
    mu = float(np.trace(s)) / p
    d = float(((s - mu * np.eye(p)) ** 2).sum()) / p
    b = (float(((x**2).sum(axis=1) ** 2).sum()) / n - float((s**2).sum())) / (n * p)
    shrinkage = min(b, d) / d if d > 0 else 0.0
    return (1.0 - shrinkage) * s + shrinkage * mu * np.eye(p), float(shrinkage)


def mahalanobis_score(features: Any, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(N,) ``-min_c (f - m_c)^T P (f - m_c)`` over the class means ``m_c`` (rows of ``means``)."""
    f = _features(features)
    m = np.asarray(means, dtype=np.float64)
    p = np.asarray(precision, dtype=np.float64)
    fp = f @ p
    d = (fp * f).sum(axis=1)[:, None] - 2.0 * fp @ m.T + ((m @ p) * m).sum(axis=1)[None, :]
    return -np.maximum(d.min(axis=1), 0.0) if len(f) else np.zeros(0)


def knn_score(features: Any, bank: np.ndarray, k: int) -> np.ndarray:
    """(N,) minus the distance of each L2-normalised feature to its ``k``-th nearest row of
    ``bank`` (rows already L2-normalised)."""
    f = l2_normalise(features)
    b = np.asarray(bank, dtype=np.float64)
    if not 1 <= k <= len(b):
        raise ValueError(f"knn_score: k={k} needs 1..{len(b)} bank rows")
    if not len(f):
        return np.zeros(0)
    squared = np.maximum(2.0 - 2.0 * f @ b.T, 0.0)  # unit vectors: |f - b|^2 = 2 - 2 f.b
    kth = np.partition(squared, k - 1, axis=1)[:, k - 1]
    return -np.sqrt(kth)


@dataclass
class FeatureStatistics:
    """What a feature score needs at count time (float32 arrays).

    Attributes:
        score: ``"mahalanobis"`` (arrays ``means`` (K', C), ``precision`` (C, C)) or ``"knn"``
            (array ``bank`` (M, C), L2-normalised rows).
        arrays: those arrays.
        k: the kNN's k (0 for Mahalanobis).
        crops: how many training crops they were fitted on.
    """

    score: str
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    k: int = 0
    crops: int = 0

    @property
    def channels(self) -> int:
        """C, the feature size the statistics expect."""
        first = self.arrays["means" if self.score == "mahalanobis" else "bank"]
        return int(first.shape[1])

    def scores(self, features: Any) -> np.ndarray:
        """(N,) float64 open-set scores of (N, C) features; higher = more known."""
        f = _features(features)
        if f.shape[1] != self.channels:
            raise ValueError(
                f"open-set statistics expect {self.channels} features per crop, got {f.shape[1]}"
            )
        if self.score == "mahalanobis":
            return mahalanobis_score(f, self.arrays["means"], self.arrays["precision"])
        return knn_score(f, self.arrays["bank"], self.k)


def fit_mahalanobis(features: Any, labels: Any) -> FeatureStatistics:
    """Class means and the precision of the shared, Ledoit-Wolf-shrunk within-class covariance."""
    f = _features(features)
    y = np.asarray(labels).ravel()
    if len(y) != len(f) or not len(f):
        raise ValueError(f"fit_mahalanobis: {len(f)} features but {len(y)} labels")
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(axis=0) for c in classes])
    centred = f - means[np.searchsorted(classes, y)]
    covariance, _ = ledoit_wolf(centred)
    precision = np.linalg.pinv(covariance, hermitian=True)
    arrays = {"means": means.astype(np.float32), "precision": precision.astype(np.float32)}
    return FeatureStatistics("mahalanobis", arrays, crops=len(f))


def fit_knn(
    features: Any, k: int = DEFAULT_KNN_K, max_bank: int = DEFAULT_MAX_CROPS, seed: int = 0
) -> FeatureStatistics:
    """The kNN bank: the L2-normalised features (a random ``max_bank`` of them when more)."""
    f = l2_normalise(features)
    if len(f) > max_bank:
        f = f[np.sort(np.random.default_rng(seed).choice(len(f), max_bank, replace=False))]
    if not 1 <= k <= len(f):
        raise ValueError(f"fit_knn: k={k} needs 1..{len(f)} training features")
    return FeatureStatistics("knn", {"bank": f.astype(np.float32)}, k=int(k), crops=len(f))


def fit_statistics(
    score: str, features: Any, labels: Any, *, knn_k: int = DEFAULT_KNN_K
) -> FeatureStatistics:
    """:func:`fit_mahalanobis` or :func:`fit_knn`, by name (one of :data:`FEATURE_SCORES`)."""
    if score == "mahalanobis":
        return fit_mahalanobis(features, labels)
    if score == "knn":
        return fit_knn(features, knn_k)
    raise ValueError(f"unknown feature score {score!r}: one of {FEATURE_SCORES}")


def statistics_path(weights: PathLike) -> Path:
    """Where the statistics live: ``model_final.pth`` -> ``model_final.open_set.npz``
    (``cls.onnx`` -> ``cls.open_set.npz``)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".open_set.npz")


def write_statistics(path: PathLike, stats: FeatureStatistics) -> Path:
    """Write ``stats`` to ``path`` (an ``.npz``, atomically); returns the path."""
    buffer = io.BytesIO()
    meta = {"format": np.asarray(STATISTICS_FORMAT), "score": np.asarray(stats.score)}
    meta |= {"k": np.asarray(stats.k), "crops": np.asarray(stats.crops)}
    np.savez(buffer, **meta, **{k: v.astype(np.float32) for k, v in stats.arrays.items()})
    return atomic_write_bytes(path, buffer.getvalue())


def read_statistics(path: PathLike) -> FeatureStatistics:
    """The statistics in ``path``; :class:`OpenSetError` naming the file when missing, corrupt or
    inconsistent."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            found = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise OpenSetError(f"{path}: the open-set statistics file is missing") from None
    except Exception as e:  # a damaged zip / npy raises many kinds
        raise OpenSetError(f"{path}: cannot read the open-set statistics ({e})") from None
    if str(found.get("format", "")) != STATISTICS_FORMAT:
        raise OpenSetError(f"{path}: not open-set statistics ({STATISTICS_FORMAT!r} expected)")
    score = str(found.get("score", ""))
    if score not in _ARRAYS or any(name not in found for name in _ARRAYS[score]):
        raise OpenSetError(f"{path}: unknown score {score!r} or arrays missing")
    arrays = {name: np.asarray(found[name], dtype=np.float32) for name in _ARRAYS[score]}
    try:
        stats = FeatureStatistics(score, arrays, int(found.get("k", 0)), int(found.get("crops", 0)))
        _check(stats)
    except (ValueError, KeyError, IndexError) as e:
        raise OpenSetError(f"{path}: inconsistent open-set statistics ({e})") from None
    return stats


def _check(stats: FeatureStatistics) -> None:
    arrays = stats.arrays
    if any(a.ndim != 2 or not np.isfinite(a).all() for a in arrays.values()):
        raise ValueError("arrays must be finite matrices")
    c = stats.channels
    if stats.score == "mahalanobis" and arrays["precision"].shape != (c, c):
        raise ValueError(f"precision {arrays['precision'].shape} for {c} features")
    if stats.score == "knn" and not 1 <= stats.k <= len(arrays["bank"]):
        raise ValueError(f"k={stats.k} for a bank of {len(arrays['bank'])}")
