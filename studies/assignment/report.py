"""The page of the label-assigner micro-benchmark (:mod:`studies.assignment.assign_bench`):
time, memory, and share of a training step with the scaling in the number of gts."""

from __future__ import annotations

from typing import Mapping

from bmc_detectron.reporting.tables import fmt, markdown_table


def _share_row(name: str, entry: Mapping) -> list:
    sh, sc = entry.get("share", {}), entry.get("scaling", {})
    ratio = "-"
    if sc:
        ratio = f"{fmt(sc['time_ratio'], 1)} (G {sc['g_max']}/{sc['g_ref']}: "
        ratio += f"{fmt(sc['linear_ratio'], 0)})"
    linear = ("yes" if sc.get("at_most_linear") else "no") if sc else "-"
    share = fmt(100 * sh["share"], 1) if sh else "-"
    assign, step = fmt(sh.get("assign_ms"), 1), fmt(sh.get("iteration_ms"), 0)
    return [name, assign, step, share, ratio, linear, entry.get("error", "")]


def assign_bench_markdown(rec: Mapping[str, object]) -> str:
    """Time, memory and share/scaling tables of an ``assign_bench`` record."""
    gts = rec["gts"]
    g_cols = ["assigner", *[f"G={g}" for g in gts]]
    time_rows, mem_rows, share_rows = [], [], []
    for name, e in rec["assigners"].items():
        per = {int(k): v for k, v in e.get("per_gts", {}).items()}
        time_rows.append([name, *[fmt(per.get(g, {}).get("median_ms"), 2) for g in gts]])
        mem_rows.append([name, *[fmt(per.get(g, {}).get("peak_mb"), 2) for g in gts]])
        share_rows.append(_share_row(name, e))
    h, w = rec["input_size"]
    share_cols = ["assigner", "assign/batch (ms)", "train step (ms)", "share (%)"]
    share_cols += ["time ratio (G ratio)", "at most linear", "error"]
    parts = [
        "## Assignment time (ms, median)\n",
        f"Assignment of one {h}x{w} image ({rec['num_anchors']} anchors) on {rec['device']}, "
        f"{rec['machine']['cpu']}; median of {rec['repeats']} calls.\n",
        markdown_table(g_cols, time_rows),
        f"\n## Peak memory (MB, {rec['memory_method']})\n",
        markdown_table(g_cols, mem_rows),
        f"\n## Share of a training iteration ({rec['share_gts']} gts/image) and scaling in G\n",
        markdown_table(share_cols, share_rows),
    ]
    return "\n".join(parts) + "\n"
