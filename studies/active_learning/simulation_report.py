"""The results page of an active-learning simulation (:mod:`.simulation`).

Everything is computed from the ``round.json`` records: a table (strategy x round: labelled
images and boxes, AP and AP50 as the mean over seeds and per seed), the paired difference of each
strategy against random per seed (final round, and averaged over the acquisition rounds), a
verdict computed from those numbers, and two figures beside the page, named after it:
``<stem>_images.png`` (AP and AP50 against labelled images) and ``<stem>_boxes.png`` (against
labelled boxes).
"""

from __future__ import annotations

import datetime
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from bmc_detectron.reporting.plots import pyplot, save_figure
from bmc_detectron.reporting.provenance import machine_info
from bmc_detectron.reporting.tables import fmt, markdown_table
from bmc_detectron.utils.io import atomic_write_text
from bmc_detectron.utils.numbers import nanmean
from studies.active_learning.simulation import INITIAL, STRATEGY_SETTINGS, SimSettings, round_dir

METRICS = ("AP", "AP50")
BASELINE = "random"
READING = (
    "- A seed fixes the initial set and every training's SEED, so a paired difference compares"
    " strategies on the same start; with few seeds and a short schedule a gap of a couple of AP"
    " points can still be chance: read the per-seed columns.",
    "- Δ boxes: labelled boxes more than random's at the final round, for the same number of"
    " images. A strategy that picks crowded fields labels more cells per image; the figure against"
    " labelled boxes compares at equal box-labelling effort.",
)


def collect_records(settings: SimSettings) -> List[Dict[str, object]]:
    """``round.json`` of every finished round of the settings' seeds, strategies and rounds."""
    out, records = Path(settings.output), []
    for seed in settings.seeds:
        folders = [round_dir(out, seed, INITIAL, 0)]
        for strategy in settings.strategies:
            folders += [round_dir(out, seed, strategy, k) for k in range(1, settings.rounds + 1)]
        files = [f / "round.json" for f in folders]
        records += [json.loads(f.read_text()) for f in files if f.is_file()]
    return records


def curve(records: Sequence[Mapping], strategy: str) -> Dict[int, List[Mapping]]:
    """Round -> the records of ``strategy`` (round 0: the shared initial rounds), seed order."""
    out: Dict[int, List[Mapping]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["seed"]):
        if r["strategy"] == strategy or (r["round"] == 0 and r["strategy"] == INITIAL):
            out[int(r["round"])].append(r)
    return dict(sorted(out.items()))


def _mean(recs: Sequence[Mapping], key: str) -> float:
    return nanmean([r.get(key) for r in recs])


def _per_seed(recs: Sequence[Mapping], key: str) -> str:
    return " / ".join(f"{r['seed']}: {fmt(r.get(key))}" for r in recs)


def results_table(records: Sequence[Mapping], strategies: Sequence[str]) -> str:
    """Markdown: strategy x round, labelled images and boxes, AP and AP50 (mean, per seed)."""
    headers = ["strategy", "round", "images", "boxes", "AP", "AP per seed", "AP50"]
    headers += ["AP50 per seed", "seeds"]
    rows = []
    for s in strategies:
        for k, recs in curve(records, s).items():
            row = [s, str(k), fmt(_mean(recs, "n_images"), 0), fmt(_mean(recs, "n_boxes"), 0)]
            row += [_mean(recs, "AP"), _per_seed(recs, "AP"), _mean(recs, "AP50")]
            rows.append(row + [_per_seed(recs, "AP50"), str(len(recs))])
    return markdown_table(headers, rows)


def final_round(records: Sequence[Mapping]) -> int:
    """The last round any strategy finished."""
    return max((int(r["round"]) for r in records), default=0)


def paired(
    records: Sequence[Mapping], strategy: str, key: str, rounds: Sequence[int]
) -> Dict[int, float]:
    """Seed -> ``strategy - random`` in ``key``, averaged over ``rounds`` (seeds with every
    round of both)."""
    mine, base = curve(records, strategy), curve(records, BASELINE)
    diffs: Dict[int, List[float]] = defaultdict(list)
    for k in rounds:
        a = {r["seed"]: r.get(key) for r in mine.get(k, [])}
        b = {r["seed"]: r.get(key) for r in base.get(k, [])}
        for seed in a:
            if a[seed] is not None and b.get(seed) is not None:
                diffs[seed].append(float(a[seed]) - float(b[seed]))
    return {s: nanmean(d) for s, d in sorted(diffs.items()) if len(d) == len(rounds)}


