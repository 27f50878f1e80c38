"""The open-set page: leave-one-type-out flagged shares and the full model's top-1.

    python -m studies.open_set.report --runs output/open_set \
        --output docs/results/open_set/RESULTS_open_set.md

Reads ``<runs>/without_<TYPE>/result.json`` and ``<runs>/full/result.json`` (written by
``studies/open_set/open_set.py``); a run not finished yet is listed as missing. No training here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.reporting.tables import markdown_table
from bmc_detectron.utils.io import atomic_write_text, shown_path
from studies.status import load_manifest

MANIFEST = Path(__file__).with_name("study.yaml")


def _pct(value: Optional[float]) -> object:
    return None if value is None else 100.0 * float(value)


def collect(runs: Path, types: Sequence[str]) -> Dict[str, Dict]:
    """``type -> result`` of the finished leave-one-out runs, in ``types`` order."""
    out = {}
    for t in types:
        path = runs / f"without_{t}" / "result.json"
        if path.is_file():
            out[t] = json.loads(path.read_text())
    return out


def leave_out_table(results: Mapping[str, Mapping]) -> str:
    """One row per left-out type: flagged share, known lost and AUROC per score."""
    rows = []
    for t, r in results.items():
        e, m = r["scores"]["energy"], r["scores"]["max_softmax"]
        rows.append(
            [t, r["iterations"], _pct(r["known_top1"]), _pct(e["unseen_flagged"])]
            + [_pct(e["known_lost"]), e["auroc"], _pct(m["unseen_flagged"])]
            + [_pct(m["known_lost"]), m["auroc"], e["unseen"]]
        )
    headers = ["left out", "iterations", "known top-1 (%)", "flagged, energy (%)"]
    headers += ["known lost, energy (%)", "AUROC energy", "flagged, max-softmax (%)"]
    headers += ["known lost, max-softmax (%)", "AUROC max-softmax", "unseen crops"]
    return markdown_table(headers, rows).replace("| None |", "| - |")


def _mean(values: List[float]) -> Optional[float]:
    return statistics.fmean(values) if values else None


def targets_table(results: Mapping[str, Mapping], full: Optional[Mapping], targets: Mapping) -> str:
    """The issue's targets against the measurements (mean over the left-out types)."""
    flagged = _mean([r["scores"]["energy"]["unseen_flagged"] for r in results.values()])
    lost = _mean([r["scores"]["energy"]["known_lost"] for r in results.values()])
    rows = []

    def verdict(value: Optional[float], ok: bool) -> str:
        return "not measured yet" if value is None else ("met" if ok else "not met")

    goal = float(targets["unseen_flagged"])
    rows.append(
        [f">= {100 * goal:.0f} % of unseen-type crops flagged (energy, mean)", _pct(flagged)]
        + [verdict(flagged, flagged is not None and flagged >= goal)]
    )
    rows.append(
        ["<= 5 % of known crops lost (energy, mean)", _pct(lost)]
        + [verdict(lost, lost is not None and lost <= 0.05 + 1e-12)]
    )
    top1 = float(targets["top1"])
    for name in ("pbc_marrow_val", "marrow_real_val"):
        entry = ((full or {}).get("datasets") or {}).get(name)
        value = None if entry is None else entry["top1"]
        rows.append(
            [f"full model top-1 >= {100 * top1:.0f} % on {name}", _pct(value)]
            + [verdict(value, value is not None and value >= top1)]
        )
    return markdown_table(["target", "measured (%)", "verdict"], rows)


def full_table(full: Optional[Mapping]) -> str:
    if not full:
        return "The full model has not been evaluated yet (`--full-run`)."
    rows = [
        [name, e["crops"], _pct(e["top1"]), _pct(e.get("other"))]
        for name, e in full["datasets"].items()
    ]
    return markdown_table(["dataset", "crops", "top-1 (%)", "flagged Other (%)"], rows)


def write_page(runs: Path, output: Path, argv: Sequence[str]) -> Path:
    manifest = load_manifest(MANIFEST)
    types = list(manifest["types"])
    results = collect(runs, types)
    full_file = runs / "full" / "result.json"
    full = json.loads(full_file.read_text()) if full_file.is_file() else None
    missing = [t for t in types if t not in results]
    now = datetime.datetime.now()
    lines = [
        "# Open-set recognition: cells of a type never trained are flagged Other",
        "",
        f"Generated {now:%Y-%m-%d %H:%M} by `{shell_join(['python', '-m', __spec__.name, *argv])}`"
        f" from the runs in `{shown_path(runs)}` (driver: `python -m studies.open_set.open_set`).",
        "",
        "Each run trains the PBC classifier (`" + str(manifest["config"]) + "`, a short schedule)"
        " without one type; the threshold is chosen on the known types' val crops so that at most"
        f" {100 * float(manifest['max_known_lost']):.0f} % of them are flagged, and the share of"
        " the left-out type's val crops (30 per type in PBC val) below it is reported. The"
        " count uses the energy score"
        " (`logsumexp` of the logits; `bmc_detectron/evaluation/open_set.py`); max-softmax is shown"
        " for comparison. A cell flagged Other is listed apart from the uncertain cells and is in"
        " no percentage of the differential.",
        "",
        "## Targets",
        "",
        targets_table(results, full, manifest["targets"]),
        "",
        "## Leaving one type out",
        "",
        leave_out_table(results) if results else "No finished run yet.",
        "",
        f"Not finished yet: {', '.join(missing)}." if missing else "Every planned type is done.",
        "",
        "## The full model (composites + PBC)",
        "",
        "`" + str(manifest["full_config"]) + "`, its stored threshold applied to known-type crops:",
        "",
        full_table(full),
        "",
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(output, "\n".join(lines))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="the driver's --output folder")
    p.add_argument("--output", required=True, help="the page (.md)")
    args = p.parse_args(argv)
    print(write_page(Path(args.runs), Path(args.output), argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
