"""Tables and plots of an ablation (:mod:`studies.ablation.ablation`).

Every number comes from the run records (``run.json`` + ``coco_metrics.json`` of each run, see
:mod:`studies.ablation.runs`); this module only aggregates: means over seeds, per-class
tables, the effect of each component as paired differences over the seeds both configs finished
(with a 95 % t-interval), and the verdict on the accuracy target (full model vs the reference).
The reference is the row whose name is the reference config's stem (``reference`` below).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from bmc_detectron.bench.report import describe
from bmc_detectron.reporting.plots import grouped_bar_plot, scatter_plot
from bmc_detectron.reporting.tables import fmt, markdown_table
from bmc_detectron.utils.io import atomic_write_text
from bmc_detectron.utils.numbers import nanmean, nanstd

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
COST_KEYS = ("train_s", "eval_s", "latency_ms", "params_m", "gflops")


def _metric_keys(classes: Sequence[str]) -> List[str]:
    return list(METRICS) + [f"AP-{c}" for c in classes] + [f"AP50-{c}" for c in classes]


def summarize(records: List[Dict], classes: Sequence[str]) -> List[Dict[str, object]]:
    """One row per config: means over its successful seeds (and the per-seed values)."""
    rows = []
    for name in dict.fromkeys(r["name"] for r in records):
        runs = [r for r in records if r["name"] == name]
        ok = [r for r in runs if r.get("status") == "ok"]
        row = {"config": name, "seeds": [r["seed"] for r in runs], "seeds_ok": len(ok)}
        row["ok_seeds"] = [r["seed"] for r in ok]
        row["config_file"] = runs[0].get("config_file", "")
        row["description"] = describe(row["config_file"])
        for k in _metric_keys(classes):
            row[f"{k}/seeds"] = [r.get("metrics", {}).get(k) for r in ok]
            row[k] = nanmean(row[f"{k}/seeds"])
        row["AP_std"] = nanstd(row["AP/seeds"])
        for k in COST_KEYS:
            row[k] = nanmean([r.get(k) for r in ok])
        rows.append(row)
    return rows


def paired_differences(a: Mapping, b: Mapping, metric: str) -> List[float]:
    """``a - b`` in ``metric`` for every seed both rows finished (in ``a``'s seed order)."""
    va = dict(zip(a["ok_seeds"], a[f"{metric}/seeds"]))
    vb = dict(zip(b["ok_seeds"], b[f"{metric}/seeds"]))
    return [va[s] - vb[s] for s in va if s in vb and va[s] is not None and vb[s] is not None]


def paired_delta(a: Mapping, b: Mapping, metric: str) -> Tuple[float, int]:
    """Mean of ``a - b`` in ``metric`` over the seeds both rows finished, and how many."""
    diffs = paired_differences(a, b, metric)
    return nanmean(diffs), len(diffs)


def _t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (closed form in theta = atan(t/sqrt(df)))."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 0:  # s * (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2))
        term = total = 1.0
        for k in range(2, df - 1, 2):
            term *= c * c * (k - 1) / k
            total += term
        return s * total
    term = total = c  # odd df: 2/pi * (theta + s * (c + 2/3 c^3 + ... up to c^(df-2)))
    for k in range(3, df - 1, 2):
        term *= c * c * (k - 1) / k
        total += term
    return 2.0 / math.pi * (theta + (s * total if df > 1 else 0.0))


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| <= t) = ``level`` for Student's t with ``df`` degrees of freedom (e.g.
    4.303 for a 95 % interval with df = 2)."""
    lo, hi = 0.0, 1.0
    while _t_central_mass(hi, df) < level:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central_mass(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


def mean_interval(values: Sequence[float], level: float = 0.95) -> Tuple[float, float, float, int]:
    """(mean, low, high, n): the t-interval of the mean of ``values`` (NaN bounds if n < 2)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = statistics.fmean(values)
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = t_quantile(level, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def _signed(value: float) -> str:
    return "-" if value != value else f"{value:+.1f}"


def _interval_cell(mean: float, lo: float, hi: float, n: int) -> str:
    if n == 0:
        return "no common seed"
    if n < 2:
        return f"{_signed(mean)} (n={n}, no interval)"
    return f"{_signed(mean)} [{_signed(lo)}, {_signed(hi)}]"


def effects_table(summary: List[Dict], parents: Mapping[str, str], reference: str | None) -> str:
    """Markdown: each config's description and its paired mean ΔAP / ΔAP50 against its parent
    (``parents[config]``), the first config (the baseline) and the reference."""
    by_name = {s["config"]: s for s in summary}
    base = summary[0] if summary else None
    ref = by_name.get(reference or "")
    rows = []
    for s in summary:
        parent = by_name.get(parents.get(s["config"], ""))
        cells = [
            s["config"],
            s["description"].replace("|", "/"),
            parent["config"] if parent else "",
        ]
        for other in (parent, base, ref):
            if other is None or other is s:
                cells.append("")
                continue
            ap, n = paired_delta(s, other, "AP")
            ap50, _ = paired_delta(s, other, "AP50")
            cells.append(f"{_signed(ap)} / {_signed(ap50)} (n={n})" if n else "no common seed")
        rows.append(cells)
    headers = ["config", "what it is", "parent", "ΔAP / ΔAP50 vs parent"]
    headers += [f"vs baseline ({base['config'] if base else '-'})", "vs reference"]
    return markdown_table(headers, rows)


def interval_table(summary: List[Dict], parents: Mapping[str, str], reference: str | None) -> str:
    """Markdown: for each config vs its parent and vs the reference, the paired difference in AP
    and AP50 with its 95 % t-interval over the seeds both finished (n = number of such seeds)."""
    by_name = {s["config"]: s for s in summary}
    rows = []
    for s in summary:
        pairs = [(parents.get(s["config"]), "parent"), (reference, "reference")]
        for other_name, role in pairs:
            other = by_name.get(other_name or "")
            if other is None or other is s:
                continue
            ap = mean_interval(paired_differences(s, other, "AP"))
            ap50 = mean_interval(paired_differences(s, other, "AP50"))
            rows.append(
                [s["config"], f"{other['config']} ({role})", str(ap[3]), _interval_cell(*ap)]
                + [_interval_cell(*ap50)]
            )
    headers = ["config", "compared with", "n", "ΔAP [95 % CI]", "ΔAP50 [95 % CI]"]
    return markdown_table(headers, rows)


def target_verdict(
    summary: List[Dict],
    full: str,
    reference: str | None,
    min_ap: float,
    min_ap50: float | None = None,
) -> str:
    """Markdown line: does ``full`` beat the reference by ``min_ap`` AP (and by ``min_ap50``
    AP50 unless None), paired means over the seeds both finished?"""
    by_name = {s["config"]: s for s in summary}
    if full not in by_name or reference not in by_name:
        return f"- target not evaluated: `{full}` or the reference is not in this ablation"
    ap, n = paired_delta(by_name[full], by_name[reference], "AP")
    ap50, _ = paired_delta(by_name[full], by_name[reference], "AP50")
    met = n > 0 and ap >= min_ap and (min_ap50 is None or ap50 >= min_ap50)
    ap50_goal = "" if min_ap50 is None else f" (target ≥ {min_ap50:+.1f})"
    return (
        f"- full model `{full}` vs `{reference}` over {n} paired seed(s): "
        f"ΔAP {ap:+.2f} (target ≥ {min_ap:+.1f}), ΔAP50 {ap50:+.2f}{ap50_goal}"
        f" → **{'met' if met else 'not met'}**"
    )


def _cell(v: object) -> object:
    return "" if v is None or (isinstance(v, float) and v != v) else v


def write_csv(path: Path, records: List[Dict], summary: List[Dict], classes: Sequence[str]) -> None:
    """Per-run rows, then one ``seed=mean`` row per config."""
    keys = _metric_keys(classes)
    extra = ["train_s", "eval_s", "latency_ms", "latency_p90_ms", "params_m", "gflops"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["config", "seed", "status", *keys, *extra, "run_dir", "error"])
    for r in records:
        m = {k: _cell(v) for k, v in r.get("metrics", {}).items()}
        w.writerow(
            [r["name"], r["seed"], r.get("status"), *[m.get(k) for k in keys]]
            + [r.get(k) for k in extra]
            + [r["run_dir"], r.get("error", "")]
        )
    for s in summary:
        values = [_cell(s[k]) for k in keys] + [_cell(s.get(k)) for k in extra]
        w.writerow([s["config"], "mean", f"{s['seeds_ok']}/{len(s['seeds'])} ok", *values])
    atomic_write_text(path, buf.getvalue())


def _mean_table(summary: List[Dict]) -> str:
    rows = []
    for s in summary:
        ap = f"{fmt(s['AP'])} ± {fmt(s['AP_std'])}" if s["AP_std"] == s["AP_std"] else fmt(s["AP"])
        rows.append(
            [s["config"], f"{s['seeds_ok']}/{len(s['seeds'])}", ap, fmt(s["AP50"]), fmt(s["AP75"])]
            + [fmt(s["train_s"] / 60), fmt(s["latency_ms"]), fmt(s["params_m"], 2)]
            + [fmt(s["gflops"], 2)]
        )
    headers = ["config", "seeds ok", "AP", "AP50", "AP75", "train (min)", "latency (ms, batch 1)"]
    return markdown_table(headers + ["params (M)", "GFLOPs"], rows)


def _seed_table(records: List[Dict]) -> str:
    rows = []
    for r in records:
        m = r.get("metrics", {})
        rows.append(
            [r["name"], str(r["seed"]), r.get("status") or "?", fmt(m.get("AP"))]
            + [fmt(m.get("AP50")), fmt(m.get("AP75")), fmt(r.get("train_s"), 0)]
            + [fmt(r.get("eval_s"), 0), fmt(r.get("latency_ms")), fmt(r.get("threads"))]
        )
    headers = ["config", "seed", "status", "AP", "AP50", "AP75", "train (s)", "eval (s)"]
    return markdown_table(headers + ["latency (ms)", "torch threads"], rows)


def markdown_tables(
    records: List[Dict],
    summary: List[Dict],
    classes: Sequence[str],
    parents: Mapping[str, str] | None = None,
    full: str | None = None,
    targets: Tuple[float, ...] = (1.5, 2.0),
    reference: str | None = None,
    after_intervals: Sequence[str] = (),
) -> str:
    """Target verdict (with ``full``), component effects, paired intervals (then the sections
    ``after_intervals``), mean table, per-class AP / AP50 tables, per-seed table and unfinished
    runs, as markdown."""
    parents = parents or {}
    out = []
    if full:
        out += ["### Accuracy target\n", target_verdict(summary, full, reference, *targets) + "\n"]
    out += ["### Effect of each component (paired over seeds)\n"]
    out += [effects_table(summary, parents, reference) + "\n"]
    out += ["### Paired differences with 95 % intervals (t over the per-seed differences)\n"]
    out += [interval_table(summary, parents, reference) + "\n", *after_intervals]
    out += ["### Mean over seeds\n", _mean_table(summary)]
    for metric in ("AP", "AP50"):
        rows = [[s["config"], *[fmt(s[f"{metric}-{c}"]) for c in classes]] for s in summary]
        out += [f"\n### Per-class {metric} (mean over seeds)\n"]
        out += [markdown_table(["config", *classes], rows)]
    out += ["\n### Per seed\n", _seed_table(records)]
    failed = [
        [r["name"], str(r["seed"]), r.get("status") or "?"]
        + [str(r.get("error") or "").replace("|", "/")]
        for r in records
        if r.get("status") != "ok"
    ]
    if failed:
        out += ["\n### Runs without results\n"]
        out += [markdown_table(["config", "seed", "status", "error"], failed)]
    return "\n".join(out) + "\n"


def plot(out: Path, summary: List[Dict]) -> None:
    """``ap_per_config.png`` (mean AP/AP50/AP75 bars, per-seed dots) and ``ap_vs_latency.png``."""
    ok = [s for s in summary if s["seeds_ok"]]
    labels = [s["config"] for s in ok]
    series = {k: [s[k] for s in ok] for k in ("AP", "AP50", "AP75")}
    points = {k: [s[f"{k}/seeds"] for s in ok] for k in series}
    title = "AP per config (bars: mean over seeds, dots: seeds)"
    grouped_bar_plot(out / "ap_per_config.png", labels, series, points, "COCO AP (%)", title)
    yerr = [0.0 if s["AP_std"] != s["AP_std"] else s["AP_std"] for s in ok]
    latency = [s["latency_ms"] for s in ok]
    scatter_plot(
        out / "ap_vs_latency.png",
        latency,
        series["AP"],
        labels,
        yerr=yerr,
        xlabel="latency, batch 1 (ms)",
        ylabel="COCO AP (%)",
        title="AP vs latency\n(mean ± std over seeds; marker area = parameters)",
        sizes=[s["params_m"] for s in ok],
        size_label=" M params",
    )
