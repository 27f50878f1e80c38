"""Tables, plots and the results page of :mod:`bmc_detectron.tools.ablation`.

Every number comes from the run records (``run.json`` + ``coco_metrics.json`` of each run); this
module only aggregates: means over seeds, per-class tables, the effect of each component as
paired differences (over the seeds both configs finished), and the verdict on the accuracy target
(full model vs detectron2's reference).
"""

from __future__ import annotations

import csv
import datetime
import shutil
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from bmc_detectron.tools import _bench_utils as U

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
REFERENCE_NAME = "d2_RetinaNet_reference"
REFERENCE_OPTS = [
    "MODEL.META_ARCHITECTURE", "RetinaNet",
    "MODEL.BACKBONE.NAME", "build_retinanet_resnet_fpn_backbone",
]  # fmt: skip
REFERENCE_DESCRIPTION = "detectron2's own RetinaNet META_ARCH and stock FPN backbone"


def describe(config_file: str) -> str:
    """The first comment line of a config file (its one-line description), or ''."""
    try:
        lines = Path(config_file).read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def summarize(records: List[Dict], classes: Sequence[str]) -> List[Dict[str, object]]:
    """One row per config: means over its successful seeds (and the per-seed values)."""
    keys = list(METRICS) + [f"AP-{c}" for c in classes] + [f"AP50-{c}" for c in classes]
    rows = []
    for name in dict.fromkeys(r["name"] for r in records):
        runs = [r for r in records if r["name"] == name]
        ok = [r for r in runs if r.get("status") == "ok"]
        row = {"config": name, "seeds": [r["seed"] for r in runs], "seeds_ok": len(ok)}
        row["ok_seeds"] = [r["seed"] for r in ok]
        row["description"] = (
            REFERENCE_DESCRIPTION if name == REFERENCE_NAME else describe(runs[0]["config_file"])
        )
        for k in keys:
            row[f"{k}/seeds"] = [r.get("metrics", {}).get(k) for r in ok]
            row[k] = U.nanmean(row[f"{k}/seeds"])
        row["AP_std"] = U.nanstd(row["AP/seeds"])
        for k in ("train_s", "eval_s", "latency_ms", "params_m", "gflops"):
            row[k] = U.nanmean([r.get(k) for r in ok])
        rows.append(row)
    return rows


def paired_delta(a: Dict, b: Dict, metric: str) -> Tuple[float, int]:
    """Mean of ``a - b`` in ``metric`` over the seeds both rows finished, and how many."""
    va = dict(zip(a["ok_seeds"], a[f"{metric}/seeds"]))
    vb = dict(zip(b["ok_seeds"], b[f"{metric}/seeds"]))
    diffs = [va[s] - vb[s] for s in va if s in vb and va[s] is not None and vb[s] is not None]
    return U.nanmean(diffs), len(diffs)


def _signed(value: float) -> str:
    return "-" if value != value else f"{value:+.1f}"


def effects_table(summary: List[Dict], parents: Dict[str, str]) -> str:
    """Markdown: each config's description and its paired ΔAP / ΔAP50 against its parent
    (``parents[config]``), the first config (the baseline) and the reference."""
    by_name = {s["config"]: s for s in summary}
    base = summary[0] if summary else None
    ref = by_name.get(REFERENCE_NAME)
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
    headers = ["config", "what it is", "parent", "ΔAP / ΔAP50 vs parent",
               f"vs baseline ({base['config'] if base else '-'})", "vs reference"]  # fmt: skip
    return U.markdown_table(headers, rows)


def target_verdict(summary: List[Dict], full: str, min_ap: float, min_ap50: float) -> str:
    """Markdown lines: does ``full`` beat the reference by ``min_ap`` AP and ``min_ap50`` AP50
    (paired means over the seeds both finished)?"""
    by_name = {s["config"]: s for s in summary}
    if full not in by_name or REFERENCE_NAME not in by_name:
        return f"- target not evaluated: `{full}` or the reference is not in this ablation"
    ap, n = paired_delta(by_name[full], by_name[REFERENCE_NAME], "AP")
    ap50, _ = paired_delta(by_name[full], by_name[REFERENCE_NAME], "AP50")
    met = n > 0 and ap >= min_ap and ap50 >= min_ap50
    return (
        f"- full model `{full}` vs `{REFERENCE_NAME}` over {n} paired seed(s): "
        f"ΔAP {_signed(ap)} (target ≥ +{min_ap}), ΔAP50 {_signed(ap50)} (target ≥ +{min_ap50})"
        f" → **{'met' if met else 'not met'}**"
    )


