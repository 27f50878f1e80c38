"""The open-set outcome of recognition: a cell of no type the classifier knows is called "Other".

Real marrow has cells the training data lacks (plasma cells, megakaryocytes, mast cells, smudged or
broken cells). A closed-set classifier forces each of them into one of its types; instead, a cell
whose *open-set score* is below a threshold is listed as Other (``data.classes.OTHER``).

* :func:`open_set_score`: the ONE implementation of the logit scores, from (N, K) logits (the
  torch model's ``predict_logits``, the ONNX session's ``logits`` output): ``"energy"``, the
  negative free energy ``logsumexp(logits)`` (Liu et al. 2020, "Energy-based Out-of-distribution
  Detection"), how much evidence the crop gives for *any* known type (the class probability
  measures how well it separates the types: the "uncertain" outcome), and ``"max_softmax"``
  (Hendrycks & Gimpel 2017), for comparison. Higher = more like a known type.
* The feature-space scores ``"mahalanobis"`` and ``"knn"`` (:mod:`bmc_detectron.evaluation.
  feature_scores`) read the classifier's pooled features against statistics of its training
  crops' features (stored beside the weights as ``<weights stem>.open_set.npz``). On the
  leave-one-type-out study kNN flags twice as many unseen crops as energy at the same known loss,
  so it is what new classifiers store (``MODEL.BMC.CLASSIFIER.OPEN_SET_SCORE``); older threshold
  files (energy) keep working.
* :func:`choose_threshold`: the threshold on known-type validation crops such that at most a given
  share of them (default 5 %) is flagged.
* :class:`OpenSetThreshold`: that threshold, stored with the model as a small JSON beside the
  weights (:func:`threshold_path`); :func:`read_threshold` / :func:`write_threshold`.
* :func:`open_set_metrics`: the measurement: known crops lost and unseen-type crops flagged.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from bmc_detectron.evaluation.feature_scores import (
    FEATURE_SCORES,
    FeatureStatistics,
    OpenSetError,
    read_statistics,
    statistics_path,
    write_statistics,
)
from bmc_detectron.utils.io import PathLike, write_json_atomic

__all__ = ["OpenSetError"]  # defined with the statistics files (feature_scores), raised here too

#: the scores :func:`open_set_score` knows (from the logits)
OPEN_SET_SCORES = ("energy", "max_softmax")
#: every score a threshold file may name (the logits' and the features')
SCORE_KINDS = OPEN_SET_SCORES + FEATURE_SCORES
#: the ``format`` of a threshold file
THRESHOLD_FORMAT = "bmc-open-set/1"
#: the default share of known-type validation crops a threshold may flag
DEFAULT_MAX_KNOWN_LOST = 0.05


def _logits_array(logits: Any) -> np.ndarray:
    if hasattr(logits, "detach"):
        logits = logits.detach().cpu().float().numpy()
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"open_set_score: expected (N, K) logits, got shape {array.shape}")
    return array


def open_set_score(logits: Any, kind: str = "energy") -> np.ndarray:
    """(N,) float64 open-set scores of (N, K) logits (numpy or torch); higher = more known.

    ``"energy"``: ``logsumexp`` over the K logits; ``"max_softmax"``: the largest softmax
    probability. Both are computed stably (the row's largest logit subtracted first).
    """
    if kind not in OPEN_SET_SCORES:
        raise ValueError(f"unknown open-set score {kind!r}: one of {OPEN_SET_SCORES}")
    z = _logits_array(logits)
    if z.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    top = z.max(axis=1, keepdims=True)
    sum_exp = np.exp(z - top).sum(axis=1)
    if kind == "energy":
        return top[:, 0] + np.log(sum_exp)
    return 1.0 / sum_exp  # exp(top - top) / sum_exp


def choose_threshold(known_scores: Sequence[float], max_lost: float) -> float:
    """The highest threshold that flags (score < threshold) at most ``max_lost`` of the known crops.

    With the n known scores sorted, s[0] <= ... <= s[n-1], and m = floor(max_lost * n) crops
    allowed to be lost, the threshold is s[m]: exactly the crops below it are flagged (at most m;
    fewer when scores tie). Raises ValueError on no scores or ``max_lost`` outside [0, 1).
    """
    scores = np.sort(np.asarray(known_scores, dtype=np.float64).ravel())
    if scores.size == 0:
        raise ValueError("choose_threshold: no known-type scores")
    if not 0.0 <= max_lost < 1.0:
        raise ValueError(f"choose_threshold: max_lost {max_lost!r} must be in [0, 1)")
    if not np.isfinite(scores).all():
        raise ValueError("choose_threshold: scores must be finite")
    m = int(math.floor(max_lost * scores.size + 1e-9))
    return float(scores[m])


def flagged_share(scores: Sequence[float], threshold: float) -> Optional[float]:
    """Share of ``scores`` below ``threshold`` (None when there are none)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    return float((scores < threshold).mean()) if scores.size else None


@dataclass
class OpenSetThreshold:
    """The open-set threshold of one classifier, as stored beside its weights.

    Attributes:
        threshold: a cell whose score is below it is Other.
        score: which :func:`open_set_score` (``"energy"`` or ``"max_softmax"``).
        max_known_lost: the share of known val crops it was allowed to flag.
        known_lost: the share it did flag.
        dataset: the validation dataset it was chosen on.
        crops: how many known crops.
        weights_sha256: the weights it was chosen for ("" = not recorded).
        statistics_file: a feature score's statistics file, beside the threshold file.
        statistics: those statistics (a feature score's; not part of the JSON).
    """

    threshold: float
    score: str = "energy"
    max_known_lost: float = DEFAULT_MAX_KNOWN_LOST
    known_lost: float = 0.0
    dataset: str = ""
    crops: int = 0
    weights_sha256: str = ""
    statistics_file: str = ""
    statistics: Optional[FeatureStatistics] = field(default=None, repr=False, compare=False)

    @property
    def needs_features(self) -> bool:
        """Whether the score reads the pooled features (``predict_logits_and_features``)."""
        return self.score in FEATURE_SCORES

    def scores(self, logits: Any, features: Any = None) -> np.ndarray:
        """(N,) open-set scores of (N, K) logits, or of (N, C) features for a feature score."""
        if not self.needs_features:
            return open_set_score(logits, self.score)
        if self.statistics is None or features is None:
            raise ValueError(f"the {self.score!r} open-set score needs features and statistics")
        return self.statistics.scores(features)

    def flags(self, logits: Any, features: Any = None) -> np.ndarray:
        """(N,) bool: which crops are Other (from their logits, or features for a feature
        score)."""
        return self.scores(logits, features) < self.threshold

    def to_json(self) -> Dict[str, Any]:
        data = {"format": THRESHOLD_FORMAT, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        for name in ("threshold", "score", "max_known_lost", "known_lost", "dataset", "crops"):
            data[name] = getattr(self, name)
        data["weights_sha256"] = self.weights_sha256
        if self.needs_features:
            data["statistics"] = self.statistics_file
        return data


def threshold_value(text: str) -> float:
    """A threshold as a command gives it: a number, or ``off`` (-inf: no open-set outcome)."""
    if text.strip().lower() == "off":
        return float("-inf")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"open-set threshold {text!r}: a number or 'off'") from None
    if math.isnan(value):
        raise ValueError("open-set threshold: a number or 'off', not nan")
    return value


def threshold_path(weights: PathLike) -> Path:
    """Where a classifier's threshold lives: ``model_final.pth`` -> ``model_final.open_set.json``
    (an ONNX model's: ``cls.onnx`` -> ``cls.open_set.json``)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".open_set.json")


def write_threshold(weights: PathLike, threshold: OpenSetThreshold) -> Path:
    """Write ``threshold`` beside ``weights`` (atomically), and a feature score's statistics
    (:func:`~bmc_detectron.evaluation.feature_scores.statistics_path`); returns the JSON's path."""
    if threshold.needs_features:
        if threshold.statistics is None:
            raise ValueError(f"a {threshold.score!r} threshold needs its statistics to be written")
        stats = write_statistics(statistics_path(weights), threshold.statistics)
        threshold = replace(threshold, statistics_file=stats.name)
    return write_json_atomic(threshold.to_json(), threshold_path(weights), indent=1)


def load_threshold_file(path: PathLike) -> OpenSetThreshold:
    """Read a threshold file; :class:`OpenSetError` naming the file for anything malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise OpenSetError(f"{path}: cannot read the open-set threshold ({e.strerror})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise OpenSetError(f"{path}: the open-set threshold is not valid JSON ({e})") from None
    return threshold_from_json(data, str(path), path.parent)


def threshold_from_json(data: Any, source: str, folder: PathLike = ".") -> OpenSetThreshold:
    """An :class:`OpenSetThreshold` from its JSON form (a threshold file, an ONNX sidecar's
    ``open_set``); :class:`OpenSetError` naming ``source`` (or the statistics file) for anything
    malformed. A feature score's statistics are read from ``folder`` / its ``statistics``."""
    if not isinstance(data, dict) or data.get("format") != THRESHOLD_FORMAT:
        raise OpenSetError(
            f"{source}: not an open-set threshold (format {THRESHOLD_FORMAT!r} expected)"
        )
    value = data.get("threshold")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OpenSetError(f"{source}: 'threshold' must be a finite number, got {value!r}")
    score = data.get("score", "energy")
    if score not in SCORE_KINDS:
        raise OpenSetError(f"{source}: unknown score {score!r}: one of {SCORE_KINDS}")
    stats, stats_file = None, ""
    if score in FEATURE_SCORES:
        stats_file = data.get("statistics")
        if not isinstance(stats_file, str) or not stats_file or Path(stats_file).name != stats_file:
            raise OpenSetError(f"{source}: a {score!r} threshold names its statistics file")
        stats = read_statistics(Path(folder) / stats_file)
        if stats.score != score:
            raise OpenSetError(
                f"{Path(folder) / stats_file}: statistics of {stats.score!r}, not {score!r}"
            )
    try:
        return OpenSetThreshold(
            threshold=float(value),
            score=score,
            max_known_lost=float(data.get("max_known_lost", DEFAULT_MAX_KNOWN_LOST)),
            known_lost=float(data.get("known_lost", 0.0)),
            dataset=str(data.get("dataset", "")),
            crops=int(data.get("crops", 0)),
            weights_sha256=str(data.get("weights_sha256", "")),
            statistics_file=stats_file,
            statistics=stats,
        )
    except (TypeError, ValueError) as e:
        raise OpenSetError(f"{source}: malformed open-set threshold ({e})") from None


def read_threshold(
    weights: PathLike, weights_sha256: Optional[str] = None
) -> Optional[OpenSetThreshold]:
    """The threshold stored beside ``weights``, or None when there is none (the classifier then
    calls every cell one of its types, as before). With ``weights_sha256``, a threshold chosen
    for other weights is an :class:`OpenSetError` (it would be meaningless)."""
    path = threshold_path(weights)
    if not path.exists():
        return None
    found = load_threshold_file(path)
    if weights_sha256 and found.weights_sha256 and found.weights_sha256 != weights_sha256:
        raise OpenSetError(
            f"{path}: the open-set threshold was chosen for other weights than {weights} "
            "(retrained?); choose it again or delete the file"
        )
    return found


def open_set_metrics(
    known_scores: Sequence[float],
    unseen_scores: Sequence[float],
    max_known_lost: float = DEFAULT_MAX_KNOWN_LOST,
) -> Dict[str, Any]:
    """The open-set outcome measured: a threshold chosen on ``known_scores`` (at most
    ``max_known_lost`` flagged), the share of known crops it flags (``known_lost``) and of the
    unseen type's crops (``unseen_flagged``), and the AUROC of known vs unseen (0.5 = chance)."""
    known = np.asarray(known_scores, dtype=np.float64).ravel()
    unseen = np.asarray(unseen_scores, dtype=np.float64).ravel()
    threshold = choose_threshold(known, max_known_lost)
    return {
        "threshold": threshold,
        "max_known_lost": float(max_known_lost),
        "known": int(known.size),
        "unseen": int(unseen.size),
        "known_lost": flagged_share(known, threshold),
        "unseen_flagged": flagged_share(unseen, threshold),
        "auroc": auroc(known, unseen),
    }


def auroc(known_scores: Sequence[float], unseen_scores: Sequence[float]) -> Optional[float]:
    """P(a known crop scores above an unseen one), ties counted half (None if a side is empty)."""
    known = np.asarray(known_scores, dtype=np.float64).ravel()
    unseen = np.asarray(unseen_scores, dtype=np.float64).ravel()
    if not known.size or not unseen.size:
        return None
    ranks = _midranks(np.concatenate([unseen, known]))
    known_rank_sum = ranks[unseen.size :].sum()
    u = known_rank_sum - known.size * (known.size + 1) / 2
    return float(u / (known.size * unseen.size))


def _midranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_vals = values[order]
    i = 0
    while i < values.size:
        j = i
        while j + 1 < values.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks
