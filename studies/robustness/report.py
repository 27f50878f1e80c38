"""Tables, curves and the page of one or more robustness sweeps.

Results are keyed by name: the model's label, then the measures it was read with
(``"full + auto-scale"``, :meth:`~.measures.Measures.variant`); each name holds the
rows of :func:`~.sweep.run_sweep`. A ``robustness.json`` also has ``variants`` (per
name: model, measures, config, weights, profile). Several of them merge into one page: a table
per sweep kind with a column per name, curves with a panel per model and a line per variant,
the ruler's estimated vs true rescale factors, and the scale verdict (the largest AP change over
factors ``0.5..2`` against a target).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from bmc_detectron.reporting.plots import pyplot, save_figure
from bmc_detectron.reporting.tables import markdown_table
from studies.robustness.measures import split_variant
from studies.robustness.sweep import STAIN_KINDS, STAIN_NEUTRAL

Results = Dict[str, List[dict]]
_KIND_LABELS = {
    "scale": "rescale factor",
    "hue": "hue shift (deg)",
    "sat": "saturation factor",
    "h": "H shift (OD)",
    "e": "E shift (OD)",
}


def load_sweeps(paths: Sequence[Path]) -> Tuple[Results, Dict[str, dict]]:
    """The results and variants of several ``robustness.json`` merged (a later name replaces
    an earlier one)."""
    results: Results = {}
    variants: Dict[str, dict] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        results.update(data["results"])
        for name in data["results"]:
            model, measures = split_variant(name)
            default = {"model": model, "measures": measures, "config": data.get("config")}
            variants[name] = data.get("variants", {}).get(name, default)
    return results, variants


def results_table(results: Results) -> str:
    """One long table: a row per (name, condition) with AP and AP50."""
    lines = ["| model | condition | value | AP | AP50 |", "|---|---|---|---|---|"]
    for model, rows in results.items():
        for r in rows:
            lines.append(
                f"| {model} | {r['kind']} | {r['value']:g} | {r['AP']:.1f} | {r['AP50']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def conditions_of(results: Results, kinds: Sequence[str]) -> List[Tuple[str, float]]:
    seen = {(r["kind"], r["value"]) for rows in results.values() for r in rows}
    return sorted((c for c in seen if c[0] in kinds), key=lambda c: (kinds.index(c[0]), c[1]))


def row_at(rows: List[dict], kind: str, value: float) -> Optional[dict]:
    return next((r for r in rows if r["kind"] == kind and r["value"] == value), None)


def pivot_table(results: Results, kinds: Sequence[str]) -> str:
    """A row per condition of ``kinds``, a column per name: ``AP / AP50``."""
    names = list(results)
    rows = []
    for kind, value in conditions_of(results, list(kinds)):
        cells = []
        for name in names:
            r = row_at(results[name], kind, value)
            cells.append("-" if r is None else f"{r['AP']:.1f} / {r['AP50']:.1f}")
        rows.append([kind, f"{value:g}", *cells])
    return markdown_table(["condition", "value", *names], rows) + "\n"


def _ruler_cell(rows: List[dict], kind: str, value: float) -> str:
    ruler = (row_at(rows, kind, value) or {}).get("ruler")
    if not ruler or not math.isfinite(ruler["mean_estimate"]):
        return "-"
    text = f"{ruler['mean_estimate']:.3f} ± {ruler['sd_estimate']:.3f}"
    if "case_estimate" in ruler:
        text += f" (case median {ruler['case_estimate']:.3f})"
    return text + (f"; {ruler['unmeasured']} unmeasured" * bool(ruler["unmeasured"]))


def ruler_table(results: Results) -> str:
    """The ruler's mean estimated rescale factor (± sd; images unmeasured) per condition, a
    column per auto-scaled name (names with the same estimates share one); "" when no name was
    auto-scaled."""
    names = [n for n, rows in results.items() if any("ruler" in r for r in rows)]
    if not names:
        return ""
    conds = conditions_of(results, ["scale", *STAIN_KINDS])
    columns: Dict[tuple, List[str]] = {}
    for name in names:
        cells = tuple(_ruler_cell(results[name], kind, value) for kind, value in conds)
        columns.setdefault(cells, []).append(name)
    rows = []
    for i, (kind, value) in enumerate(conds):
        true = value if kind == "scale" else 1.0
        rows.append([f"{kind} {value:g}", f"{true:g}", *(cells[i] for cells in columns)])
    headers = [", ".join(group) for group in columns.values()]
    return markdown_table(["condition", "true factor", *headers], rows) + "\n"


def scale_deviation(
    rows: List[dict], lo: float = 0.5, hi: float = 2.0
) -> Optional[Tuple[float, float, float]]:
    """The largest ``|AP(s) - AP(1)|`` over the factors ``lo <= s <= hi``, its ``s`` and
    ``AP(1)``; None without a factor 1 or another factor in range."""
    base = row_at(rows, "scale", 1.0)
    others = [r for r in rows if r["kind"] == "scale" and lo <= r["value"] <= hi]
    others = [r for r in others if r["value"] != 1.0]
    if base is None or not others:
        return None
    worst = max(others, key=lambda r: abs(r["AP"] - base["AP"]))
    return abs(worst["AP"] - base["AP"]), worst["value"], base["AP"]


def stain_drop(rows: List[dict]) -> Optional[Tuple[float, str]]:
    """The largest AP drop of a stain condition below its kind's neutral value (hue 0, sat 1,
    h 0, e 0) and the condition; None without stain conditions."""
    drops = []
    for r in rows:
        base = row_at(rows, r["kind"], STAIN_NEUTRAL.get(r["kind"], float("nan")))
        if base is not None and r is not base:
            drops.append((base["AP"] - r["AP"], f"{r['kind']} {r['value']:g}"))
    return max(drops) if drops else None


def verdicts(results: Results, target: float = 3.0, lo: float = 0.5, hi: float = 2.0) -> List[str]:
    """Per model: the largest AP change over the factors ``lo..hi`` per variant against
    ``target``, and the largest AP drop under a stain shift per variant."""
    scale: Dict[str, List[str]] = {}
    stain: Dict[str, List[str]] = {}
    for name, rows in results.items():
        model, variant = split_variant(name)
        dev = scale_deviation(rows, lo, hi)
        if dev is not None:
            ok = "meets" if dev[0] <= target else "misses"
            text = f"{variant} {dev[0]:.1f} (at {dev[1]:g}; AP(1) {dev[2]:.1f}; {ok} it)"
            scale.setdefault(model, []).append(text)
        drop = stain_drop(rows)
        if drop is not None:
            stain.setdefault(model, []).append(f"{variant} {drop[0]:.1f} ({drop[1]})")
    head = f"largest |AP(s) - AP(1)| over s in {lo:g}..{hi:g} vs the {target:g}-AP target"
    lines = [f"**{m}**: {head}: " + "; ".join(parts) + "." for m, parts in scale.items()]
    head = "largest AP drop under a stain shift (below the unshifted copy)"
    return lines + [f"**{m}**: {head}: " + "; ".join(parts) + "." for m, parts in stain.items()]


def _layout(results: Results) -> Tuple[List[str], List[str]]:
    models, variants = [], ["plain"]
    for name in results:
        model, variant = split_variant(name)
        models += [model] if model not in models else []
        variants += [variant] if variant not in variants else []
    present = {split_variant(n)[1] for n in results}
    return models, [v for v in variants if v in present]


def _curve(results: Results, model: str, variant: str, kind: str) -> List[tuple]:
    name = model if variant == "plain" else f"{model} + {variant}"
    rows = results.get(name, [])
    return sorted((r["value"], r["AP"], r["AP50"]) for r in rows if r["kind"] == kind)


def _save_with_legend(fig, axes, path: Path) -> Path:
    """Save ``fig`` with one legend of its curves below the panels."""
    handles, labels = {}, []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = h
                labels.append(label)
    fig.tight_layout()
    if labels:
        ncol = min(len(labels), 4)
        fig.legend(
            [handles[x] for x in labels],
            labels,
            loc="upper center",
            ncol=ncol,
            bbox_to_anchor=(0.5, 0.0),
            fontsize=8,
            frameon=False,
        )
    return save_figure(fig, path, dpi=120)


def _style(variant: str) -> Dict[str, float]:
    """The plain curves wide and light, so that a measured curve on top leaves them visible."""
    return {"linewidth": 4.0, "alpha": 0.5, "zorder": 1} if variant == "plain" else {"zorder": 2}


def _plot_scale(results: Results, path: Path) -> Path:
    plt = pyplot()
    models, variants = _layout(results)
    colours = {v: f"C{i}" for i, v in enumerate(variants)}
    ncol = len(models) if len(models) <= 3 else 2  # more models: pairs side by side, in rows
    nrow = -(-len(models) // ncol)
    fig, grid = plt.subplots(
        nrow, ncol, figsize=(4.6 * ncol, 3.8 * nrow), squeeze=False, sharey=True
    )
    axes = grid.ravel()
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    for ax, model in zip(axes, models):
        for variant in variants:
            pts = _curve(results, model, variant, "scale")
            if pts:
                x, ap, ap50 = zip(*pts)
                style = _style(variant)
                ax.plot(x, ap, "o-", color=colours[variant], label=f"{variant} AP", **style)
                ax.plot(x, ap50, "s--", color=colours[variant], alpha=0.5, label=f"{variant} AP50")
        ax.axvspan(0.5, 2.0, color="0.93", zorder=0)
        ax.set(xscale="log", xlabel="rescale factor", title=model)
        ax.set_xticks([0.5, 0.75, 1, 1.5, 2, 3], ["0.5", "0.75", "1", "1.5", "2", "3"])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("AP, AP50 (%)")
    fig.suptitle("AP (solid) and AP50 (dashed) vs scale; shaded: the 0.5-2 target range")
    return _save_with_legend(fig, list(axes[: len(models)]), path)


def _plot_stain(results: Results, path: Path) -> Path:
    plt = pyplot()
    models, variants = _layout(results)
    colours = {v: f"C{i}" for i, v in enumerate(variants)}
    kinds = [k for k in STAIN_KINDS if any(r["kind"] == k for v in results.values() for r in v)]
    ncol = max(1, len(kinds))
    fig, axes = plt.subplots(
        len(models), ncol, figsize=(3.2 * ncol, 2.8 * len(models)), squeeze=False, sharey=True
    )
    for axes_row, model in zip(axes, models):
        for ax, kind in zip(axes_row, kinds):
            for variant in variants:
                pts = _curve(results, model, variant, kind)
                if pts:
                    x, ap, _ = zip(*pts)
                    ax.plot(x, ap, "o-", color=colours[variant], label=variant, **_style(variant))
            ax.set(xlabel=_KIND_LABELS[kind])
            ax.locator_params(axis="x", nbins=4)
            ax.grid(alpha=0.3)
        axes_row[0].set_ylabel(f"{model}: AP (%)")
    axes[0][0].set_ylim(bottom=0)
    fig.suptitle("AP vs stain shift")
    return _save_with_legend(fig, axes.ravel(), path)


def plot_curves(results: Results, out_dir: Path, stem: str = "ap_vs") -> Tuple[Path, Path]:
    """``{stem}_scale.png`` (AP solid and AP50 dashed vs factor, log x, a panel per model, a
    colour per variant) and ``{stem}_stain.png`` (AP vs the amount, a row per model, a column
    per stain kind)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale_png = _plot_scale(results, out_dir / f"{stem}_scale.png")
    stain_png = _plot_stain(results, out_dir / f"{stem}_stain.png")
    return scale_png, stain_png


def _models_table(variants: Dict[str, dict]) -> str:
    rows = []
    for name, v in variants.items():
        rows.append([name, v.get("measures", "plain"), f"`{v.get('weights', '-')}`"])
        rows[-1].append(f"`{v['profile']}`" if v.get("profile") else "-")
    return markdown_table(["name", "measures", "weights", "training profile"], rows) + "\n"


def page_text(
    results: Results,
    variants: Dict[str, dict],
    images: Tuple[Path, Path],
    title: str,
    header: str = "",
    target: float = 3.0,
    extra: str = "",
) -> str:
    """The markdown page: header, verdicts, ``extra`` (a section, e.g. the seeds'), tables,
    curves and the ruler's factors."""
    parts = [f"# {title}\n", header.strip() + "\n" if header.strip() else ""]
    lines = verdicts(results, target)
    if lines:
        parts += ["## Verdicts\n", "\n".join(f"- {line}" for line in lines) + "\n"]
    parts += [extra] if extra.strip() else []
    parts += ["## Models\n", _models_table(variants)]
    parts += ["## AP vs scale\n", "AP / AP50 (%) per rescale factor.\n"]
    parts += [pivot_table(results, ["scale"])]
    parts += [f"![AP vs scale]({images[0].name})\n"]
    ruler = ruler_table(results)
    if ruler:
        parts += [
            "## The ruler's estimated rescale factor\n",
            "Per condition, the mean (± sd over the images) of each image's red-cell diameter "
            "over the training images' (the rescale factor auto-scale undoes) vs the true one.\n",
            ruler,
        ]
    stain = pivot_table(results, list(STAIN_KINDS))
    if stain.count("\n") > 3:
        parts += ["## AP vs stain shift\n", "AP / AP50 (%) per stain condition.\n", stain]
        parts += [f"![AP vs stain]({images[1].name})\n"]
    return "\n".join(parts)


def write_page(
    results: Results,
    variants: Dict[str, dict],
    page: Path,
    title: str,
    header: str = "",
    target: float = 3.0,
    extra: str = "",
) -> Path:
    """Write ``page`` and its curves ``<page stem>_scale.png`` / ``_stain.png`` beside it."""
    from bmc_detectron.utils.io import atomic_write_text

    page = Path(page)
    images = plot_curves(results, page.parent, page.stem)
    atomic_write_text(page, page_text(results, variants, images, title, header, target, extra))
    return page
