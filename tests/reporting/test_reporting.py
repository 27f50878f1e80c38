"""bmc_detectron.reporting: table text, number cells, command lines, the machine, figures, the
timing summary (its one p90) and the one interleaving loop, on hand-built cases."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from bmc_detectron.reporting.plots import grid_shape, new_figure, pyplot, save_figure
from bmc_detectron.reporting.provenance import machine_info, shell_join
from bmc_detectron.reporting.tables import append_markdown_row, fmt, markdown_table
from bmc_detectron.reporting.timing import interleaved_latency, round_order, summarize_ms

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORTING = Path(__file__).resolve().parents[2] / "bmc_detectron" / "reporting"


def test_reporting_stands_on_utils_alone():
    """A low floor: of the package, reporting/ imports only utils/ (and itself)."""
    imported = []
    for path in sorted(REPORTING.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.append(node.module)
            elif isinstance(node, ast.Import):
                imported += [alias.name for alias in node.names]
    ours = {m for m in imported if m.split(".")[0] in ("bmc_detectron", "studies")}
    assert ours and all(m.startswith("bmc_detectron.utils") for m in ours), ours


# ----------------------------------------------------------------------------- tables
def test_fmt_cells():
    assert fmt(None) == "-" and fmt(float("nan")) == "-"
    assert fmt(3.14159) == "3.1" and fmt(3.14159, 3) == "3.142" and fmt(2.0, 0) == "2"
    assert fmt(7) == "7" and fmt("x") == "x"


def test_markdown_table_text():
    text = markdown_table(["name", "AP", "n"], [["a", 41.26, 3], ["b|c", None, float("nan")]])
    assert text == (
        "| name | AP | n |\n"
        "|---|---|---|\n"
        "| a | 41.3 | 3 |\n"  # non-string cells through fmt
        "| b|c | - | - |"  # string cells as they are; no trailing newline
    )
    assert markdown_table(["x"], []) == "| x |\n|---|"


def test_append_markdown_row_starts_a_table_then_appends(tmp_path):
    path = tmp_path / "t.md"
    append_markdown_row(path, ["a", "b"], "| 1 | 2 |")
    append_markdown_row(path, ["a", "b"], "| 3 | 4 |")
    assert path.read_text() == "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n"


# ----------------------------------------------------------------------------- provenance
def test_shell_join_quotes_like_a_shell():
    args = ["python", "-m", "x", "DATASETS.TEST", "('bccd_test',)", "a b", "it's $HOME", 5]
    assert shell_join(args) == (
        "python -m x DATASETS.TEST \"('bccd_test',)\" 'a b' 'it'\"'\"'s $HOME' 5"
    )


def test_machine_info_keys():
    info = machine_info()
    assert set(info) == {
        "cpu",
        "logical_cores",
        "physical_cores",
        "usable_cores",
        "torch_threads",
        "memory_gb",
        "python",
        "torch",
        "detectron2",
        "platform",
        "gpu",
        "load_avg_1m",
    }
    assert info["logical_cores"] >= 1 and info["memory_gb"] > 0


# ----------------------------------------------------------------------------- plots
def test_grid_shape():
    assert grid_shape(5, 3) == (2, 3)
    assert grid_shape(2, 3) == (1, 2)
    assert grid_shape(0, 3) == (1, 1)


def test_save_figure_writes_pngs_and_closes_pyplot_figures(tmp_path):
    fig = new_figure(2, 1.5)
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    assert save_figure(fig, tmp_path / "agg.png") == tmp_path / "agg.png"
    assert (tmp_path / "agg.png").read_bytes()[:8] == PNG_MAGIC

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    assert fig.number in plt.get_fignums()
    save_figure(fig, tmp_path / "sub" / "plt.png", dpi=50, crop=False)
    assert fig.number not in plt.get_fignums()
    data = (tmp_path / "sub" / "plt.png").read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (100, 75)  # uncropped: 2 x 1.5 inches at 50 dpi


# ----------------------------------------------------------------------------- timing
def test_summarize_ms_keys_and_nearest_rank_p90():
    stats = summarize_ms([0.010, 0.050, 0.020, 0.040, 0.030])  # 10..50 ms, unsorted
    assert set(stats) == {"median_ms", "p90_ms", "mean_ms", "min_ms", "n"}
    # nearest rank: the ceil(0.9 * 5) = 5th smallest (linear interpolation would give 46 ms)
    assert stats["p90_ms"] == pytest.approx(50.0)
    assert stats["median_ms"] == pytest.approx(30.0) and stats["mean_ms"] == pytest.approx(30.0)
    assert stats["min_ms"] == pytest.approx(10.0) and stats["n"] == 5
    # 20 calls 1..20 ms: the 18th smallest (interpolated: 18.1 ms)
    assert summarize_ms([i / 1000 for i in range(20, 0, -1)])["p90_ms"] == pytest.approx(18.0)
    assert summarize_ms([0.007])["p90_ms"] == pytest.approx(7.0)


def test_summarize_ms_of_no_calls():
    stats = summarize_ms([])
    assert stats["n"] == 0
    assert all(math.isnan(stats[k]) for k in ("median_ms", "p90_ms", "mean_ms", "min_ms"))


def test_interleaved_latency_order_warmup_and_timer():
    calls = []

    def subject(name):
        return lambda item: calls.append((name, item))

    ticks = iter(range(1, 100))
    times = interleaved_latency(
        {"a": subject("a"), "b": subject("b"), "c": subject("c")},
        ["x", "y"],
        rounds=2,
        warmup=1,
        timer=lambda fn: fn() or float(next(ticks)),
    )
    names = "".join(name for name, _ in calls)
    # each item through every subject; the order rotates from round to round, warm-up included
    assert names == "abcabc" + "bcabca" + "cabcab"
    assert [item for _, item in calls[:6]] == ["x"] * 3 + ["y"] * 3
    # the warm-up round's 6 calls are not recorded: ticks 7.. are
    assert times == {
        "a": [9.0, 12.0, 14.0, 17.0],
        "b": [7.0, 10.0, 15.0, 18.0],
        "c": [8.0, 11.0, 13.0, 16.0],
    }


def test_two_subjects_alternate():
    assert [round_order(["pt", "ort"], r) for r in range(3)] == [
        ["pt", "ort"],
        ["ort", "pt"],
        ["pt", "ort"],
    ]
