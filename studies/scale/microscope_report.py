"""The any-microscope benchmark's page: one table, one plot, the targets with verdicts (issue 31,
section 3), from the cases of :mod:`studies.scale.microscope_bench`.

Targets, all with the automatic scale on:

- recall and precision at every condition (each resize factor and each scanner degradation)
  >= 0.9 x their value at 1x, per dataset;
- the chosen scale within 15 % of the true one on >= 95 % of the cases;
- no case, at any condition, in which the count reported zero cells.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from bmc_detectron.reporting.plots import new_figure, save_figure
from bmc_detectron.reporting.tables import markdown_table
from studies.scale.microscope_bench import AUTO, CaseResult

RELATIVE_TARGET = 0.9
SCALE_TOLERANCE = 0.15
SCALE_SHARE = 0.95


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def scale_ok(r: CaseResult) -> bool:
    """The case's chosen scale is within the tolerance of the true one (False when unknown)."""
    if r.true_scale is None or not r.true_scale > 0:
        return False
    return abs(r.chosen_scale / r.true_scale - 1.0) <= SCALE_TOLERANCE


def aggregate(results: Sequence[CaseResult]) -> Dict[Tuple[str, str, str], Dict]:
    """Per (dataset, condition, auto): recall and precision pooled over the cases, cases, cases
    with the scale right and with zero cells; in the order the cases came."""
    out: Dict[Tuple[str, str, str], Dict] = {}
    for r in results:
        row = out.setdefault(
            (r.dataset, r.condition, r.auto),
            {"kind": r.kind, "value": r.value, "predicted": 0, "ground_truth": 0, "matched": 0,
             "cases": 0, "scale_ok": 0, "zero": 0, "fields": 0},
        )  # fmt: skip
        row["predicted"] += r.predicted
        row["ground_truth"] += r.ground_truth
        row["matched"] += r.matched
        row["fields"] += r.fields
        row["cases"] += 1
        row["scale_ok"] += scale_ok(r)
        row["zero"] += r.predicted == 0
    for row in out.values():
        row["recall"] = _ratio(row["matched"], row["ground_truth"])
        row["precision"] = _ratio(row["matched"], row["predicted"])
    return out


def _label(row: Dict) -> str:
    return f"{row['value']:g}x" if row["kind"] == "scale" else f"scanner {row['value']:g}x"


def _num(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def table(agg: Dict[Tuple[str, str, str], Dict]) -> str:
    """One row per dataset and condition: recall, precision (auto off / on), the scale's
    accuracy and the zero-cell cases (auto on)."""
    rows = []
    for (dataset, cond, auto), on in agg.items():
        if auto != "auto_on":
            continue
        off = agg.get((dataset, cond, "auto_off"), {})
        rows.append([
            dataset, _label(on), on["fields"], on["cases"],
            _num(off.get("recall", math.nan)), _num(on["recall"]),
            _num(off.get("precision", math.nan)), _num(on["precision"]),
            f"{on['scale_ok']}/{on['cases']}", f"{off.get('zero', 0)} / {on['zero']}",
        ])  # fmt: skip
    headers = ["data", "condition", "fields", "cases", "recall off", "recall auto",
               "precision off", "precision auto", f"scale within {SCALE_TOLERANCE:.0%} (auto)",
               "zero-cell cases off / auto"]  # fmt: skip
    return markdown_table(headers, rows)


def verdicts(agg: Dict[Tuple[str, str, str], Dict]) -> List[Tuple[str, str, bool]]:
    """(target, what was measured, met) for the three targets (module doc)."""
    on = {k: v for k, v in agg.items() if k[2] == "auto_on"}
    worst, met_rel = [], True
    for dataset in dict.fromkeys(k[0] for k in on):
        base = on.get((dataset, "scale_1", "auto_on"))
        if base is None:
            worst.append(f"{dataset}: no 1x condition")
            met_rel = False
            continue
        for metric in ("recall", "precision"):
            rel = {
                _label(v): _ratio(v[metric], base[metric]) for k, v in on.items() if k[0] == dataset
            }
            name, low = min(rel.items(), key=lambda kv: kv[1] if math.isfinite(kv[1]) else -1)
            met_rel &= math.isfinite(low) and low >= RELATIVE_TARGET
            worst.append(f"{dataset} {metric}: lowest {_num(low)} of 1x (at {name})")
    cases = sum(v["cases"] for v in on.values())
    ok = sum(v["scale_ok"] for v in on.values())
    zero = sum(v["zero"] for v in on.values())
    share = _ratio(ok, cases)
    return [
        (
            f"recall and precision >= {RELATIVE_TARGET:g} x their 1x value at every condition",
            "; ".join(worst),
            met_rel,
        ),
        (
            f"chosen scale within {SCALE_TOLERANCE:.0%} of the true one on >= "
            f"{SCALE_SHARE:.0%} of cases",
            f"{ok}/{cases} cases ({_num(share)})",
            math.isfinite(share) and share >= SCALE_SHARE,
        ),
        ("no case with zero cells reported", f"{zero} case(s) with zero cells", zero == 0),
    ]


def verdict_table(rows: Sequence[Tuple[str, str, bool]]) -> str:
    """The targets as a markdown table."""
    body = [[t, m, "met" if ok else "**not met**"] for t, m, ok in rows]
    return markdown_table(["target (automatic scale on)", "measured", "verdict"], body)


def plot(agg: Dict[Tuple[str, str, str], Dict], path: Path) -> Path:
    """Recall and precision against the resize factor (log axis), auto off dashed, auto on
    solid, one colour per dataset; the scanner degradations as markers at the right."""
    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    datasets = list(dict.fromkeys(k[0] for k in agg))
    colours = {d: f"C{i}" for i, d in enumerate(datasets)}
    for ax, metric in zip(axes, ("recall", "precision")):
        for dataset, auto in [(d, a) for d in datasets for a in AUTO]:
            pts = sorted(
                (v["value"], v[metric])
                for k, v in agg.items()
                if k[0] == dataset and k[2] == auto and v["kind"] == "scale"
            )
            style = "-" if auto == "auto_on" else "--"
            label = f"{dataset}, {auto.replace('_', ' ')}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o",
                    color=colours[dataset], label=label)  # fmt: skip
            scan = [(v["value"], v[metric]) for k, v in agg.items()
                    if k[0] == dataset and k[2] == auto and v["kind"] == "scanner"]  # fmt: skip
            for d, y in scan:
                x = 3.6 * (1.5 if d > 2 else 1.0)
                ax.plot([x], [y], marker="s" if auto == "auto_on" else "x",
                        color=colours[dataset], linestyle="none")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks([0.4, 0.5, 0.7, 1, 1.4, 2, 2.5, 3.6, 5.4])
        ax.set_xticklabels(["0.4", "0.5", "0.7", "1", "1.4", "2", "2.5", "scan\n2x", "scan\n4x"])
        ax.minorticks_off()
        ax.set_xlabel("field resized by (scanner: down and back up)")
        ax.set_title(f"count {metric} (IoU 0.5)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower center")
    return save_figure(fig, path)
