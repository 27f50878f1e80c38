"""Accuracy against training budget: the detectors' AP at several schedules, one table and plot.

    python -m studies.budget.budget --runs output/budget \
        --output docs/results/budget/RESULTS_budget.md
    python -m studies.budget.budget --list-tasks     # BUDGET:CONFIG:SEED of every planned run

Reads the finished runs of ``<runs>/budget_<iterations>/runs/<config>/seed<S>/`` (written by
``studies/budget/budget.sh`` through the ablation runner: ``inference/<test>/coco_metrics.json``
and ``run.json``), and writes a page with, per detector and budget, the mean AP / AP50 / AP75
over the finished seeds (with their spread and count), the training time, the runs' own batch-1
latency, the planned runs' status (:func:`studies.status.study_status`), and a plot of AP against
the budget beside the page (``<page stem>_ap_vs_budget.png``). With ``--latency`` (the
``latency.json`` of ``python -m bmc_detectron.analysis_tools.benchmark --configs ...`` on the
detectors' trained weights, side by side in one process) the page shows that table and the
verdict's latency ratio is read from it instead of from the runs' own timing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from bmc_detectron.reporting.plots import new_figure, save_figure
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.reporting.tables import fmt, markdown_table
from bmc_detectron.reporting.timing import training_sessions
from bmc_detectron.utils.io import atomic_write_text, shown_path
from studies.ablation.report import mean_interval
from studies.pages import write_block
from studies.status import load_manifest, planned_runs, study_status

MANIFEST = Path(__file__).with_name("study.yaml")
METRICS = ("AP", "AP50", "AP75")


@dataclass(frozen=True)
class BudgetRun:
    """One finished run: its detector, budget (iterations), seed and what it measured."""

    config: str
    budget: int
    seed: int
    metrics: Mapping[str, float]
    train_s: Optional[float]
    latency_ms: Optional[float]


def planned_tasks(manifest: Mapping[str, object]) -> List[str]:
    """``BUDGET:CONFIG:SEED`` of every planned run, seed-major so early seeds finish first."""
    budgets = [int(b) for b in manifest.get("budgets") or []]
    plan = planned_runs(manifest)
    seeds = sorted({s for _, ss in plan for s in ss})
    return [f"{b}:{name}:{s}" for s in seeds for b in budgets for name, ss in plan if s in ss]


def collect(runs_root: Path, manifest: Mapping[str, object]) -> List[BudgetRun]:
    """Every finished run of the manifest's budgets and configs below ``runs_root``."""
    test = str(manifest.get("test_dataset"))
    out = []
    for budget in [int(b) for b in manifest.get("budgets") or []]:
        for name, _ in planned_runs(manifest):
            for seed_dir in sorted((runs_root / f"budget_{budget}" / "runs" / name).glob("seed*")):
                metrics_file = seed_dir / "inference" / test / "coco_metrics.json"
                if not metrics_file.is_file() or not seed_dir.name[4:].isdigit():
                    continue
                box = json.loads(metrics_file.read_text())["bbox"]
                run_file = seed_dir / "run.json"
                run = json.loads(run_file.read_text()) if run_file.is_file() else {}
                run["train_s"] = train_seconds(seed_dir, budget, run.get("train_s"))
                out.append(
                    BudgetRun(
                        name,
                        budget,
                        int(seed_dir.name[4:]),
                        {k: float(box[k]) for k in METRICS}
                        | {k: float(v) for k, v in box.items() if k.startswith("AP-")},
                        run.get("train_s"),
                        run.get("latency_ms"),
                    )
                )
    return out


