"""Turn analysed pool images into a ranked list and the batch to label next."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from bmc_detectron.active.diversity import select_batch
from bmc_detectron.active.scores import STRATEGIES, consistency_values, image_score, random_scores


@dataclass
class RankSettings:
    """How to score and pick: see :mod:`bmc_detectron.active.scores` and ``.diversity``."""

    strategy: str = "entropy"
    aggregate: str = "max"
    diversity: str = "none"
    budget: int = 10
    score_threshold: float = 0.05
    min_iou: float = 0.3
    candidates: float = 3.0
    balance_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")
        if self.budget < 1:
            raise ValueError(f"budget must be at least 1, not {self.budget}")


def kept(entry: Dict[str, np.ndarray], threshold: float) -> np.ndarray:
    """Mask of the boxes of an analysed image that reach the score threshold."""
    return np.asarray(entry["scores"]) >= threshold


def entry_score(entry: Dict[str, np.ndarray], settings: RankSettings) -> float:
    """The acquisition score of one analysed image (not for the random strategy)."""
    mask = kept(entry, settings.score_threshold)
    if settings.strategy != "consistency":
        return image_score(settings.strategy, entry["class_scores"][mask], settings.aggregate)
    views = []
    for name in ("flip", "stain"):
        scores = np.asarray(entry[f"{name}_scores"])
        vmask = scores >= settings.score_threshold
        views.append((np.asarray(entry[f"{name}_boxes"])[vmask], scores[vmask]))
    values = consistency_values(
        entry["boxes"][mask], entry["scores"][mask], views, settings.min_iou
    )
    return image_score("consistency", np.zeros((0, 1)), settings.aggregate, values)


def predicted_counts(entry: Dict[str, np.ndarray], threshold: float, k: int) -> np.ndarray:
    """(K,) number of kept boxes whose best class (of the class vectors) is each class."""
    probs = np.asarray(entry["class_scores"])[kept(entry, threshold)]
    if not len(probs):
        return np.zeros(k)
    return np.bincount(probs.argmax(axis=1), minlength=k)[:k].astype(np.float64)


def rank_pool(
    keys: Sequence[str], entries: Sequence[Dict[str, np.ndarray]], settings: RankSettings
) -> List[Dict[str, object]]:
    """Rows ``{image, score, rank, selected, pick, boxes}`` best first, the batch marked.

    ``rank`` orders by score alone; ``pick`` is the order in which the batch was chosen
    (None for images not chosen); with diversity the batch need not be the top ``budget``.
    """
    if settings.strategy == "random":
        by_key = random_scores(keys, settings.seed)
        scores = np.asarray([by_key[k] for k in keys])
    else:
        scores = np.asarray([entry_score(e, settings) for e in entries])
    k = max((np.asarray(e["class_scores"]).shape[1] for e in entries), default=1)
    features = counts = None
    if settings.diversity == "kcenter":
        dim = max(len(e["feature"]) for e in entries) if entries else 1
        features = np.zeros((len(entries), dim))
        for i, e in enumerate(entries):
            features[i, : len(e["feature"])] = e["feature"]
    elif settings.diversity == "class_balance":
        counts = np.stack([predicted_counts(e, settings.score_threshold, k) for e in entries])
    picks = select_batch(
        scores,
        min(settings.budget, len(keys)),
        settings.diversity,
        features,
        counts,
        settings.candidates,
        settings.balance_weight,
    )
    pick_of = {i: n + 1 for n, i in enumerate(picks)}
    order = np.argsort(-scores, kind="stable")
    rows = []
    for rank, i in enumerate(order, start=1):
        n_boxes = int(kept(entries[i], settings.score_threshold).sum())
        row = {"image": keys[i], "score": float(scores[i]), "rank": rank}
        row.update(selected=i in pick_of, pick=pick_of.get(i), boxes=n_boxes)
        rows.append(row)
    return rows
