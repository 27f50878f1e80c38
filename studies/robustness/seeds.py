"""Training-side measures over seeds: a measure's model against its base model, paired by seed.

A training-side measure (multi-scale training, H&E stain augmentation) is a model of its own,
labelled ``<base>-<tag>`` (``reference-ms`` beside ``reference``). One seed of a sweep cannot tell
a measure's effect from the seed's noise, so the sweeps of every seed are grouped by name
(:data:`SeedResults`: seed -> the results of :func:`~.report.load_sweeps`) and each
``<base>-<tag>`` is compared with ``<base>`` under the same measures, condition by condition:
the mean AP of each over the seeds both have, and their difference per seed.
"""

from __future__ import annotations

from statistics import mean
from typing import Dict, List, Optional, Sequence, Tuple

from bmc_detectron.reporting.tables import markdown_table
from studies.robustness.measures import split_variant
from studies.robustness.report import conditions_of, row_at, scale_deviation
from studies.robustness.sweep import STAIN_KINDS

Results = Dict[str, List[dict]]
SeedResults = Dict[int, Results]


def measure_pairs(names: Sequence[str]) -> List[Tuple[str, str]]:
    """``(measure name, base name)`` for every name whose model is ``<base>-<tag>`` with a name
    of model ``<base>`` read with the same inference-time measures, in the order of ``names``."""
    present = set(names)
    pairs = []
    for name in names:
        model, variant = split_variant(name)
        base_model, dash, _tag = model.rpartition("-")
        if not dash or not base_model:
            continue
        base = base_model if variant == "plain" else f"{base_model} + {variant}"
        if base in present:
            pairs.append((name, base))
    return pairs


def _ap(rows: List[dict], kind: str, value: float) -> Optional[float]:
    row = row_at(rows, kind, value)
    return None if row is None else float(row["AP"])


def paired_by_seed(
    seeds: SeedResults, measure: str, base: str, kind: str, value: float
) -> Dict[int, Tuple[float, float]]:
    """Seed -> ``(AP of measure, AP of base)`` at one condition, for the seeds that have both."""
    out = {}
    for seed in sorted(seeds):
        results = seeds[seed]
        if measure not in results or base not in results:
            continue
        a, b = _ap(results[measure], kind, value), _ap(results[base], kind, value)
        if a is not None and b is not None:
            out[seed] = (a, b)
    return out


def _conditions(seeds: SeedResults, names: Sequence[str]) -> List[Tuple[str, float]]:
    """The conditions any seed has for any of ``names``, in the report's order."""
    merged = {f"{seed}/{n}": res[n] for seed, res in seeds.items() for n in names if n in res}
    return conditions_of(merged, ["scale", *STAIN_KINDS])


def pair_table(seeds: SeedResults, measure: str, base: str) -> Tuple[str, List[int]]:
    """The markdown table of one pair (a row per condition: both means over the paired seeds,
    the mean difference and each seed's) and the seeds it used; ``("", [])`` without a seed
    that has both."""
    rows, used = [], set()
    for kind, value in _conditions(seeds, [measure, base]):
        pairs = paired_by_seed(seeds, measure, base, kind, value)
        if not pairs:
            continue
        used |= set(pairs)
        diffs = [a - b for a, b in pairs.values()]
        per_seed = ", ".join(f"s{s} {a - b:+.1f}" for s, (a, b) in pairs.items())
        rows.append(
            [
                f"{kind} {value:g}",
                f"{mean(b for _, b in pairs.values()):.1f}",
                f"{mean(a for a, _ in pairs.values()):.1f}",
                f"{mean(diffs):+.1f}",
                per_seed,
            ]
        )
    if not rows:
        return "", []
    headers = ["condition", f"{base} AP", f"{measure} AP", "difference", "per seed"]
    return markdown_table(headers, rows) + "\n", sorted(used)


def spread_line(seeds: SeedResults, measure: str, base: str, lo: float, hi: float) -> str:
    """Per seed, the largest AP change over the factors ``lo..hi`` of base -> measure."""
    parts = []
    for seed in sorted(seeds):
        results = seeds[seed]
        if measure in results and base in results:
            a = scale_deviation(results[measure], lo, hi)
            b = scale_deviation(results[base], lo, hi)
            if a is not None and b is not None:
                parts.append(f"s{seed} {b[0]:.1f} -> {a[0]:.1f}")
    if not parts:
        return ""
    return f"largest |AP(s) - AP(1)| over s in {lo:g}..{hi:g}, {base} -> {measure}: " + "; ".join(
        parts
    )


def seeds_section(seeds: SeedResults, lo: float = 0.5, hi: float = 2.0) -> str:
    """The page section: a table per ``(measure, base)`` pair with two seeds or more; "" when
    no pair has two."""
    names: List[str] = []
    for results in seeds.values():
        names += [n for n in results if n not in names]
    parts = []
    for measure, base in measure_pairs(names):
        table, used = pair_table(seeds, measure, base)
        if len(used) < 2:
            continue
        seeds_text = ", ".join(str(s) for s in used)
        parts += [f"### {measure} vs {base} (seeds {seeds_text})\n"]
        line = spread_line(seeds, measure, base, lo, hi)
        parts += [f"{line}.\n" if line else "", table]
    if not parts:
        return ""
    intro = (
        "## Training-side measures over seeds\n\n"
        "Each training-side measure's model against its base model trained the same way with the "
        "same seed: the mean AP (%) over the seeds of both, the mean difference and each seed's "
        "(a difference smaller than the seeds' disagreement is not an effect).\n"
    )
    return "\n".join([intro, *parts])
