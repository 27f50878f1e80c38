"""Training-side measures over seeds: pairing by name and seed, the numbers of the table, and the
report command's ``--seed-inputs``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.robustness import robustness_report
from studies.robustness.seeds import (
    measure_pairs,
    pair_table,
    paired_by_seed,
    seeds_section,
)


def _rows(aps: dict) -> list:
    """``{("scale", 1.0): 50.0, ...}`` -> sweep rows (AP50 = AP + 30)."""
    return [{"kind": k, "value": v, "AP": ap, "AP50": ap + 30} for (k, v), ap in aps.items()]


def _sweep(base: float, slope: float) -> list:
    """AP at factors 0.5, 1, 2: ``base`` at 1, ``base - slope`` at 0.5 and 2; and h 0 / 0.15."""
    return _rows(
        {
            ("scale", 0.5): base - slope,
            ("scale", 1.0): base,
            ("scale", 2.0): base - 2 * slope,
            ("h", 0.0): base,
            ("h", 0.15): base - 1,
        }
    )


SEEDS = {
    0: {"ref": _sweep(50, 10), "ref-ms": _sweep(49, 2), "ref + auto-scale": _sweep(50, 1)},
    1: {"ref": _sweep(46, 12), "ref-ms": _sweep(47, 3)},
    2: {"ref": _sweep(40, 1)},  # no ref-ms: left out of the pairs
}


def test_pairs_by_name_and_same_measures():
    names = ["ref", "ref-ms", "full + auto-scale", "full-ms + auto-scale", "full-ms", "x-y"]
    assert measure_pairs(names) == [
        ("ref-ms", "ref"),
        ("full-ms + auto-scale", "full + auto-scale"),
    ]


def test_paired_by_seed_and_the_table():
    assert paired_by_seed(SEEDS, "ref-ms", "ref", "scale", 2.0) == {0: (45, 30), 1: (41, 22)}
    table, used = pair_table(SEEDS, "ref-ms", "ref")
    assert used == [0, 1]
    lines = table.splitlines()
    assert lines[0].startswith("| condition | ref AP | ref-ms AP | difference | per seed")
    # scale 2: ref (30 + 22) / 2 = 26.0, ref-ms (45 + 41) / 2 = 43.0, +15 and +19
    assert "| scale 2 | 26.0 | 43.0 | +17.0 | s0 +15.0, s1 +19.0 |" in lines
    assert "| scale 1 | 48.0 | 48.0 | +0.0 | s0 -1.0, s1 +1.0 |" in lines
    assert "| h 0.15 | 47.0 | 47.0 | +0.0 | s0 -1.0, s1 +1.0 |" in lines
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| scale 0.5",
        "| scale 1",
        "| scale 2",
        "| h 0",
        "| h 0.15",
    ]


def test_section_with_the_scale_spread_per_seed():
    text = seeds_section(SEEDS)
    assert "### ref-ms vs ref (seeds 0, 1)" in text
    assert "ref -> ref-ms: s0 20.0 -> 4.0; s1 24.0 -> 6.0." in text
    assert seeds_section({0: SEEDS[0]}) == ""  # one seed: no section


def _write(path: Path, results: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset": "d", "results": results}))
    return str(path)


def test_report_command_with_seed_inputs(tmp_path):
    s0 = _write(tmp_path / "s0.json", SEEDS[0])
    s1 = _write(tmp_path / "s1.json", SEEDS[1])
    page = tmp_path / "PAGE.md"
    notes = tmp_path / "notes.md"
    notes.write_text("### Notes\n\nWritten by hand.\n")
    argv = ["--inputs", s0, "--output", str(page), "--seed-inputs", f"1:{s1}"]
    assert robustness_report.main([*argv, "--notes", str(notes)]) == 0
    text = page.read_text()
    assert text.index("Written by hand.") < text.index("## Training-side")
    assert "## Training-side measures over seeds" in text
    assert text.index("## Training-side") < text.index("## AP vs scale")
    assert "| scale 2 | 26.0 | 43.0 | +17.0 |" in text


@pytest.mark.parametrize("item", ["x.json", "a:x.json", "1:missing.json"])
def test_report_command_rejects_bad_seed_inputs(tmp_path, item, capsys):
    s0 = _write(tmp_path / "s0.json", SEEDS[0])
    argv = ["--inputs", s0, "--output", str(tmp_path / "P.md"), "--seed-inputs", item]
    assert robustness_report.main(argv) == 2
    err = capsys.readouterr().err
    assert "--seed-inputs" in err and ("SEED:FILE" in err or "not found" in err)
    assert not (tmp_path / "P.md").exists()
