"""`make demo` end to end at a tiny size: every stage runs and leaves what the README promises."""

from __future__ import annotations

import json

import pytest

from bmc_detectron.tools import demo as run_demo


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BMC_DATASETS", str(tmp_path / "datasets"))
    out = tmp_path / "demo"
    args = ["--output", str(out), "--num-train", "8", "--num-test", "2", "--size", "128"]
    args += ["--detector-iters", "4", "--classifier-iters", "4", "--precision", "fp32"]
    assert run_demo.main(args) == 0
    for model in ("detector", "classifier"):
        assert (out / model / "model_final.pth").is_file()
        assert (out / model / "config.yaml").is_file()
        sidecar = json.loads((out / "onnx" / f"{model}.onnx.json").read_text())
        assert sidecar["verification"]["passed"]
    summary = json.loads((out / "count" / "summary.json").read_text())
    assert len(summary["fields"]) == 2
    assert (out / "count" / "report.html").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "count report:" in printed and str(out / "count" / "report.html") in printed
    # the held-out fields' count scored against their truth, per case of 10 fields
    assert "count vs truth (bmc_synth_test): recall" in printed
    assert "differential MAE per case of 10 fields" in printed


@pytest.mark.slow
def test_demo_on_real_cell_composites(shared_root, tmp_path, monkeypatch, capsys):
    """`make demo-real` at a tiny size: composites of real PBC cells are composed, both models
    train, the held-out fields are counted and scored (recall, crowding, per case)."""
    monkeypatch.setenv("BMC_DATASETS", str(tmp_path / "datasets"))
    out = tmp_path / "demo_real"
    args = ["--data", "marrow_real", "--output", str(out), "--num-train", "3", "--num-test", "2"]
    args += ["--detector-iters", "3", "--classifier-iters", "3", "--precision", "fp32"]
    assert run_demo.main(args) == 0
    composed = tmp_path / "datasets" / "marrow_real" / "annotations"
    assert sorted(p.name for p in composed.glob("*.json")) == ["train.json", "val.json"]
    summary = json.loads((out / "count" / "summary.json").read_text())
    assert len(summary["fields"]) == 2
    printed = capsys.readouterr().out
    assert "count vs truth (marrow_real_val): recall" in printed
    assert "recall by crowding:" in printed
