"""A day of slides: each slide of a batch ends with the report ``bmc count --slide`` writes.

Three synthetic pyramidal TIFFs (``tests/slides/helpers.py``, different seeds) are counted once
each by the count command (the reference) and then as a batch: every report equal to the
reference with the facts of the run masked (``comparable_summary``), cells.csv and counts.csv byte
for byte; a rerun skips the finished slides; a file that is no slide fails alone, its row naming
it; a worker killed mid-slide has its slide counted again, resuming, no field counted twice into
the report. The workers build the stand-in counter (``tests/batch/helpers.py``).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

pytest.importorskip("tifffile", reason="the [wsi] extra is not installed")

from bmc_detectron.batch.day import write_day_summary
from bmc_detectron.batch.jobs import (
    BatchCase,
    BatchError,
    CaseOptions,
    comparable_summary,
    find_slides,
)
from bmc_detectron.batch.runner import run_batch
from bmc_detectron.counting import SlideOptions
from bmc_detectron.pipeline.scale_plan import ScaleSetup
from bmc_detectron.tools import batch as batch_tool
from bmc_detectron.tools import count as count_tool
from tests.batch.helpers import SLIDE_FIELD, StandInFactory, logged_calls
from tests.slides.helpers import smear_slide, write_slide

TARGET = 60
NAMES = ["smear0", "smear1", "smear2"]
OPTIONS = CaseOptions(slide=SlideOptions(target_cells=TARGET, field_size=SLIDE_FIELD))


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> Path:
    """``slides/`` (three slides), ``bad/broken.tif`` (not a TIFF) and ``reference/<slide>``:
    each slide counted by ``bmc count --slide``."""
    root = tmp_path_factory.mktemp("slides_day")
    (root / "slides").mkdir()
    (root / "slides" / "notes.txt").write_text("not a slide\n")
    for seed, name in enumerate(NAMES):
        write_slide(root / "slides" / f"{name}.tif", smear_slide(seed)[0])
    (root / "bad").mkdir()
    (root / "bad" / "broken.tif").write_bytes(b"this is no TIFF file\n" * 10)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(count_tool, "build_counter", lambda spec: StandInFactory(slides=True)()[0])
        mp.setattr(count_tool, "scale_setup", lambda *a, **k: ScaleSetup())
        for name in NAMES:
            args = ["--detector-onnx", "x.onnx", "--slide", str(root / "slides" / f"{name}.tif")]
            args += ["--output", str(root / "reference" / name), "--no-progress"]
            args += ["--target-cells", str(TARGET), "--field-size", str(SLIDE_FIELD)]
            assert count_tool.main(args) == 0
    return root


def _report(folder: Path) -> Dict[str, object]:
    return {
        "summary": comparable_summary(json.loads((folder / "summary.json").read_text())),
        "cells.csv": (folder / "cells.csv").read_bytes(),
        "counts.csv": (folder / "counts.csv").read_bytes(),
    }


def _assert_equal_to_reference(day: Path, cases: List[BatchCase]) -> None:
    for case in cases:
        if case.name in NAMES:
            assert _report(case.output) == _report(day / "reference" / case.name), case.name


def _reference_fields(day: Path) -> int:
    return sum(
        len(json.loads((day / "reference" / n / "summary.json").read_text())["fields"])
        for n in NAMES
    )


def test_find_slides_from_files_and_folders(day, tmp_path):
    out = tmp_path / "out"
    cases = find_slides([day / "slides", day / "bad" / "broken.tif"], out)
    assert [(c.name, c.slide, c.output) for c in cases] == [
        (n, day / "slides" / f"{n}.tif", out / n) for n in NAMES
    ] + [("broken", day / "bad" / "broken.tif", out / "broken")]
    for paths, words in [
        ([tmp_path / "missing.svs"], "missing.svs: no such slide file or folder"),
        ([day / "reference"], "reference: no slide files (.svs, .tif"),
        ([day / "slides", day / "slides" / "smear1.tif"], "given twice: smear1"),
    ]:
        with pytest.raises(BatchError, match=re.escape(words)):
            find_slides(paths, out)


def test_a_batch_of_slides_equals_the_single_counts_and_reruns_nothing(day, tmp_path):
    log = tmp_path / "calls.log"
    cases = find_slides([day / "slides", day / "bad" / "broken.tif"], tmp_path / "out")
    results = run_batch(cases, StandInFactory(log=str(log), slides=True), OPTIONS, progress=False)
    assert [r.status for r in results] == ["counted"] * 3 + ["failed"]
    assert "broken.tif" in results[3].error and "\n" not in results[3].error
    _assert_equal_to_reference(day, cases)
    assert len(logged_calls(log)) == _reference_fields(day)  # every field detected once
    # the day summary: one row per slide, read from its report
    write_day_summary(tmp_path / "out", results)
    with open(tmp_path / "out" / "batch_summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["case"], r["status"]) for r in rows] == [(n, "counted") for n in NAMES] + [
        ("broken", "failed")
    ]
    for row, name in zip(rows, NAMES):
        summary = json.loads((day / "reference" / name / "summary.json").read_text())
        assert int(row["cells"]) == summary["counted"] >= TARGET
        assert int(row["fields"]) == summary["slide"]["fields_counted"]
        assert float(row["cell %"]) == 100.0 and float(row["seconds"]) > 0
    assert rows[3]["cells"] == "" and "broken.tif" in rows[3]["error"]
    day_json = json.loads((tmp_path / "out" / "batch_summary.json").read_text())
    assert [r["differential"] for r in day_json["cases"]] == [{"cell": 100.0}] * 3 + [{}]
    # a rerun: the finished slides are skipped, the broken one fails again
    again = run_batch(cases, StandInFactory(log=str(log), slides=True), OPTIONS, progress=False)
    assert [r.status for r in again] == ["done"] * 3 + ["failed"]
    assert len(logged_calls(log)) == _reference_fields(day)  # no field detected again


def test_a_killed_worker_s_slide_is_counted_again_once(day, tmp_path):
    log, marker = tmp_path / "calls.log", tmp_path / "died"
    factory = StandInFactory(log=str(log), die_marker=str(marker), die_at=2, slides=True)
    cases = find_slides([day / "slides"], tmp_path / "out")
    results = run_batch(cases, factory, OPTIONS, workers=2, progress=False)
    assert marker.exists()  # a worker was killed on its second field
    assert [r.status for r in results] == ["counted"] * 3
    _assert_equal_to_reference(day, cases)  # no slide lost, no field counted twice into a report
    calls = Counter(s for _, s in logged_calls(log))
    fields = _reference_fields(day)
    assert len(calls) == fields and fields < sum(calls.values()) <= fields + 2
    summaries = [json.loads((c.output / "summary.json").read_text()) for c in cases]
    assert sum(s["timing"]["fields_reused"] for s in summaries) >= 1  # resumed field by field


def test_the_batch_command_with_slides(day, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(batch_tool, "SpecFactory", lambda *a, **k: StandInFactory(slides=True))
    (tmp_path / "x.onnx").write_bytes(b"")
    out = tmp_path / "out"
    args = ["--slides", str(day / "slides"), str(day / "bad" / "broken.tif"), "--output", str(out)]
    args += ["--detector-onnx", str(tmp_path / "x.onnx"), "--workers", "1", "--no-progress"]
    args += ["--target-cells", str(TARGET), "--field-size", str(SLIDE_FIELD)]
    assert batch_tool.main(args) == 1  # a slide failed
    captured = capsys.readouterr()
    assert "3 counted" in captured.out and "failed: broken: SlideError" in captured.err
    assert (out / "batch.json").is_file() and (out / "batch_summary.json").is_file()
    rows = list(csv.DictReader(open(out / "batch_summary.csv")))
    assert [r["status"] for r in rows] == ["counted"] * 3 + ["failed"]
    _assert_equal_to_reference(day, find_slides([day / "slides"], out))
    both = [str(day / "bad"), "--slides", str(day / "slides"), "--output", str(out)]
    assert batch_tool.main(both + ["--detector-onnx", str(tmp_path / "x.onnx")]) == 2
    assert "not both" in capsys.readouterr().err


# ---------------------------------------------------------------- Ray


def test_two_ray_workers_count_the_slides_as_the_single_count(day, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        cases = find_slides([day / "slides"], tmp_path / "out")
        factory = StandInFactory(slides=True)
        results = run_batch(cases, factory, OPTIONS, engine="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert [r.status for r in results] == ["counted"] * 3
    _assert_equal_to_reference(day, cases)
