"""Two sets of leave-one-out runs side by side, paired by left-out type: the same types left out
at a longer schedule, or by a candidate classifier (another config), against the page's runs.

Each argument ``results`` is :func:`studies.open_set.report.collect` of one runs folder (``type
-> result``); a cell reads ``a -> b``, the mean over the types both folders finished.
"""

from __future__ import annotations

import statistics
from typing import List, Mapping, Optional, Sequence, Tuple

from bmc_detectron.reporting.tables import markdown_table
from studies.ablation.report import mean_interval

#: (score, key) of a column (score None: the run's own key); the schedule table's columns
SCHEDULE_COLUMNS: Tuple[Tuple[object, str], ...] = (
    (None, "known_top1"),
    ("knn", "unseen_flagged"),
    ("mahalanobis", "unseen_flagged"),
    ("knn", "auroc"),
)
SCHEDULE_HEADERS = ["known top-1 (%)", "kNN flagged (%)", "Mahalanobis flagged (%)", "kNN AUROC"]
#: the candidates table's columns: the schedule's and the energy score's
CANDIDATE_COLUMNS = (*SCHEDULE_COLUMNS[:3], ("energy", "unseen_flagged"), SCHEDULE_COLUMNS[3])
CANDIDATE_HEADERS = [*SCHEDULE_HEADERS[:3], "energy flagged (%)", SCHEDULE_HEADERS[3]]


def mean_or_none(values: Sequence[float]) -> Optional[float]:
    """The mean of ``values``, None when there are none."""
    return statistics.fmean(values) if values else None


def shared_types(a: Mapping[str, Mapping], b: Mapping[str, Mapping]) -> List[str]:
    """The types both folders finished with the feature scores, in ``b``'s order."""
    return [t for t in b if t in a and "knn" in b[t]["scores"] and "knn" in a[t]["scores"]]


def iterations(a: Mapping[str, Mapping], b: Mapping[str, Mapping], types: Sequence[str]) -> str:
    its = {(a[t]["iterations"], b[t]["iterations"]) for t in types}
    return " / ".join(f"{x} -> {y}" for x, y in sorted(its))


def change(a: Mapping[str, Mapping], b: Mapping[str, Mapping], types: Sequence[str], column) -> str:
    """ "x -> y": the mean of one column over ``types``, ``a`` -> ``b``."""
    score, key = column

    def mean(results: Mapping[str, Mapping]) -> float:
        values = [
            results[t][key] if score is None else results[t]["scores"][score][key] for t in types
        ]
        return statistics.fmean(values)

    x, y = mean(a), mean(b)
    return f"{x:.2f} -> {y:.2f}" if key == "auroc" else f"{100 * x:.1f} -> {100 * y:.1f}"


def schedule_section(longer: Mapping[str, Mapping], shorter: Mapping[str, Mapping]) -> str:
    """One row per type left out again with a longer schedule, and their mean."""
    both = shared_types(shorter, longer)
    if not both:
        return "Not measured (`python -m studies.open_set.open_set --iterations ...`)."
    groups = [(t, [t]) for t in both] + ([("mean", both)] if len(both) > 1 else [])
    rows = [
        [name, iterations(shorter, longer, types)]
        + [change(shorter, longer, types, column) for column in SCHEDULE_COLUMNS]
        for name, types in groups
    ]
    return markdown_table(["left out", "iterations", *SCHEDULE_HEADERS], rows)


def candidates_section(
    candidates: Mapping[str, Mapping[str, Mapping]], base: Mapping[str, Mapping]
) -> str:
    """One row per candidate (``name -> its results``): the mean over the types both it and
    ``base`` finished, base -> candidate, and one line per candidate naming the types it beats
    base on by kNN, with the 95 % t-interval of the paired differences (one run per type, so
    the interval holds the runs' own noise as well as the candidate's effect)."""
    rows, lines = [], []
    for name, results in candidates.items():
        both = shared_types(base, results)
        if not both:
            rows.append([name, 0] + ["not measured yet"] * len(CANDIDATE_COLUMNS))
            continue
        rows.append(
            [name, len(both)] + [change(base, results, both, col) for col in CANDIDATE_COLUMNS]
        )
        diffs = {
            t: 100 * results[t]["scores"]["knn"]["unseen_flagged"]
            - 100 * base[t]["scores"]["knn"]["unseen_flagged"]
            for t in both
        }
        gains = [t for t, d in diffs.items() if d > 0]
        line = (
            f"- `{name}`: kNN flags more of the unseen crops than the page's runs for"
            f" {len(gains)} of {len(both)} types" + (f" ({', '.join(gains)})" if gains else "")
        )
        mean, lo, hi, n = mean_interval(list(diffs.values()))
        if n >= 2:
            line += f"; paired by type: {mean:+.1f} points [{lo:+.1f}, {hi:+.1f}]"
        lines.append(line + ".")
    if not rows:
        return "No candidate given (`python -m studies.open_set.report --candidates NAME=DIR`)."
    table = markdown_table(["candidate", "types", *CANDIDATE_HEADERS], rows)
    return "\n".join([table, "", *lines])
