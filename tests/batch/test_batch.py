"""Many cases: the batch equals the single-process count, resumes, survives a killed worker.

Every case of a batch must end with the report ``run_count`` writes on its own: summary.json
equal with the facts of the run masked (``comparable_summary``: when, how long, which fields were
reused), cells.csv and counts.csv byte for byte. The workers build the stand-in counter of
``tests/pipeline/helpers.py`` (``tests/batch/helpers.py``), so no model is loaded.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from bmc_detectron.batch.jobs import (
    SETUP_FAILED,
    BatchCase,
    BatchError,
    comparable_summary,
    find_cases,
)
from bmc_detectron.batch.runner import run_batch
from bmc_detectron.pipeline.run import run_count
from bmc_detectron.utils.io import list_images
from tests.batch.helpers import StandInFactory, logged_calls, write_cases

N_CASES, N_FIELDS = 3, 3


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> Path:
    """Three cases of three fields and their single-process reports (``reference/<case>``)."""
    root = tmp_path_factory.mktemp("day")
    write_cases(root / "cases", N_CASES, N_FIELDS)
    for case in find_cases([root / "cases"], root / "reference"):
        counter, setup = StandInFactory()()
        run_count(counter, list_images(case.folder), case.output, progress=False, scale=setup)
    return root


def _report(folder: Path) -> Dict[str, object]:
    return {
        "summary": comparable_summary(json.loads((folder / "summary.json").read_text())),
        "cells.csv": (folder / "cells.csv").read_bytes(),
        "counts.csv": (folder / "counts.csv").read_bytes(),
    }


def assert_equal_to_reference(day: Path, cases: List[BatchCase]) -> None:
    assert [c.name for c in cases] == [f"case{i:02d}" for i in range(N_CASES)]
    for case in cases:
        assert _report(case.output) == _report(day / "reference" / case.name), case.name


def _cases(day: Path, tmp_path: Path) -> List[BatchCase]:
    return find_cases([day / "cases"], tmp_path / "reports")


def test_find_cases_from_a_folder_of_cases_or_case_folders(day, tmp_path):
    out = tmp_path / "out"
    cases = find_cases([day / "cases"], out)
    assert [(c.name, c.folder, c.output) for c in cases] == [
        (f"case{i:02d}", day / "cases" / f"case{i:02d}", out / f"case{i:02d}") for i in range(3)
    ]
    one = find_cases([day / "cases" / "case01", day / "cases" / "case00"], out)
    assert [c.name for c in one] == ["case01", "case00"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image\n")
    for folders, words in [
        ([tmp_path / "missing"], "missing: no such folder"),
        ([tmp_path / "empty"], "empty: no images and no case folders with images (empty case)"),
        ([day / "cases", day / "cases" / "case00"], "given twice: case00"),
    ]:
        with pytest.raises(BatchError, match=re.escape(words)) as err:
            find_cases(folders, out)
        assert "\n" not in str(err.value)


def test_two_worker_processes_equal_the_single_process_count(day, tmp_path):
    log = tmp_path / "calls.log"
    cases = _cases(day, tmp_path)
    results = run_batch(cases, StandInFactory(log=str(log)), workers=2, progress=False)
    assert [r.status for r in results] == ["counted"] * N_CASES
    assert_equal_to_reference(day, cases)
    calls = logged_calls(log)
    assert len(calls) == N_CASES * N_FIELDS  # every field counted once
    pids = {pid for pid, _ in calls}  # two workers (one may start late and get no case)
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    assert {r.worker for r in results} == pids


def test_a_batch_resumes_finished_and_interrupted_cases(day, tmp_path):
    cases = _cases(day, tmp_path)
    run_batch(cases[:2], StandInFactory(), workers=1, progress=False)
    # case01 interrupted after its first field: no summary, the other fields' results gone
    (cases[1].output / "summary.json").unlink()
    for name in ("field1", "field2"):
        (cases[1].output / "cells" / f"{name}.json").unlink()
    log = tmp_path / "calls.log"
    results = run_batch(cases, StandInFactory(log=str(log)), workers=2, progress=False)
    assert [r.status for r in results] == ["done", "counted", "counted"]
    assert len(logged_calls(log)) == 2 + N_FIELDS  # case01's two lost fields, case02's three
    assert_equal_to_reference(day, cases)
    resumed = json.loads((cases[1].output / "summary.json").read_text())
    assert [f["reused"] for f in resumed["fields"]] == [True, False, False]


def _assert_survived_the_kill(day, tmp_path, cases, results, log, workers):
    assert (tmp_path / "died").exists()  # a worker was killed mid-case
    assert [r.status for r in results] == ["counted"] * N_CASES
    assert_equal_to_reference(day, cases)  # no case lost, none counted twice into its report
    calls = Counter(s for _, s in logged_calls(log))
    fields = N_CASES * N_FIELDS
    assert len(calls) == fields  # every field counted, and only
    # at most the fields in flight when the worker died were counted a second time
    assert fields < sum(calls.values()) <= fields + workers
    summaries = [json.loads((c.output / "summary.json").read_text()) for c in cases]
    assert sum(s["timing"]["fields_reused"] for s in summaries) >= 1  # resumed, field by field


def test_a_killed_worker_process_s_case_is_counted_again(day, tmp_path):
    cases, log = _cases(day, tmp_path), tmp_path / "calls.log"
    factory = StandInFactory(log=str(log), die_marker=str(tmp_path / "died"), die_at=2)
    results = run_batch(cases, factory, workers=2, progress=False)
    _assert_survived_the_kill(day, tmp_path, cases, results, log, workers=2)


def test_a_worker_that_cannot_build_its_counter_stops_the_batch(day, tmp_path):
    with pytest.raises(BatchError) as err:
        run_batch(_cases(day, tmp_path), StandInFactory(fail=True), workers=1, progress=False)
    text = str(err.value)
    assert text.startswith(SETUP_FAILED) and "det.pth: no such file" in text and "\n" not in text


def test_unknown_engine_and_ray_missing_are_one_line_errors(day, tmp_path, monkeypatch):
    cases = _cases(day, tmp_path)
    with pytest.raises(BatchError, match="unknown engine 'spark'"):
        run_batch(cases, StandInFactory(), engine="spark", progress=False)
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BatchError, match=r"pip install \.\[batch\]"):
        run_batch(cases, StandInFactory(), engine="ray", progress=False)


# ---------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module's Ray tests."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_two_ray_workers_equal_the_single_process_count(day, tmp_path, local_ray):
    log = tmp_path / "calls.log"
    cases = _cases(day, tmp_path)
    results = run_batch(cases, StandInFactory(log=str(log)), engine="ray", progress=False)
    assert [r.status for r in results] == ["counted"] * N_CASES
    assert_equal_to_reference(day, cases)
    assert len(logged_calls(log)) == N_CASES * N_FIELDS
    assert local_ray.is_initialized()  # a Ray it did not start is left running


def test_a_killed_ray_worker_s_case_is_counted_again(day, tmp_path, local_ray):
    cases, log = _cases(day, tmp_path), tmp_path / "calls.log"
    factory = StandInFactory(log=str(log), die_marker=str(tmp_path / "died"), die_at=2)
    results = run_batch(cases, factory, engine="ray", workers=2, progress=False)
    _assert_survived_the_kill(day, tmp_path, cases, results, log, workers=2)
