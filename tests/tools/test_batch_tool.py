"""``bmc batch``: each case's report as ``bmc count`` writes it; one-line errors."""

from __future__ import annotations

import json
import sys

import pytest

from bmc_detectron.batch.jobs import comparable_summary
from bmc_detectron.tools import batch as batch_tool
from bmc_detectron.tools import count as count_tool
from tests.batch.helpers import write_cases
from tests.helpers import CONFIGS
from tests.pipeline.helpers import save_random_detector

DET_OPTS = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]
DET_OPTS += ["TEST.DETECTIONS_PER_IMAGE", "6"]


@pytest.fixture
def models(tmp_path):
    weights = save_random_detector(tmp_path / "det.pth", DET_OPTS)
    args = ["--detector-config", str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")]
    args += ["--detector-weights", str(weights), "--detector-opts", *DET_OPTS]
    return args + ["--score-threshold", "0", "--device", "cpu", "--no-progress"]


def test_batch_command_writes_each_case_as_count_does(tmp_path, models, capsys):
    cases = write_cases(tmp_path / "day", n_cases=2, n_fields=2)
    out = tmp_path / "reports"
    assert batch_tool.main([str(cases), "--output", str(out), "--workers", "1", *models]) == 0
    printed = capsys.readouterr().out
    assert "2 case(s): 2 counted, 0 finished before, 0 failed" in printed
    single = tmp_path / "single"
    assert (
        count_tool.main(["--input", str(cases / "case01"), "--output", str(single), *models]) == 0
    )
    got, want = out / "case01", single
    for name in ("cells.csv", "counts.csv"):
        assert (got / name).read_bytes() == (want / name).read_bytes()
    summary = json.loads((got / "summary.json").read_text())
    assert comparable_summary(summary) == comparable_summary(
        json.loads((want / "summary.json").read_text())
    )
    assert summary["detected"] > 0
    batch = json.loads((out / "batch.json").read_text())
    assert [(c["name"], c["status"]) for c in batch["cases"]] == [
        ("case00", "counted"),
        ("case01", "counted"),
    ]
    # run again: nothing to count, nothing loaded
    assert batch_tool.main([str(cases), "--output", str(out), *models]) == 0
    assert "0 counted, 2 finished before" in capsys.readouterr().out


def test_batch_command_errors_are_one_line(tmp_path, models, capsys, monkeypatch):
    write_cases(tmp_path / "day", n_cases=1, n_fields=1)
    (tmp_path / "empty").mkdir()
    out = ["--output", str(tmp_path / "out")]
    for argv, words in [
        ([str(tmp_path / "nowhere"), *out, *models], "nowhere: no such folder"),
        ([str(tmp_path / "empty"), *out, *models], "(empty case)"),
        ([str(tmp_path / "day"), *out], "give --detector-config and --detector-weights"),
        (
            [
                str(tmp_path / "day"),
                *out,
                "--detector-config",
                "c.yaml",
                "--detector-weights",
                "w.pth",
            ],
            "model file(s) not found: c.yaml, w.pth",
        ),
    ]:
        assert batch_tool.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err, err
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert batch_tool.main([str(tmp_path / "day"), *out, "--ray", *models]) == 2
    assert "pip install .[batch]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_batch_finds_each_cases_scale_unless_turned_off():
    # not given: None, counted as on for case folders (and not an error with --slides)
    assert batch_tool.build_parser().parse_args(["c", "--output", "o"]).auto_scale is None
    on = ["c", "--output", "o", "--auto-scale"]
    assert batch_tool.build_parser().parse_args(on).auto_scale is True
    off = ["c", "--output", "o", "--no-auto-scale"]
    assert batch_tool.build_parser().parse_args(off).auto_scale is False