def _signed(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:+.{digits}f}"


def differences_table(records: Sequence[Mapping], strategies: Sequence[str]) -> str:
    """Markdown: per strategy and seed, the paired difference against random at the final
    round (boxes, AP, AP50) and averaged over rounds 1..final (AP, AP50)."""
    final = final_round(records)
    every = list(range(1, final + 1))
    columns = [("n_boxes", [final], 0), ("AP", [final], 1), ("AP50", [final], 1)]
    columns += [("AP", every, 1), ("AP50", every, 1)]
    headers = ["strategy", "seed", "Δ boxes", "Δ AP", "Δ AP50", "Δ AP, mean of rounds 1-R"]
    headers.append("Δ AP50, mean of rounds 1-R")
    rows = []
    for s in (s for s in strategies if s != BASELINE):
        diffs = [(paired(records, s, key, rounds), digits) for key, rounds, digits in columns]
        for seed in diffs[1][0]:
            cells = [_signed(d.get(seed, float("nan")), digits) for d, digits in diffs]
            rows.append([s, str(seed), *cells])
        means = [_signed(nanmean(list(d.values())), digits) for d, digits in diffs]
        rows.append([f"**{s}**", f"mean of {len(diffs[1][0])} seeds", *means])
    return markdown_table(headers, rows)


def _best(means: Mapping[str, Mapping[str, float]], metric: str) -> str:
    """The strategy with the highest (non-NaN) mean ``metric``."""
    return max(
        means, key=lambda s: means[s][metric] if means[s][metric] == means[s][metric] else -1e9
    )


def _leader(records: Sequence[Mapping], strategies: Sequence[str], final: int) -> List[str]:
    """Sentences naming the strategy with the highest mean AP and AP50 at the final round."""
    means = {}
    for s in strategies:
        recs = curve(records, s).get(final, [])
        if recs:
            means[s] = {m: _mean(recs, m) for m in METRICS}
    if not means:
        return ["No round has finished yet."]
    ap, ap50 = _best(means, "AP"), _best(means, "AP50")
    n_images = fmt(_mean(curve(records, ap)[final], "n_images"), 0)
    head = f"At the final round (round {final}, {n_images} labelled images)"
    if ap == ap50:
        return [
            f"{head} **{ap}** came out ahead: mean AP {fmt(means[ap]['AP'])}, "
            f"AP50 {fmt(means[ap]['AP50'])}."
        ]
    return [
        f"{head} **{ap}** has the highest mean AP ({fmt(means[ap]['AP'])}) and **{ap50}** the "
        f"highest mean AP50 ({fmt(means[ap50]['AP50'])})."
    ]


def versus_random(records: Sequence[Mapping], strategy: str, final: int) -> Dict[str, object]:
    """``strategy`` against random at round ``final``: mean paired ΔAP / ΔAP50, the number of
    paired seeds and whether it is ahead in both metrics on every one of them."""
    d = {m: paired(records, strategy, m, [final]) for m in METRICS}
    seeds = sorted(set(d["AP"]) & set(d["AP50"]))
    out: Dict[str, object] = {m: nanmean([d[m][x] for x in seeds]) for m in METRICS}
    out.update(
        n=len(seeds), every_seed=bool(seeds) and all(d[m][x] > 0 for m in METRICS for x in seeds)
    )
    out["text"] = (
        f"{strategy} (ΔAP {_signed(out['AP'])}, ΔAP50 {_signed(out['AP50'])}, {len(seeds)} seeds)"
    )
    return out


def verdict(records: Sequence[Mapping], strategies: Sequence[str]) -> List[str]:
    """The plain-language result: who is ahead at the final round, and whether an active
    strategy beats random in both AP and AP50 on every one of at least two seeds."""
    final = final_round(records)
    lines = _leader(records, strategies, final)
    active = [s for s in strategies if s != BASELINE]
    if BASELINE not in strategies or not active or final == 0:
        return lines + [
            "There is no acquisition round of random and an active strategy to compare."
        ]
    results = [versus_random(records, s, final) for s in active]
    wins = [r["text"] for r in results if r["every_seed"] and r["n"] >= 2]
    ahead = [r["text"] for r in results if r["n"] and all(r[m] > 0 for m in METRICS)]
    if wins:
        lines.append(
            f"**Active selection beats random here**: {', '.join(wins)}: ahead of random in AP "
            "and AP50 at the final round on every seed."
        )
    elif ahead:
        lines.append(
            f"**Active selection does not clearly beat random here**: {', '.join(ahead)}: ahead "
            "of random in mean AP and AP50 at the final round, but not on every one of at least "
            "two seeds, which does not set it apart from seed-to-seed variation."
        )
    else:
        lines.append(
            "**Active selection does not beat random here**: no active strategy is ahead of "
            "random in both mean AP and mean AP50 at the final round."
        )
    return lines


