"""The open-set page: leave-one-type-out flagged shares and the full model's top-1.

    python -m studies.open_set.report --runs output/open_set \
        --output docs/results/open_set/RESULTS_open_set.md

Reads ``<runs>/without_<TYPE>/result.json`` and ``<runs>/full*/result.json`` (written by
``studies/open_set/open_set.py``) and ``<runs>/without_<TYPE>/feature_scores.json`` (every score,
``studies/open_set/features.py``); a run not finished yet is listed as missing. No training here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.reporting.tables import markdown_table
from bmc_detectron.utils.io import atomic_write_text, shown_path
from studies.open_set.compare import candidates_section, mean_or_none, schedule_section
from studies.open_set.features import result_names
from studies.open_set.neighbours import neighbours_section
from studies.open_set.non_cell_table import non_cells_section
from studies.status import load_manifest

MANIFEST = Path(__file__).with_name("study.yaml")


def _pct(value: Optional[float]) -> object:
    return None if value is None else 100.0 * float(value)


def collect(runs: Path, types: Sequence[str], test_flips: int = 1) -> Dict[str, Dict]:
    """``type -> result`` of the finished leave-one-out runs, in ``types`` order; the scores
    measured by ``features.py`` (``feature_scores.json``: every score from the cached features)
    replace the driver's (energy and max-softmax only) where they exist. With ``test_flips`` > 1
    only the runs that ``features.py --test-flips`` measured, with those scores."""
    out = {}
    for t in types:
        path = runs / f"without_{t}" / "result.json"
        measured = path.with_name(result_names(test_flips)[1])
        if path.is_file() and (test_flips == 1 or measured.is_file()):
            out[t] = json.loads(path.read_text())
            if measured.is_file():
                extra = json.loads(measured.read_text())
                out[t] |= {"scores": extra["scores"], "train_crops": extra["train_crops"]}
                out[t] |= {"knn_k": extra["knn_k"], "knn_by_k": extra.get("knn_by_k")}
                out[t] |= {"unseen_predicted_as": extra.get("unseen_predicted_as")}
    return out


def _config_of(results: Optional[Mapping[str, Mapping]]) -> str:
    """`` (`config.yaml`)``: the config its runs name (runs before 2026-12-07 name none)."""
    names = {Path(r["config"]).name for r in (results or {}).values() if r.get("config")}
    return f" (`{', '.join(sorted(names))}`)" if names else ""


def runs_table(results: Mapping[str, Mapping]) -> str:
    """One row per left-out type: the run and its crops."""
    rows = []
    for t, r in results.items():
        first = next(iter(r["scores"].values()))
        rows.append(
            [t, r["iterations"], _pct(r["known_top1"]), first.get("known"), first.get("unseen")]
            + [r.get("train_crops")]
        )
    headers = ["left out", "iterations", "known top-1 (%)", "known val crops", "unseen crops"]
    headers += ["training crops (feature statistics)"]
    return markdown_table(headers, rows).replace("| None |", "| - |")


def scores_of(results: Mapping[str, Mapping]) -> List[str]:
    """The scores measured in every run, in the order of the first."""
    kinds = list(next(iter(results.values()))["scores"]) if results else []
    return [k for k in kinds if all(k in r["scores"] for r in results.values())]


def score_table(results: Mapping[str, Mapping], key: str, percent: bool) -> str:
    """One row per score: ``key`` (``unseen_flagged``, ``known_lost`` or ``auroc``) for each
    left-out type and their mean."""
    rows = []
    for kind in scores_of(results):
        values = [r["scores"][kind][key] for r in results.values()]
        shown = [_pct(v) if percent else f"{v:.2f}" for v in values + [mean_or_none(values)]]
        rows.append([kind, *shown])
    return markdown_table(["score", *results, "mean"], rows)


def knn_k_table(results: Mapping[str, Mapping]) -> str:
    """The kNN score with other k (mean over the runs that measured them)."""
    by_k: Dict[str, List[Mapping]] = {}
    for r in results.values():
        for k, metrics in (r.get("knn_by_k") or {}).items():
            by_k.setdefault(k, []).append(metrics)
    rows = [
        [k, len(m), _pct(mean_or_none([x["unseen_flagged"] for x in m]))]
        + [_pct(mean_or_none([x["known_lost"] for x in m]))]
        + [f"{mean_or_none([x['auroc'] for x in m]):.2f}"]
        for k, m in sorted(by_k.items(), key=lambda item: int(item[0]))
    ]
    headers = ["k", "runs", "flagged, mean (%)", "known lost, mean (%)", "AUROC, mean"]
    return markdown_table(headers, rows) if rows else "Not measured."


def _knn_k(results: Mapping[str, Mapping]) -> object:
    ks = sorted({r["knn_k"] for r in results.values() if "knn_k" in r})
    return ", ".join(map(str, ks)) or "-"


def _verdict(value: Optional[float], ok: bool) -> str:
    return "not measured yet" if value is None else ("met" if ok else "not met")


def open_set_rows(results: Mapping[str, Mapping], targets: Mapping, views: str = "") -> List[list]:
    """The two open-set target rows (flagged, known lost) of the manifest's score."""
    score = str(targets.get("score", "energy"))
    score = score if score in scores_of(results) else "energy"
    flagged = mean_or_none([r["scores"][score]["unseen_flagged"] for r in results.values()])
    lost = mean_or_none([r["scores"][score]["known_lost"] for r in results.values()])
    goal, tag = float(targets["unseen_flagged"]), f"{score}{views}, mean"
    return [
        [f">= {100 * goal:.0f} % of unseen-type crops flagged ({tag})", _pct(flagged)]
        + [_verdict(flagged, flagged is not None and flagged >= goal)],
        [f"<= 5 % of known crops lost ({tag})", _pct(lost)]
        + [_verdict(lost, lost is not None and lost <= 0.05 + 1e-12)],
    ]


