"""Pick a labelling batch from scored images without taking ten near-identical fields.

* ``none``: the ``budget`` best-scored images.
* ``kcenter``: greedy k-centre (Sener & Savarese 2018) on pooled backbone features, restricted to
  a candidate set of the best-scored images (``candidates`` x budget, default 3x): the best image
  first, then repeatedly the candidate farthest (Euclidean, on L2-normalised features) from all
  chosen ones. Ties go to the higher score.
* ``class_balance``: greedy; each step takes the image maximising
  ``score + weight * sum_c f_c / (1 + chosen_c)``, where ``f_c`` is the fraction of the image's
  predicted boxes of class c and ``chosen_c`` the boxes of class c already in the batch: images
  whose predicted classes are still rare in the batch come first.

All return indices into the input arrays, in pick order.
"""

from __future__ import annotations

from typing import List

import numpy as np

DIVERSITY = ("none", "kcenter", "class_balance")


def top_k(scores: np.ndarray, budget: int) -> List[int]:
    """Indices of the ``budget`` highest scores (stable: earlier index first among ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[: max(0, budget)]]


def _normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norm, 1e-12)


def kcenter(
    scores: np.ndarray, features: np.ndarray, budget: int, candidates: float = 3.0
) -> List[int]:
    """Greedy k-centre among the ``ceil(candidates * budget)`` best-scored images."""
    scores = np.asarray(scores, dtype=np.float64)
    pool = top_k(scores, int(np.ceil(max(candidates, 1.0) * budget)))
    if not pool or budget <= 0:
        return []
    feats = _normalise(np.asarray(features)[pool])
    chosen = [0]
    dist = np.linalg.norm(feats - feats[0], axis=1)
    while len(chosen) < min(budget, len(pool)):
        far = dist.max()
        ties = [k for k in range(len(pool)) if k not in chosen and dist[k] >= far - 1e-12]
        nxt = max(ties, key=lambda k: (scores[pool[k]], -k))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(feats - feats[nxt], axis=1))
    return [pool[k] for k in chosen]


def class_balance(
    scores: np.ndarray, counts: np.ndarray, budget: int, weight: float = 1.0
) -> List[int]:
    """Greedy batch trading score against classes already covered (``counts``: (N, K))."""
    scores = np.asarray(scores, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64).reshape(len(scores), -1)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    chosen: List[int] = []
    covered = np.zeros(counts.shape[1])
    left = list(range(len(scores)))
    while left and len(chosen) < budget:
        gains = [scores[i] + weight * float((fractions[i] / (1.0 + covered)).sum()) for i in left]
        nxt = left[int(np.argmax(gains))]
        chosen.append(nxt)
        left.remove(nxt)
        covered += counts[nxt]
    return chosen


def select_batch(
    scores: np.ndarray,
    budget: int,
    diversity: str = "none",
    features: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    candidates: float = 3.0,
    weight: float = 1.0,
) -> List[int]:
    """Indices of the images to label next, by ``diversity`` (see the module docstring)."""
    if diversity == "none":
        return top_k(scores, budget)
    if diversity == "kcenter":
        if features is None:
            raise ValueError("kcenter diversity needs pooled features")
        return kcenter(scores, features, budget, candidates)
    if diversity == "class_balance":
        if counts is None:
            raise ValueError("class_balance diversity needs per-image class counts")
        return class_balance(scores, counts, budget, weight)
    raise ValueError(f"diversity must be one of {DIVERSITY}, not {diversity!r}")
