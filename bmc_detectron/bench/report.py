"""Page builders of the latency / cost benchmark
(:mod:`bmc_detectron.analysis_tools.benchmark`): a config's one-line description, the row of a
single-config record, the side-by-side latency table. Generic tables, number formats, the
machine and command lines: :mod:`bmc_detectron.reporting`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

from bmc_detectron.reporting.tables import fmt, markdown_table

BENCHMARK_HEADERS = (
    "run",
    "device",
    "input",
    "params (M)",
    "GFLOPs",
    "latency med / p90 (ms)",
    "throughput (img/s @B)",
    "train iter (ms @batch)",
    "peak mem infer / train (MB)",
    "AP",
    "AP50",
    "AP75",
    "date",
)
LATENCY_HEADERS = (
    "model",
    "what it is",
    "latency med / p90 (ms)",
    "× reference",
    "backbone+neck (ms)",
    "head (ms)",
    "rest (ms)",
    "params (M)",
    "GFLOPs",
)


def describe(config_file: str, max_chars: int = 200) -> str:
    """A config file's one-line description: the first sentence of its leading comment block
    (a sentence ends at a full stop before a capital letter, or at the block's end), shortened
    at a word to ``max_chars``; '' when the file has no leading comment."""
    try:
        lines = Path(config_file).read_text().splitlines()
    except OSError:
        return ""
    block: List[str] = []
    for line in lines:
        if not line.startswith("#"):
            break
        block.append(line.lstrip("# ").strip())
    text = " ".join(part for part in block if part)
    sentence = re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]
    if len(sentence) > max_chars:
        cut = sentence[: max_chars - 1]
        if sentence[max_chars - 1] != " ":  # not at a word's end: drop the partial word
            cut = cut.rsplit(" ", 1)[0]
        sentence = cut.rstrip(" ,;:") + "…"
    return sentence


def benchmark_row(rec: Mapping[str, object]) -> str:
    """One markdown row (:data:`BENCHMARK_HEADERS`) of a single-config benchmark record."""
    lat, thr = rec["latency"], rec.get("throughput")
    train, coco = rec.get("train"), rec.get("coco") or {}
    mem_train = train["memory"]["peak_mb"] if train else None
    cells = [
        rec["name"],
        rec["device"],
        "x".join(str(s) for s in rec["input_size"]),
        fmt(rec["params_m"], 2),
        fmt(rec["flops"]["gflops"], 2),
        f"{fmt(lat['median_ms'])} / {fmt(lat['p90_ms'])}",
        f"{fmt(thr['images_per_s'], 2)} @{thr['batch_size']}" if thr else "-",
        f"{fmt(train['median_ms'], 0)} @{train['batch_size']}" if train else "-",
        f"{fmt(lat['memory']['peak_mb'], 0)} / {fmt(mem_train, 0)}",
        fmt(coco.get("AP")),
        fmt(coco.get("AP50")),
        fmt(coco.get("AP75")),
        rec["date"][:10],
    ]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def add_ratios(recs: List[Dict[str, object]], reference: str | None) -> None:
    """Set ``ratio_to_reference`` = median latency / the reference's (None without one)."""
    ref = next((r for r in recs if r["name"] == reference), None)
    for rec in recs:
        rec["ratio_to_reference"] = rec["median_ms"] / ref["median_ms"] if ref else None


def latency_markdown(
    recs: Sequence[Mapping[str, object]],
    reference: str | None,
    full: str | None,
    max_ratio: float,
    header: str,
) -> str:
    """The side-by-side latency table (:data:`LATENCY_HEADERS`) and, with ``full``, whether its
    median latency is within ``max_ratio`` of the reference's."""
    rows = []
    for r in recs:
        ratio = r.get("ratio_to_reference")
        rows.append(
            [
                r["name"],
                str(r.get("description", "")).replace("|", "/"),
                f"{fmt(r['median_ms'])} / {fmt(r['p90_ms'])}",
                fmt(ratio, 2),
                fmt(r.get("backbone_ms")),
                fmt(r.get("head_ms")),
                fmt(r.get("rest_ms")),
                fmt(r["params_m"], 2),
                fmt(r["gflops"], 2),
            ]
        )
    lines = [header, "", markdown_table(LATENCY_HEADERS, rows), ""]
    ratio = next((r.get("ratio_to_reference") for r in recs if r["name"] == full), None)
    if full and ratio is not None:
        verdict = "met" if ratio <= max_ratio else "not met"
        lines.append(
            f"- `{full}`: {ratio:.2f}x the median latency of `{reference}` "
            f"(target ≤ {max_ratio}x) → **{verdict}**"
        )
    elif full:
        lines.append(f"- target not evaluated: `{full}` or the reference was not measured")
    return "\n".join(lines) + "\n"