def targets_table(
    results: Mapping[str, Mapping],
    fulls: Mapping[str, Mapping],
    targets: Mapping,
    views: Optional[Mapping[str, Mapping]] = None,
    longer: Optional[Mapping[str, Mapping]] = None,
) -> str:
    """The issue's targets against the measurements (mean over the left-out types; again with
    the 8 views where ``views`` holds those runs, and for the types a longer schedule's runs,
    ``longer``, left out again with 8 views); the top-1 target for each evaluated full model
    (``full`` first, then the other ``full_*`` folders)."""
    rows = open_set_rows(results, targets)
    if views:
        rows += open_set_rows(views, targets, f", 8 views, {len(views)} runs")
    if longer:
        its = sorted({int(r["iterations"]) for r in longer.values()})
        tag = f", 8 views, {len(longer)} runs of {'/'.join(map(str, its))} iterations"
        rows += open_set_rows(longer, targets, tag + f": {', '.join(longer)}")
    top1 = float(targets["top1"])
    for folder, full in {"full": None, **fulls}.items():
        label = "full model" if folder == "full" else f"full model `{folder}`"
        for name in ("pbc_marrow_val", "marrow_real_val"):
            entry = ((full or {}).get("datasets") or {}).get(name)
            value = None if entry is None else entry["top1"]
            rows.append(
                [f"{label} top-1 >= {100 * top1:.0f} % on {name}", _pct(value)]
                + [_verdict(value, value is not None and value >= top1)]
            )
    return markdown_table(["target", "measured (%)", "verdict"], rows)


def full_table(fulls: Mapping[str, Mapping]) -> str:
    """One row per dataset and evaluated threshold (``full/``: the model as trained; other
    ``full_*/`` folders: the same model with another stored threshold)."""
    if not fulls:
        return "The full model has not been evaluated yet (`--full-run`)."
    rows = []
    for folder, full in fulls.items():
        threshold = full.get("threshold") or {}
        shown = f"{folder} (`{Path(full['run']).name}`)" if full.get("run") else folder
        for name, e in full["datasets"].items():
            rows.append(
                [name, threshold.get("score"), shown, e["crops"], _pct(e["top1"])]
                + [_pct(e.get("other"))]
            )
    headers = ["dataset", "open-set score", "results", "crops", "top-1 (%)"]
    headers += ["known crops flagged Other (%)"]
    return markdown_table(headers, rows).replace("| None |", "| - |")


def collect_full(runs: Path) -> Dict[str, Mapping]:
    """``folder -> result`` of ``<runs>/full*/result.json``, ``full`` first."""
    paths = sorted(runs.glob("full*/result.json"), key=lambda p: (p.parent.name != "full", p))
    return {p.parent.name: json.loads(p.read_text()) for p in paths}