def train_seconds(run_dir: Path, budget: int, fallback: Optional[float]) -> Optional[float]:
    """The whole run's training time: every session of its ``log.txt`` (a resumed run has
    several; ``run.json`` times the last one only), scaled to ``budget`` iterations when a
    killed session left no line (same speed assumed); ``fallback`` when the log has none."""
    sessions = training_sessions(run_dir / "log.txt")
    iters = sum(s["iterations"] for s in sessions)
    if not iters:
        return fallback
    return sum(s["seconds"] for s in sessions) * budget / iters


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.mean(values))} ± {fmt(statistics.stdev(values))}"


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def budget_table(runs: Sequence[BudgetRun], configs: Sequence[str], budgets: Sequence[int]) -> str:
    """Markdown: a row per detector and budget (seeds, AP / AP50 / AP75 mean ± sd, cost)."""
    rows = []
    for name in configs:
        for budget in budgets:
            group = [r for r in runs if r.config == name and r.budget == budget]
            if not group:
                continue
            train = _median([r.train_s for r in group])
            rows.append(
                [f"`{name}`", budget, ", ".join(str(r.seed) for r in group)]
                + [_mean_sd([r.metrics[m] for r in group]) for m in METRICS]
                + [fmt(train / 60 if train else None), fmt(_median([r.latency_ms for r in group]))]
            )
    headers = ["detector", "iterations", "seeds", *METRICS, "train min", "latency ms"]
    return markdown_table(headers, rows)


def _mean_ap(
    runs: Sequence[BudgetRun], name: str, budget: int, metric: str = "AP"
) -> Optional[float]:
    group = [r.metrics[metric] for r in runs if r.config == name and r.budget == budget]
    return statistics.mean(group) if group else None


def class_names(runs: Sequence[BudgetRun]) -> List[str]:
    """The classes every run has a per-class AP of (``AP-<class>``), in the first run's order."""
    keys = [k for k in (runs[0].metrics if runs else {}) if k.startswith("AP-")]
    return [k[3:] for k in keys if all(k in r.metrics for r in runs)]


def class_table(runs: Sequence[BudgetRun], configs: Sequence[str], budgets: Sequence[int]) -> str:
    """Markdown: the mean AP of each class, a row per detector and budget."""
    names = class_names(runs)
    rows = [
        [f"`{n}`", b, _seeds(runs, n, b)] + [fmt(_mean_ap(runs, n, b, f"AP-{c}")) for c in names]
        for n in configs
        for b in budgets
        if _seeds(runs, n, b)
    ]
    return markdown_table(["detector", "iterations", "n", *names], rows) if names else ""


def _class_gaps(runs: Sequence[BudgetRun], a: str, b: str, budget: int) -> str:
    """ "; by class: RBC +x.x, ..." (``a`` - ``b``, mean APs; "" without per-class APs)."""
    gaps = [
        f"{c} {x - y:+.1f}"
        for c in class_names(runs)
        if (x := _mean_ap(runs, a, budget, f"AP-{c}")) is not None
        and (y := _mean_ap(runs, b, budget, f"AP-{c}")) is not None
    ]
    return f"; by class {', '.join(gaps)}" if gaps else ""


def _seeds(runs: Sequence[BudgetRun], name: str, budget: int) -> int:
    return sum(1 for r in runs if r.config == name and r.budget == budget)


def _paired(runs: Sequence[BudgetRun], a: str, b: str, budget: int) -> str:
    """ "; paired by seed (n=K): +x.x [lo, hi]": the 95 % t-interval of ``a`` - ``b`` over the
    seeds both finished at ``budget`` ("" for fewer than two)."""
    ap = {(r.config, r.seed): r.metrics["AP"] for r in runs if r.budget == budget}
    diffs = [ap[(a, s)] - ap[(b, s)] for (c, s) in ap if c == a and (b, s) in ap]
    if len(diffs) < 2:
        return ""
    mean, lo, hi, n = mean_interval(diffs)
    return f"; paired by seed (n={n}): {mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _trend(gaps: Sequence[tuple]) -> str:
    """How the lead changes from the smallest to the largest budget both detectors reached."""
    if len(gaps) < 2:
        return "measured at one budget only: whether it closes with training is not known yet"
    (b0, g0), (b1, g1) = gaps[0], gaps[-1]
    change = f"{g0:+.1f} -> {g1:+.1f} AP from {b0} to {b1} iterations"
    if g1 <= 0:
        return f"closes ({change}): a short-schedule effect"
    if g1 <= g0 / 2:
        return f"more than halves ({change}): mostly a short-schedule effect"
    return f"less than halves ({change}): mostly structural at these budgets"


