"""Where a left-out type's crops go: the known type the model calls them, and whether it is the
neighbouring stage of the same maturation line.

A granulocyte matures through five stages (promyelocyte, myelocyte, metamyelocyte, band,
segmented); a stage left out of training lies between two that stay, so its crops may look like
a known type rather than like nothing known. :func:`unseen_predicted_as` counts them (from a
leave-one-out run's cached logits, ``studies/open_set/features.py`` stores it in
``feature_scores*.json``); :func:`neighbours_section` writes the page's table.
"""

from __future__ import annotations

from typing import Dict, List, Mapping

import numpy as np

from bmc_detectron.data.pbc import PBC_MARROW_CLASSES
from bmc_detectron.reporting.tables import markdown_table
from studies.open_set.compare import mean_or_none

#: the neutrophil maturation line, in order (each stage's neighbours are the ones beside it)
GRANULOCYTIC = ("Promy", "Myelo", "Late", "Rods", "Lobu")


def unseen_predicted_as(
    val_logits: np.ndarray, val_labels: np.ndarray, train_labels: np.ndarray, left_out: int
) -> Dict[str, int]:
    """``known type -> crops``: the left-out type's val crops by the known type of highest logit.

    Args:
        val_logits: (N, C) logits of the val crops (C: :data:`PBC_MARROW_CLASSES`).
        val_labels: (N,) their class ids.
        train_labels: (M,) class ids of the run's training crops: the known types.
        left_out: the left-out class id.
    """
    known = np.unique(train_labels[train_labels != left_out])
    unseen = val_logits[val_labels == left_out][:, known]
    taken = known[unseen.argmax(axis=1)] if unseen.size else np.zeros(0, dtype=np.int64)
    ids, counts = np.unique(taken, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {PBC_MARROW_CLASSES[int(ids[i])]: int(counts[i]) for i in order}


def is_neighbour(left_out: str, known: str) -> bool:
    """Whether ``known`` is a stage beside ``left_out`` on the maturation line."""
    if left_out not in GRANULOCYTIC or known not in GRANULOCYTIC:
        return False
    return abs(GRANULOCYTIC.index(left_out) - GRANULOCYTIC.index(known)) == 1


def _taken(counts: Mapping[str, int], rank: int) -> str:
    total = sum(counts.values())
    if len(counts) <= rank or not total:
        return "-"
    name, n = list(counts.items())[rank]
    return f"{name} {100 * n / total:.0f} %"


def neighbours_section(results: Mapping[str, Mapping], score: str = "knn") -> str:
    """The table (left-out type, the two known types taking most of its crops, whether the first
    is a neighbouring stage, the share ``score`` flags) and one line comparing the flagged share
    of the stages taken mostly by a neighbour with that of the other types."""
    measured = {t: r for t, r in results.items() if r.get("unseen_predicted_as")}
    if not measured:
        return "Not measured (`python -m studies.open_set.features` stores it)."
    rows, near, far = [], [], []
    for t, r in measured.items():
        counts = r["unseen_predicted_as"]
        first = next(iter(counts))
        neighbour = is_neighbour(t, first)
        flagged = 100 * float(r["scores"][score]["unseen_flagged"])
        (near if neighbour else far).append(flagged)
        rows.append(
            [t, _taken(counts, 0), _taken(counts, 1), "yes" if neighbour else "no", flagged]
        )
    headers = ["left out", "called most often", "second", "a neighbouring stage", "flagged (%)"]
    lines: List[str] = [markdown_table(headers, rows), ""]
    a, b = mean_or_none(near), mean_or_none(far)
    lines.append(
        f"{len(near)} of {len(measured)} left-out types go mostly to a neighbouring stage of"
        " the granulocytic line"
        + (f"; {score} flags {a:.1f} % of their crops" if a is not None else "")
        + (f", {b:.1f} % of the other types' crops." if b is not None else ".")
    )
    return "\n".join(lines)
