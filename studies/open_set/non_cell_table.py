"""The open-set page's section on crops that are not cells (``studies/open_set/non_cells.py``).

Reads ``<runs>/without_<TYPE>/non_cells[_flips8].json`` of each runs folder and
``<runs>/full*/non_cells.json`` of the product classifier; writes nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from bmc_detectron.reporting.tables import markdown_table
from studies.open_set.compare import mean_or_none
from studies.open_set.non_cells import KINDS, RESULT, result_name

SCORES = ("energy", "max_softmax", "mahalanobis", "knn")


def collect_non_cells(runs: Path, types: Sequence[str], test_flips: int = 1) -> Dict[str, Mapping]:
    """``type -> non_cells result`` of the leave-one-out runs of ``runs`` that measured them."""
    out = {}
    for t in types:
        path = runs / f"without_{t}" / result_name(test_flips)
        if path.is_file():
            out[t] = json.loads(path.read_text())
    return out


def mean_flagged(results: Mapping[str, Mapping], kind: str, score: str) -> Optional[float]:
    """The share of ``kind``'s crops ``score`` flags, in %, averaged over the runs."""
    values = [r["kinds"][kind]["flagged"].get(score) for r in results.values()]
    mean = mean_or_none([v for v in values if v is not None])
    return None if mean is None else 100.0 * mean


def called_most(results: Mapping[str, Mapping], kind: str) -> str:
    """The known type the models call ``kind``'s crops most often, and its share, over the runs."""
    counts: Counter = Counter()
    for r in results.values():
        counts.update(r["kinds"][kind]["predicted_as"])
    if not counts:
        return "-"
    name, n = counts.most_common(1)[0]
    return f"{name} ({100.0 * n / sum(counts.values()):.0f} %)"


def kinds_table(results: Mapping[str, Mapping]) -> str:
    """One row per kind: its crops, each score's mean flagged share, the type it is called."""
    rows = []
    for kind in KINDS:
        crops = {r["kinds"][kind]["crops"] for r in results.values()}
        shown = [mean_flagged(results, kind, s) for s in SCORES]
        rows.append([kind, "/".join(map(str, sorted(crops))), *shown, called_most(results, kind)])
    headers = ["crops", "n", *(f"{s} (%)" for s in SCORES), "called (without Other)"]
    return markdown_table(headers, rows)


def folders_table(folders: Mapping[str, Mapping[str, Mapping]]) -> str:
    """One row per kind, kNN and Mahalanobis flagged shares (%) of each runs folder."""
    rows = [
        [kind]
        + [mean_flagged(res, kind, s) for res in folders.values() for s in ("knn", "mahalanobis")]
        for kind in KINDS
    ]
    runs = ", ".join(f"{name}: {len(res)}" for name, res in folders.items())
    headers = ["crops"] + [f"{n} {s} (%)" for n in folders for s in ("kNN", "Mahalanobis")]
    return markdown_table(headers, rows) + f"\n\nRuns measured: {runs}."


def full_rows(runs: Path) -> str:
    """The product classifiers with their own stored thresholds on the non-cell crops
    (``full*``): flagged by the score, called the Other class (where it has one) and the
    count's Other (either)."""
    rows = []
    for path in sorted(runs.glob(f"full*/{RESULT}")):
        r = json.loads(path.read_text())
        for kind in KINDS:
            flagged = (r["kinds"].get(kind) or {}).get("flagged") or {}
            shares = [flagged.get(key) for key in (r["score"], "Other class", "Other")]
            shares[2] = shares[0] if shares[2] is None else shares[2]
            run = (
                f"{path.parent.name} (`{Path(r['run']).name}`)"
                if r.get("run")
                else path.parent.name
            )
            rows.append(
                [run, r["score"], r["test_flips"], kind]
                + [None if v is None else 100.0 * v for v in shares]
            )
    if not rows:
        return "Not measured yet (`python -m studies.open_set.non_cells --full-run RUN`)."
    headers = ["results", "open-set score", "views", "crops", "flagged by the score (%)"]
    headers += ["called Other by the class (%)", "Other in the count (%)"]
    return markdown_table(headers, rows)


def summary_line(results: Mapping[str, Mapping]) -> str:
    """Which score flags the non-cell crops best, in words generated from the means."""
    ranges = {}
    for score in ("knn", "mahalanobis"):
        values = [mean_flagged(results, kind, score) for kind in KINDS]
        values = [v for v in values if v is not None]
        if values:
            ranges[score] = (min(values), max(values))
    if len(ranges) < 2:
        return ""
    (klo, khi), (mlo, mhi) = ranges["knn"], ranges["mahalanobis"]
    return (
        f"With 8 views, at the leave-one-out threshold, Mahalanobis flags {mlo:.0f}-{mhi:.0f} %"
        f" of each kind of non-cell crop and kNN {klo:.0f}-{khi:.0f} % (means over"
        f" {len(results)} models)."
    )


def non_cells_section(
    runs: Path, types: Sequence[str], others: Optional[Mapping[str, Path]] = None
) -> List[str]:
    """The page's lines: the page's runs at 8 views and one, other runs folders (``name ->
    folder``: candidates, repeats) at 8 views, and the product classifier."""
    views = collect_non_cells(runs, types, 8)
    plain = collect_non_cells(runs, types, 1)
    if not views and not plain:
        return ["Not measured yet (`python -m studies.open_set.non_cells --runs RUNS`)."]
    folders = {"page's runs": views}
    folders |= {n: collect_non_cells(d, types, 8) for n, d in (others or {}).items()}
    folders = {n: res for n, res in folders.items() if res}
    return [
        summary_line(views),
        "",
        "8 views, mean over the leave-one-out models (each misses one type; its threshold is"
        " its own, chosen as above on its known val crops):",
        "",
        kinds_table(views) if views else "Not measured.",
        "",
        "One view:",
        "",
        kinds_table(plain) if plain else "Not measured.",
        "",
        "Other runs folders (8 views):",
        "",
        folders_table(folders),
        "",
        "The full model (composites + PBC) with the threshold and statistics stored beside it:",
        "",
        full_rows(runs),
    ]