def side_by_side_ratio(latency: Optional[Mapping], model: str, peer: str) -> Optional[float]:
    """``model``'s median batch-1 latency over ``peer``'s in a side-by-side record (None when
    either is missing)."""
    medians = {m["name"]: m["median_ms"] for m in (latency or {}).get("models", [])}
    if model in medians and peer in medians:
        return medians[model] / medians[peer]
    return None


def verdict(
    runs: Sequence[BudgetRun],
    configs: Sequence[str],
    budgets: Sequence[int],
    model: str,
    peer: str,
    latency: Optional[Mapping] = None,
) -> str:
    """Markdown bullets written from the runs: the best detector at each budget, and ``peer``'s
    lead over ``model`` (AP, latency) at each budget both reached, with its trend. The latency
    ratio comes from the side-by-side record ``latency`` when it has both, else from the runs'
    own timing."""
    lines = []
    side = side_by_side_ratio(latency, model, peer)
    for b in budgets:
        ranked = sorted(
            ((ap, n) for n in configs if (ap := _mean_ap(runs, n, b)) is not None), reverse=True
        )
        if ranked:
            order = " > ".join(f"`{n}` {fmt(ap)} (n={_seeds(runs, n, b)})" for ap, n in ranked)
            which = "best" if len(ranked) == len(configs) else f"best of {len(ranked)} finished"
            lines.append(f"- **{b} iterations**: {which} `{ranked[0][1]}`; {order}.")
    gaps = []
    for b in budgets:
        ours, theirs = _mean_ap(runs, model, b), _mean_ap(runs, peer, b)
        if ours is None or theirs is None:
            continue
        gaps.append((b, theirs - ours))
        lat = [_median([r.latency_ms for r in runs if r.config == n]) for n in (model, peer)]
        if side is not None:
            ratio = f"; `{model}`'s latency {fmt(side, 2)}x (side by side)"
        else:
            ratio = f"; `{model}`'s latency {fmt(lat[0] / lat[1], 2)}x" if None not in lat else ""
        lines.append(
            f"- `{peer}` - `{model}` at {b} iterations: {theirs - ours:+.1f} AP "
            f"(n={_seeds(runs, peer, b)} / {_seeds(runs, model, b)}"
            f"{_paired(runs, peer, model, b)}{_class_gaps(runs, peer, model, b)}){ratio}."
        )
    if gaps:
        lines.append(f"- `{peer}`'s lead {_trend(gaps)}.")
        best_b = max(budgets, key=lambda b: _mean_ap(runs, model, b) or -1.0)
        first = next(b for b in budgets if _mean_ap(runs, peer, b) is not None)
        ours, theirs = _mean_ap(runs, model, best_b), _mean_ap(runs, peer, first)
        reached = "reaches" if ours >= theirs else "stays below"
        lines.append(
            f"- `{model}`'s best ({fmt(ours)} AP at {best_b} iterations) {reached} `{peer}` at "
            f"{first} iterations ({fmt(theirs)} AP)."
        )
    return "\n".join(lines) if lines else "- no finished run yet"