def views_section(flips: Mapping[str, Mapping], results: Mapping[str, Mapping]) -> str:
    """The same models with each crop's 8 flips and quarter turns averaged (``TEST_FLIPS 8``;
    ``flips``: :func:`collect` with ``test_flips=8``) beside ``results`` (one view)."""
    if not flips:
        return "Not measured (`python -m studies.open_set.features --test-flips 8`)."
    lines = []
    both = [t for t in flips if "knn" in flips[t]["scores"] and "knn" in results[t]["scores"]]
    if both:
        views = mean_or_none([flips[t]["scores"]["knn"]["unseen_flagged"] for t in both])
        plain = mean_or_none([results[t]["scores"]["knn"]["unseen_flagged"] for t in both])
        lines += [
            f"kNN, mean over these {len(both)} run{'s' * (len(both) > 1)}: {_pct(views):.1f} %"
            " of the left-out crops"
            f" flagged with the 8 views, {_pct(plain):.1f} % with the crop as it is.",
            "",
        ]
    lines += [
        "Share of the left-out type's val crops flagged Other (%):",
        "",
        score_table(flips, "unseen_flagged", True),
        "",
        "AUROC:",
        "",
        score_table(flips, "auroc", False),
    ]
    return "\n".join(lines)


def _intro(manifest: Mapping, results: Mapping[str, Mapping]) -> str:
    """What a run does and what each score is."""
    return (
        "Each run trains the PBC classifier (`" + str(manifest["config"]) + "`, a short schedule)"
        " without one type; the threshold is chosen on the known types' val crops so that at most"
        f" {100 * float(manifest['max_known_lost']):.0f} % of them are flagged, and the share of"
        " the left-out type's val crops (30 per type in PBC val) below it is reported. Scores"
        " (higher = more like a known type): `energy` (`logsumexp` of the logits) and"
        " `max_softmax` from the logits (`bmc_detectron/evaluation/open_set.py`); `mahalanobis`"
        " (minus the smallest Mahalanobis distance to a class mean, one Ledoit-Wolf-shrunk"
        " covariance shared by the classes) and `knn` (minus the distance to the k-th nearest"
        f" training feature, both L2-normalised, k = {_knn_k(results)}) from the pooled res5"
        " features (`bmc_detectron/evaluation/feature_scores.py`), fitted on the run's own"
        " training crops (`python -m studies.open_set.features`, which caches the features)."
        f" New classifiers store `{manifest['targets'].get('score', 'energy')}` (the targets"
        " below read it; `MODEL.BMC.CLASSIFIER.OPEN_SET_SCORE`), threshold files of other scores"
        " keep working. A cell flagged Other is listed apart from the uncertain cells and is in"
        " no percentage of the differential."
    )


def _leave_one_out_lines(results: Mapping[str, Mapping], missing: Sequence[str]) -> List[str]:
    """The section of the one-view runs: flagged, lost, AUROC, k and the runs."""
    none = "No finished run yet."
    return [
        "Share of the left-out type's val crops flagged Other (%):",
        "",
        score_table(results, "unseen_flagged", True) if results else none,
        "",
        "Share of the known types' val crops flagged (lost, %):",
        "",
        score_table(results, "known_lost", True) if results else none,
        "",
        "AUROC, known vs left-out crops (0.5 = chance, 1 = every unseen crop scores lower):",
        "",
        score_table(results, "auroc", False) if results else none,
        "",
        f"The kNN score's k was fixed at {_knn_k(results)} before these runs (Sun et al. use 50"
        " for 50,000 training images; these banks hold about 4,000); other k, shown and not"
        " chosen on them:",
        "",
        knn_k_table(results),
        "",
        "The runs:",
        "",
        runs_table(results) if results else none,
        "",
        f"Not finished yet: {', '.join(missing)}." if missing else "Every planned type is done.",
    ]


def _comparison_lines(
    manifest: Mapping,
    views: Mapping[str, Mapping],
    longer_runs: Optional[Path],
    candidates: Optional[Mapping[str, Path]],
) -> List[str]:
    """The sections that pair other runs folders with the page's 8-view runs (``views``): a
    longer schedule and candidate classifiers."""
    types = list(manifest["types"])
    longer = collect(longer_runs, types, test_flips=8) if longer_runs else {}
    others = {n: collect(d, types, test_flips=8) for n, d in (candidates or {}).items()}
    return [
        "## A longer schedule",
        "",
        "Some types left out again with a longer schedule"
        + (f" (`{shown_path(longer_runs)}`)" if longer_runs else "")
        + ", everything else as above, 8 views, threshold at most"
        f" {100 * float(manifest['max_known_lost']):.0f} % of the known crops: do better-trained"
        " features set an unseen type further apart? (The shipped classifiers train 2800 or"
        " more iterations.)",
        "",
        schedule_section(longer, views),
        "",
        "## Candidate classifiers",
        "",
        "Every type left out again by another classifier config, or by the same config with"
        " another seed (a repeat: its difference is the runs' noise alone; everything else as"
        " the page's runs: schedule, 8 views, the threshold at most"
        f" {100 * float(manifest['max_known_lost']):.0f} % of the known crops), against the"
        " page's runs of the same types (one seed each)"
        + "".join(
            f"{': ' if i == 0 else '; '}`{n}` = `{shown_path(d)}`{_config_of(others.get(n))}"
            for i, (n, d) in enumerate((candidates or {}).items())
        )
        + ".",
        "",
        candidates_section(others, views),
        "",
    ]