def plot_curves(
    path: Path, records: Sequence[Mapping], strategies: Sequence[str], x_key: str, what: str
) -> None:
    """PNG: AP and AP50 against ``x_key`` (labelled images or boxes); per strategy a line
    through the means over seeds and the per-seed points."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, metric in zip(axes, METRICS):
        for j, s in enumerate(strategies):
            rounds = list(curve(records, s).values())
            xs = [_mean(recs, x_key) for recs in rounds]
            ax.plot(xs, [_mean(recs, metric) for recs in rounds], "-o", color=f"C{j}", label=s)
            pts = [
                (r[x_key], r[metric]) for recs in rounds for r in recs if r.get(metric) is not None
            ]
            if pts:
                ax.scatter(*zip(*pts), color=f"C{j}", marker="x", s=18, alpha=0.5)
        ax.set_xlabel(f"labelled {what}")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs labelled {what} (line: mean over seeds, x: each seed)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120, crop=False)


def _setup_lines(
    settings: SimSettings, pool_size: Optional[Sequence[int]], schedule: Sequence[str]
) -> List[str]:
    pool = f" ({pool_size[0]} images, {pool_size[1]} boxes)" if pool_size else ""
    strategies = [
        f"`{s}` ({', '.join(f'{k} {v}' for k, v in STRATEGY_SETTINGS.get(s, {}).items())})"
        for s in settings.strategies
    ]
    return [
        f"- pool (its labels play the expert): `{settings.train_dataset}`{pool}; "
        f"evaluated on `{settings.test_dataset}` ({settings.num_classes} classes)",
        f"- config: `{settings.config_file}`; overrides: `{' '.join(settings.opts) or 'none'}`",
        f"- round 0: {settings.initial} random images per seed, shared by every strategy; then "
        f"{settings.rounds} rounds of {settings.budget} images each",
        "- every round retrains from scratch with the same schedule: "
        f"`{' '.join(schedule) or 'the config default'}`",
        f"- strategies (ranking settings): {'; '.join(strategies)}; random scores are drawn "
        "with seed + round",
        f"- seeds: {', '.join(map(str, settings.seeds))} (the initial draw and every SEED)",
    ]


def _machine_lines(records: Sequence[Mapping]) -> List[str]:
    info = machine_info()
    train = [r.get("train_s") for r in records]
    return [
        f"- {info['cpu']}, {info['usable_cores']} usable cores, torch {info['torch']}, "
        f"detectron2 {info['detectron2']}, GPU: {info['gpu'] or 'none'}",
        f"- training time per round (mean over {len(records)} rounds): {fmt(nanmean(train), 0)} s"
        " (a resumed round counts only its last part)",
    ]


def write_report(
    path: Path,
    settings: SimSettings,
    records: Sequence[Mapping],
    command: str,
    pool_size: Optional[Sequence[int]] = None,
    schedule: Sequence[str] = (),
) -> None:
    """Write the markdown page and its two figures (``<stem>_images.png``, ``_boxes.png``)."""
    path = Path(path)
    figures = {what: f"{path.stem}_{what}.png" for what in ("images", "boxes")}
    for what, name in figures.items():
        plot_curves(path.parent / name, records, settings.strategies, f"n_{what}", what)
    lines = [
        "# Active learning simulation\n",
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by "
        "`studies.active_learning.al_simulate`"
        f" from the {len(records)} finished rounds in `{settings.output}`.\n",
        "## Verdict\n",
        "\n\n".join(verdict(records, settings.strategies)),
        "\n## Setup\n",
        *_setup_lines(settings, pool_size, schedule),
        "\n## AP and AP50 per round\n",
        results_table(records, settings.strategies),
        "\n## Paired difference against random (same seed: same initial set and SEED)\n",
        differences_table(records, settings.strategies),
        "",
        *READING,
        "\n## Learning curves\n",
        f"![AP and AP50 vs labelled images]({figures['images']})\n",
        f"![AP and AP50 vs labelled boxes]({figures['boxes']})\n",
        "## Machine\n",
        *_machine_lines(records),
        "\n## Command\n",
        "```",
        command,
        "```",
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