def plot_budget(
    runs: Sequence[BudgetRun], configs: Sequence[str], path: Path, dataset: str = "val"
) -> Path:
    """AP against the budget: a line through each detector's means, its seeds as dots."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for name in configs:
        mine = [r for r in runs if r.config == name]
        if not mine:
            continue
        budgets = sorted({r.budget for r in mine})
        means = [statistics.mean(r.metrics["AP"] for r in mine if r.budget == b) for b in budgets]
        (line,) = ax.plot(budgets, means, marker="o", label=name)
        ax.scatter(
            [r.budget for r in mine],
            [r.metrics["AP"] for r in mine],
            s=12,
            alpha=0.5,
            color=line.get_color(),
        )
    ax.set_xlabel("training iterations (batch 4)")
    ax.set_ylabel(f"COCO AP on {dataset} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


#: The block of the results index that the verdict is written into (``--index``).
INDEX_START = "<!-- budget verdict: generated by python -m studies.budget.budget -->"
INDEX_END = "<!-- /budget verdict -->"


def write_index_verdict(index: Path, text: str, page: str) -> None:
    """Replace the block between :data:`INDEX_START` and :data:`INDEX_END` of ``index`` with
    ``text`` (the verdict) and a link to ``page``; a clear error names the file when the block
    is missing."""
    write_block(index, INDEX_START, INDEX_END, f"{text}\n\n(From [the budget page]({page}).)")


def latency_section(latency: Optional[Mapping]) -> str:
    """The side-by-side latency table and the command that measured it ("" without one)."""
    if not latency:
        return ""
    return (
        "## Latency, side by side\n\n"
        f"Measured {latency.get('date', '')} by `{latency.get('command', '')}` (trained weights, "
        "every model in one process, interleaved rounds): the verdict's latency ratio is read "
        "from here.\n\n" + str(latency["markdown"]).strip() + "\n\n"
    )


def write_page(
    runs_root: Path,
    output: Path,
    argv: Sequence[str],
    latency: Optional[Mapping] = None,
    index: Optional[Path] = None,
) -> Path:
    """The results page (and its plot beside it) from the runs that exist; with ``index``, the
    verdict also goes into that page's generated block (:func:`write_index_verdict`)."""
    manifest = load_manifest(shown_path(MANIFEST))
    configs = [name for name, _ in planned_runs(manifest)]
    budgets = [int(b) for b in manifest.get("budgets") or []]
    runs = collect(runs_root, manifest)
    plot = plot_budget(
        runs,
        configs,
        output.with_name(f"{output.stem}_ap_vs_budget.png"),
        str(manifest["test_dataset"]),
    )
    said = verdict(runs, configs, budgets, str(manifest["model"]), str(manifest["peer"]), latency)
    now = datetime.datetime.now()
    status = "\n".join(
        f"### {b} iterations\n\n" + study_status(manifest, runs_root / f"budget_{b}")
        for b in budgets
    )
    text = (
        f"# {manifest['title']}\n\n"
        f"Generated {now:%Y-%m-%d %H:%M} by `{shell_join(['python', '-m', __spec__.name, *argv])}`"
        f" from the runs in `{runs_root}`; every number below was measured by those runs.\n\n"
        "## Setup\n\n"
        f"- BCCD `train` -> `{manifest['test_dataset']}`, 3 classes; budgets {budgets} "
        "iterations at batch 4, the schedule scaled (LR steps at 75 % and 90 %, warm-up 100);\n"
        "  bf16 + channels-last, one thread per run (`studies/budget/budget.sh`).\n"
        "- *latency ms*: the median of the runs' own batch-1 timing, taken while other runs "
        "shared the machine: compare within a row, not across pages.\n"
        "- *train min*: every training session in the run's log (resumed runs have several), "
        "scaled to the budget when a killed session left no timing; runs shared the machine.\n"
        "- *n*: the seeds finished.\n\n"
        f"## AP against budget\n\n![AP against budget]({plot.name})\n\n"
        + budget_table(runs, configs, budgets)
        + "\n\nAP of each class (mean over the seeds):\n\n"
        + class_table(runs, configs, budgets)
        + "\n\n## Verdict (generated from the runs above)\n\n"
        + said
        + "\n\nFew seeds make these rankings provisional: the status below says which runs "
        "are still missing.\n\n" + latency_section(latency) + "## Status\n\n" + status
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, text)
    if index is not None:
        write_index_verdict(index, said, os.path.relpath(output, index.parent))
    return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="output/budget", help="the runs root (budget_<N>/ inside)")
    p.add_argument("--output", default="docs/results/budget/RESULTS_budget.md")
    p.add_argument("--list-tasks", action="store_true", help="print the planned runs and stop")
    p.add_argument("--latency", help="a side-by-side latency.json of the detectors (benchmark)")
    p.add_argument("--index", help="also write the verdict into this page's generated block")
    args = p.parse_args(argv)
    if args.list_tasks:
        print("\n".join(planned_tasks(load_manifest(MANIFEST))))
        return 0
    latency = None
    if args.latency:
        path = Path(args.latency)
        if not path.is_file():
            print(f"error: {path}: no such latency record", file=sys.stderr)
            return 2
        latency = json.loads(path.read_text())
    index = Path(args.index) if args.index else None
    try:
        page = write_page(Path(args.runs), Path(args.output), argv, latency, index)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if index is not None:
        print(f"[budget] verdict written into {index}")
    print(f"[budget] wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