def _cell(v: object) -> object:
    return "" if v is None or (isinstance(v, float) and v != v) else v


def write_csv(path: Path, records: List[Dict], summary: List[Dict], classes: Sequence[str]) -> None:
    """Per-run rows, then one ``seed=mean`` row per config."""
    keys = list(METRICS) + [f"AP-{c}" for c in classes] + [f"AP50-{c}" for c in classes]
    extra = ["train_s", "eval_s", "latency_ms", "latency_p90_ms", "params_m", "gflops"]
    header = ["config", "seed", "status", *keys, *extra, "run_dir", "error"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in records:
            m = {k: _cell(v) for k, v in r.get("metrics", {}).items()}
            w.writerow([r["name"], r["seed"], r.get("status"), *[m.get(k) for k in keys],
                        *[r.get(k) for k in extra], r["run_dir"], r.get("error", "")])  # fmt: skip
        for s in summary:
            values = [_cell(s[k]) for k in keys] + [_cell(s.get(k)) for k in extra]
            w.writerow([s["config"], "mean", f"{s['seeds_ok']}/{len(s['seeds'])} ok", *values])


def markdown_tables(
    records: List[Dict],
    summary: List[Dict],
    classes: Sequence[str],
    parents: Dict[str, str] | None = None,
    full: str | None = None,
    targets: Tuple[float, float] = (1.5, 2.0),
) -> str:
    """Target verdict (with ``full``), component effects, mean table, per-class AP / AP50
    tables, per-seed table and unfinished runs, as markdown."""
    f = U.fmt
    head = []
    if full:
        head += ["### Accuracy target\n", target_verdict(summary, full, *targets) + "\n"]
    head += ["### Effect of each component (paired over seeds)\n",
             effects_table(summary, parents or {}) + "\n"]  # fmt: skip
    main = [
        [s["config"], f"{s['seeds_ok']}/{len(s['seeds'])}",
         f"{f(s['AP'])} ± {f(s['AP_std'])}" if s["AP_std"] == s["AP_std"] else f(s["AP"]),
         f(s["AP50"]), f(s["AP75"]), f(s["train_s"] / 60), f(s["latency_ms"]),
         f(s["params_m"], 2), f(s["gflops"], 2)]
        for s in summary
    ]  # fmt: skip
    out = head + ["### Mean over seeds\n", U.markdown_table(
        ["config", "seeds ok", "AP", "AP50", "AP75", "train (min)", "latency (ms, batch 1)",
         "params (M)", "GFLOPs"], main)]  # fmt: skip
    for metric in ("AP", "AP50"):
        rows = [[s["config"], *[f(s[f"{metric}-{c}"]) for c in classes]] for s in summary]
        out += [f"\n### Per-class {metric} (mean over seeds)\n",
                U.markdown_table(["config", *classes], rows)]  # fmt: skip
    seed_rows = []
    for r in records:
        m = r.get("metrics", {})
        seed_rows.append([r["name"], str(r["seed"]), r.get("status") or "?", f(m.get("AP")),
                          f(m.get("AP50")), f(m.get("AP75")), f(r.get("train_s"), 0),
                          f(r.get("eval_s"), 0), f(r.get("latency_ms")),
                          f(r.get("threads"))])  # fmt: skip
    out += ["\n### Per seed\n", U.markdown_table(
        ["config", "seed", "status", "AP", "AP50", "AP75", "train (s)", "eval (s)",
         "latency (ms)", "torch threads"], seed_rows)]  # fmt: skip
    failed = [[r["name"], str(r["seed"]), r.get("status") or "?",
               str(r.get("error") or "").replace("|", "/")]
              for r in records if r.get("status") != "ok"]  # fmt: skip
    if failed:
        out += ["\n### Runs without results\n",
                U.markdown_table(["config", "seed", "status", "error"], failed)]  # fmt: skip
    return "\n".join(out) + "\n"


def plot(out: Path, summary: List[Dict]) -> None:
    """``ap_per_config.png`` (mean AP/AP50/AP75 bars, per-seed dots) and ``ap_vs_latency.png``."""
    ok = [s for s in summary if s["seeds_ok"]]
    labels = [s["config"] for s in ok]
    series = {k: [s[k] for s in ok] for k in ("AP", "AP50", "AP75")}
    points = {k: [s[f"{k}/seeds"] for s in ok] for k in series}
    U.grouped_bar_plot(out / "ap_per_config.png", labels, series, points, "COCO AP (%)",
                       "AP per config (bars: mean over seeds, dots: seeds)")  # fmt: skip
    U.scatter_plot(out / "ap_vs_latency.png", [s["latency_ms"] for s in ok], series["AP"], labels,
                   yerr=[0.0 if s["AP_std"] != s["AP_std"] else s["AP_std"] for s in ok],
                   xlabel="latency, batch 1 (ms)", ylabel="COCO AP (%)",
                   title="AP vs latency (mean ± std over seeds)")  # fmt: skip


def write_report(
    path: Path, out: Path, tables: str, records: List[Dict], args, wall_s: float, sched: List[str]
) -> None:
    """Regenerate the results page: setup, tables, plots, machine, wall times, commands."""
    # The plots go next to the report, so that a committed report keeps them (run folders are
    # usually git-ignored).
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("ap_per_config.png", "ap_vs_latency.png"):
        if (out / name).is_file():
            shutil.copyfile(out / name, path.parent / name)
    m = U.machine_info()
    cmds = (out / "commands.txt").read_text().strip().splitlines()
    specs = {(r["name"], r["seed"]): r for r in records}
    lines = [
        "# Ablation results\n",
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `bmc_detectron.tools.ablation` from"
        f" the runs in `{out}`; every number below was measured by those runs.\n",
        "## Setup\n",
        f"- train `{args.train_dataset}`, test `{args.test_dataset}`, {args.num_classes} classes,"
        f" seeds {list(args.seeds)}",
        f"- schedule passed to every run: `{' '.join(sched)}`",
        f"- overrides for every run: `{' '.join(args.opts) or 'none'}`",
        f"- `--reference`: {REFERENCE_NAME} = the first config + `{' '.join(REFERENCE_OPTS)}`"
        if args.reference else "- no reference run",
        *([Path(args.notes).read_text().strip() + "\n"] if getattr(args, "notes", None) else []),
        "\n## Results\n", tables,
        "![AP per config](ap_per_config.png)\n",
        "![AP vs latency](ap_vs_latency.png)\n",
        "## Machine\n",
        f"- CPU: {m['cpu']}, {m['usable_cores']} usable cores ({m['logical_cores']} logical),"
        f" {m['memory_gb']} GB RAM; GPU: {m['gpu'] or 'none'}",
        f"- torch {m['torch']} (threads per run: see the per-seed table),"
        f" detectron2 {m['detectron2']},"
        f" Python {m['python']}, {m['platform']}; 1-min load average at report time"
        f" {m['load_avg_1m']}",
        "\n## Wall times\n",
        f"- this invocation: {wall_s / 60:.1f} min; all runs: "
        f"{sum(r.get('wall_s') or 0 for r in records) / 60:.1f} min (train + eval + timing)",
        "\n## Commands\n", "Ablation invocations (in order):\n", "```", *cmds, "```\n",
        "Per run (the worker command; the equivalent detectron2-style training command):\n",
    ]  # fmt: skip
    for (name, seed), r in specs.items():
        lines += [f"- `{name}` seed {seed}: `{r.get('command')}`",
                  f"  - `{r.get('train_net_command')}`"]  # fmt: skip
    for extra in getattr(args, "extra", []):
        body = Path(extra).read_text().strip()
        lines += [f"\n## Included: `{extra}`\n", body.replace("\n# ", "\n### ")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
