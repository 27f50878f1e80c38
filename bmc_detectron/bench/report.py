"""Reporting of measurements: markdown tables, plots, the machine, command lines.

Files are written through :mod:`bmc_detectron.utils.io` (atomic); plots use matplotlib's Agg
backend.
"""

from __future__ import annotations

import io
import os
import platform
import re
import shlex
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import psutil
import torch

from bmc_detectron.utils.io import atomic_write_bytes, atomic_write_text
from bmc_detectron.utils.numbers import nanmean, nanstd  # noqa: F401  (re-exported)

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


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> Dict[str, object]:
    """CPU model, cores, memory, torch / detectron2 versions, the GPU (if any), the load."""
    import detectron2

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "detectron2": getattr(detectron2, "__version__", "unknown"),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


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


def shell_join(args: Sequence[object]) -> str:
    """A copy-pastable command line; values with single quotes (e.g. ``('bccd_test',)``) are
    double-quoted instead of shlex's escaped form."""
    out = []
    for arg in map(str, args):
        quoted = shlex.quote(arg)
        if quoted != arg and "'" in arg and not any(c in arg for c in '"$`\\!'):
            quoted = f'"{arg}"'
        out.append(quoted)
    return " ".join(out)


def fmt(value: object, digits: int = 1) -> str:
    """A table cell: floats rounded, None/NaN as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value != value else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (string cells as they are, other cells through :func:`fmt`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |")
    return "\n".join(lines)


def append_markdown_row(path: Path, headers: Sequence[str], row: str) -> None:
    """Append ``row`` to the markdown table in ``path`` (header first for a new file); the file
    is rewritten atomically."""
    old = path.read_text() if path.is_file() else ""
    if not old.strip():
        old = markdown_table(headers, []) + "\n"
    atomic_write_text(path, old + row + "\n")


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


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bar_plot(
    path: Path,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    points: Mapping[str, Sequence[Sequence[float]]] | None = None,
    ylabel: str = "",
    title: str = "",
) -> None:
    """PNG of bars of each series per label (NaN bars drawn as 0); ``points[series][i]`` are
    drawn as dots over bar ``i`` (e.g. the per-seed values behind a mean)."""
    plt = _pyplot()
    n = max(len(series), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) + 2), 4.5))
    for j, (key, values) in enumerate(series.items()):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, [0.0 if v != v else v for v in values], width, label=key)
        for x, pts in zip(xs, (points or {}).get(key, [])):
            ax.scatter([x] * len(pts), pts, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save_figure(fig, path)


def scatter_plot(
    path: Path,
    xs: Sequence[float],
    ys: Sequence[float],
    labels: Sequence[str],
    yerr: Sequence[float] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    sizes: Sequence[float] | None = None,
    size_label: str = "",
) -> None:
    """PNG of labelled points with optional vertical error bars; ``sizes`` (e.g. parameters,
    in millions) scale the markers' areas, labelled ``size_label``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.errorbar(xs, ys, yerr=yerr, fmt="none", capsize=3, ecolor="0.4")
    if sizes is not None and len(sizes) == len(xs) and all(v == v for v in sizes):
        areas = [30.0 * float(v) for v in sizes]
        ax.scatter(xs, ys, s=areas, alpha=0.6, edgecolors="k", zorder=3)
        labels = [f"{lb} ({v:.1f}{size_label})" for lb, v in zip(labels, sizes)]
    else:
        ax.scatter(xs, ys, zorder=3)
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
