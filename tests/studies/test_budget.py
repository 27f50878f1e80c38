"""The budget study (issue 25, section 1): planned tasks, collection and the page on hand-built
run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.budget import budget
from studies.status import load_manifest

MANIFEST = {
    "title": "t",
    "test_dataset": "bccd_val",
    "budgets": [780, 1560],
    "seeds": [0, 1],
    "configs": ["ref", {"name": "full", "seeds": [0]}],
    "model": "full",
    "peer": "ref",
}


def _run(
    root: Path, b: int, name: str, seed: int, ap: float, train_s: float = 600.0, **per_class
) -> None:
    run = root / f"budget_{b}" / "runs" / name / f"seed{seed}"
    (run / "inference" / "bccd_val").mkdir(parents=True)
    box = {"AP": ap, "AP50": ap + 30, "AP75": ap - 5}
    box |= {f"AP-{c}": v for c, v in per_class.items()} | {"AP50-WBC": 99.0}
    (run / "inference" / "bccd_val" / "coco_metrics.json").write_text(json.dumps({"bbox": box}))
    (run / "run.json").write_text(json.dumps({"train_s": train_s, "latency_ms": 50.0 + seed}))


def test_planned_tasks_are_seed_major():
    assert budget.planned_tasks(MANIFEST) == [
        "780:ref:0",
        "780:full:0",
        "1560:ref:0",
        "1560:full:0",
        "780:ref:1",
        "1560:ref:1",
    ]


def test_collect_and_table(tmp_path):
    _run(tmp_path, 780, "ref", 0, 40.0)
    _run(tmp_path, 780, "ref", 1, 44.0, train_s=1200.0)
    _run(tmp_path, 1560, "full", 0, 55.0)
    (tmp_path / "budget_1560" / "runs" / "ref" / "seed0").mkdir(parents=True)  # unfinished
    runs = budget.collect(tmp_path, MANIFEST)
    assert [(r.config, r.budget, r.seed) for r in runs] == [
        ("ref", 780, 0),
        ("ref", 780, 1),
        ("full", 1560, 0),
    ]
    table = budget.budget_table(runs, ["ref", "full"], [780, 1560]).splitlines()
    assert table[2] == "| `ref` | 780 | 0, 1 | 42.0 ± 2.8 | 72.0 ± 2.8 | 37.0 ± 2.8 | 15.0 | 50.5 |"
    assert table[3] == "| `full` | 1560 | 0 | 55.0 | 85.0 | 50.0 | 10.0 | 50.0 |"
    assert len(table) == 4


def test_page_has_table_plot_and_generated_status(tmp_path, monkeypatch):
    manifest = tmp_path / "study.yaml"
    manifest.write_text(json.dumps({**MANIFEST, "title": "Budget"}))
    monkeypatch.setattr(budget, "MANIFEST", manifest)
    _run(tmp_path / "runs", 780, "ref", 0, 40.0)
    page = budget.write_page(tmp_path / "runs", tmp_path / "out" / "R.md", ["--runs", "x"])
    text = page.read_text()
    assert text.startswith("# Budget\n") and "![AP against budget](R_ap_vs_budget.png)" in text
    assert (tmp_path / "out" / "R_ap_vs_budget.png").stat().st_size > 1000
    assert "| `ref` | 780 | 0 | 40.0 |" in text
    assert "1 of 3 planned runs done (2 queued)" in text  # 780: ref 0 done, ref 1 and full 0 queued
    assert load_manifest(manifest)["title"] == "Budget"


def test_verdict_ranks_each_budget_and_follows_the_peers_lead(tmp_path):
    _run(tmp_path, 780, "ref", 0, 57.0)
    _run(tmp_path, 780, "ref", 1, 58.0)
    _run(tmp_path, 780, "full", 0, 53.5)
    _run(tmp_path, 1560, "ref", 0, 59.0)
    _run(tmp_path, 1560, "full", 0, 56.0)
    runs = budget.collect(tmp_path, MANIFEST)
    lines = budget.verdict(runs, ["ref", "full"], [780, 1560], "full", "ref").splitlines()
    assert lines == [
        "- **780 iterations**: best `ref`; `ref` 57.5 (n=2) > `full` 53.5 (n=1).",
        "- **1560 iterations**: best `ref`; `ref` 59.0 (n=1) > `full` 56.0 (n=1).",
        "- `ref` - `full` at 780 iterations: +4.0 AP (n=2 / 1); `full`'s latency 1.00x.",
        "- `ref` - `full` at 1560 iterations: +3.0 AP (n=1 / 1); `full`'s latency 1.00x.",
        "- `ref`'s lead less than halves (+4.0 -> +3.0 AP from 780 to 1560 iterations): mostly"
        " structural at these budgets.",
        "- `full`'s best (56.0 AP at 1560 iterations) stays below `ref` at 780 iterations"
        " (57.5 AP).",
    ]


def test_verdict_trend_names_a_short_schedule_effect():
    assert budget._trend([(780, 4.0), (2340, 1.5)]).startswith("more than halves (+4.0 -> +1.5")
    assert budget._trend([(780, 4.0), (2340, -0.2)]).startswith("closes (+4.0 -> -0.2 AP")
    assert budget._trend([(780, 4.0), (2340, 2.5)]).startswith("less than halves")
    assert "one budget only" in budget._trend([(780, 4.0)])


def test_train_time_adds_every_session_of_a_resumed_run(tmp_path):
    line = "d2.engine.hooks INFO: Overall training speed: {} iterations in {} ({} s / it)\n"
    (tmp_path / "log.txt").write_text(
        line.format(100, "0:10:00", "6.0") + "noise\n" + line.format(200, "0:20:00", "6.0")
    )
    assert budget.train_seconds(tmp_path, 300, 5.0) == 1800.0
    assert budget.train_seconds(tmp_path, 600, 5.0) == 3600.0  # a killed session: scaled
    assert budget.train_seconds(tmp_path / "none", 300, 5.0) == 5.0


def test_verdict_says_when_a_budget_is_missing_detectors(tmp_path):
    _run(tmp_path, 780, "full", 0, 53.5)
    runs = budget.collect(tmp_path, MANIFEST)
    text = budget.verdict(runs, ["ref", "full"], [780, 1560], "full", "ref")
    assert text == "- **780 iterations**: best of 1 finished `full`; `full` 53.5 (n=1)."


@pytest.fixture
def one_seed_each(tmp_path, monkeypatch) -> Path:
    """The manifest in place and seed 0 of "ref" (57.0 AP) and "full" (53.0) at 780; the runs
    root."""
    manifest = tmp_path / "study.yaml"
    manifest.write_text(json.dumps(MANIFEST))
    monkeypatch.setattr(budget, "MANIFEST", manifest)
    _run(tmp_path / "runs", 780, "ref", 0, 57.0)
    _run(tmp_path / "runs", 780, "full", 0, 53.0)
    return tmp_path / "runs"


def test_side_by_side_latency_sets_the_verdicts_ratio_and_has_its_section(tmp_path, one_seed_each):
    latency = {
        "models": [{"name": "ref", "median_ms": 150.0}, {"name": "full", "median_ms": 60.0}],
        "markdown": "| model | latency |\n|---|---|\n| ref | 150 |",
        "command": "python -m bmc_detectron.analysis_tools.benchmark --configs a b",
        "date": "2026-12-06T18:00:00",
    }
    assert budget.side_by_side_ratio(latency, "full", "ref") == 0.4
    assert budget.side_by_side_ratio(latency, "full", "other") is None
    assert budget.side_by_side_ratio(None, "full", "ref") is None
    page = budget.write_page(tmp_path / "runs", tmp_path / "R.md", [], latency).read_text()
    assert "+4.0 AP (n=1 / 1); `full`'s latency 0.40x (side by side)." in page
    assert "## Latency, side by side" in page and "| ref | 150 |" in page
    without = budget.write_page(tmp_path / "runs", tmp_path / "R2.md", []).read_text()
    assert "## Latency, side by side" not in without and "latency 1.00x." in without


def test_main_names_a_missing_latency_record(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert budget.main(["--runs", str(tmp_path), "--latency", str(missing)]) == 2
    assert "nope.json: no such latency record" in capsys.readouterr().err


def test_index_verdict_block_is_replaced_and_a_missing_block_named(tmp_path):
    index = tmp_path / "index.md"
    index.write_text(f"# R\n\nhand\n\n{budget.INDEX_START}\nold\n{budget.INDEX_END}\n\nafter\n")
    budget.write_index_verdict(index, "- new", "budget/R.md")
    assert index.read_text() == (
        f"# R\n\nhand\n\n{budget.INDEX_START}\n- new\n\n(From [the budget page](budget/R.md).)\n"
        f"{budget.INDEX_END}\n\nafter\n"
    )
    plain = tmp_path / "plain.md"
    plain.write_text("# R\n")
    with pytest.raises(ValueError, match="plain.md: no block"):
        budget.write_index_verdict(plain, "- new", "x.md")
    assert plain.read_text() == "# R\n"


def test_main_writes_the_verdict_into_the_index(tmp_path, one_seed_each):
    index = tmp_path / "docs" / "index.md"
    index.parent.mkdir()
    index.write_text(f"{budget.INDEX_START}\n{budget.INDEX_END}\n")
    page = tmp_path / "docs" / "budget" / "R.md"
    argv = ["--runs", str(tmp_path / "runs"), "--output", str(page), "--index", str(index)]
    assert budget.main(argv) == 0
    text = index.read_text()
    assert "- **780 iterations**: best `ref`; `ref` 57.0 (n=1) > `full` 53.0 (n=1)." in text
    assert "(From [the budget page](budget/R.md).)" in text and "## Status" not in text


def test_verdict_gives_the_paired_interval_over_common_seeds(tmp_path):
    for seed, (ref, full) in enumerate([(57.0, 53.0), (58.0, 55.0), (59.0, 54.0)]):
        _run(tmp_path, 780, "ref", seed, ref)
        _run(tmp_path, 780, "full", seed, full)
    runs = budget.collect(tmp_path, {**MANIFEST, "seeds": [0, 1, 2], "configs": ["ref", "full"]})
    lines = budget.verdict(runs, ["ref", "full"], [780], "full", "ref").splitlines()
    # differences 4, 3, 5: mean 4, t(0.975, 2) = 4.303, s = 1 -> half width 2.48
    assert lines[1] == (
        "- `ref` - `full` at 780 iterations: +4.0 AP (n=3 / 3; paired by seed (n=3): +4.0 "
        "[+1.5, +6.5]); `full`'s latency 1.00x."
    )


def test_per_class_ap_table_and_the_verdicts_breakdown_of_the_lead(tmp_path):
    _run(tmp_path, 780, "ref", 0, 57.0, RBC=54.0, WBC=73.0, Platelets=44.0)
    _run(tmp_path, 780, "ref", 1, 58.0, RBC=55.0, WBC=74.0, Platelets=45.0)
    _run(tmp_path, 780, "full", 0, 53.5, RBC=52.0, WBC=71.0, Platelets=37.5)
    runs = budget.collect(tmp_path, MANIFEST)
    assert budget.class_names(runs) == ["RBC", "WBC", "Platelets"]  # AP50-* are not classes
    table = budget.class_table(runs, ["ref", "full"], [780, 1560]).splitlines()
    assert table[0] == "| detector | iterations | n | RBC | WBC | Platelets |"
    assert table[2:] == [
        "| `ref` | 780 | 2 | 54.5 | 73.5 | 44.5 |",
        "| `full` | 780 | 1 | 52.0 | 71.0 | 37.5 |",
    ]
    lines = budget.verdict(runs, ["ref", "full"], [780], "full", "ref").splitlines()
    assert lines[1] == (
        "- `ref` - `full` at 780 iterations: +4.0 AP (n=2 / 1; by class RBC +2.5, WBC +2.5,"
        " Platelets +7.0); `full`'s latency 0.99x."
    )
    _run(tmp_path, 1560, "full", 0, 50.0)  # a run without per-class APs: no class column
    assert budget.class_table(budget.collect(tmp_path, MANIFEST), ["full"], [1560]) == ""