def write_page(
    runs: Path,
    output: Path,
    argv: Sequence[str],
    longer_runs: Optional[Path] = None,
    candidates: Optional[Mapping[str, Path]] = None,
) -> Path:
    """The page from ``runs``, a longer schedule's runs and candidate classifiers' runs
    (``name -> runs folder``)."""
    manifest = load_manifest(MANIFEST)
    types = list(manifest["types"])
    results = collect(runs, types)
    views = collect(runs, types, test_flips=8)
    longer = collect(longer_runs, types, test_flips=8) if longer_runs else {}
    fulls = collect_full(runs)
    missing = [t for t in types if t not in results]
    now = datetime.datetime.now()
    lines = [
        "# Open-set recognition: cells of a type never trained are flagged Other",
        "",
        f"Generated {now:%Y-%m-%d %H:%M} by `{shell_join(['python', '-m', __spec__.name, *argv])}`"
        f" from the runs in `{shown_path(runs)}` (driver: `python -m studies.open_set.open_set`).",
        "",
        _intro(manifest, results),
        "",
        "## Targets",
        "",
        targets_table(results, fulls, manifest["targets"], views, longer),
        "",
        "## Leaving one type out",
        "",
        *_leave_one_out_lines(results, missing),
        "",
        "## Eight views of each crop (`MODEL.BMC.CLASSIFIER.TEST_FLIPS 8`)",
        "",
        "The same models, each crop's features averaged over its 8 flips and quarter turns (the"
        " classifier's own test-time option, `python -m studies.open_set.features --test-flips"
        " 8`); the threshold again at most"
        f" {100 * float(manifest['max_known_lost']):.0f} % of the known crops, chosen with the"
        " same views.",
        "",
        views_section(views, results),
        "",
        "## Where the unseen crops go",
        "",
        "The known type of highest logit for each left-out type's val crops (8 views), and"
        " whether it is a stage beside the left-out one on the granulocytic line (promyelocyte,"
        " myelocyte, metamyelocyte, band, segmented): a stage between two known ones can look"
        " like one of them rather than like nothing known.",
        "",
        neighbours_section(views),
        "",
        *_comparison_lines(manifest, views, longer_runs, candidates),
        "## Crops that are not cells",
        "",
        "Real marrow's unknowns are also things that are no white cell: red cells and platelets"
        " a detector boxes, background, a box on part of a cell, a cell too blurred to name"
        " (`python -m studies.open_set.non_cells`: BCCD val red cells, platelets and background"
        " windows, another lab's stain; PBC val background windows and quarter-cell fragments,"
        " the training stain; PBC val cells blurred at sigma = crop / 16), flagged at each"
        " model's leave-one-out threshold.",
        "",
        *non_cells_section(runs, types, candidates),
        "",
        "## The full model (composites + PBC)",
        "",
        "`" + str(manifest["full_config"]) + "` and its leaves (the run of each results folder"
        " named), the stored threshold applied to known-type crops"
        " (the threshold is chosen so that at most 5 % of the known crops of each dataset its"
        " threshold file names are flagged; the composite crops are all of known types, so"
        " every one flagged is lost to the differential). The open-set score is the one its"
        " threshold file stores (`bmc open-set-threshold --score ...`):",
        "",
        full_table(fulls),
        "",
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(output, "\n".join(lines))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="the driver's --output folder")
    p.add_argument("--output", required=True, help="the page (.md)")
    p.add_argument("--longer-runs", help="runs folder of the same driver at a longer schedule")
    p.add_argument(
        "--candidates",
        nargs="+",
        default=[],
        metavar="NAME=DIR",
        help="runs folders of the driver with another --config (a candidate classifier)",
    )
    args = p.parse_args(argv)
    longer = Path(args.longer_runs) if args.longer_runs else None
    candidates = {}
    for item in args.candidates:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            p.error(f"--candidates {item!r}: expected NAME=DIR")
        candidates[name] = Path(folder)
    print(write_page(Path(args.runs), Path(args.output), argv, longer, candidates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
