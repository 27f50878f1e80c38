"""Whole runs in two precisions side by side: hand-built run folders on a tiny COCO set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from studies.precision import precision_runs
from studies.precision.runs_report import read_run

BOXES = [[10, 10, 20, 20], [50, 50, 20, 20], [10, 50, 20, 20], [50, 10, 20, 20]]


@pytest.fixture()
def tiny_set(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "height": 100, "width": 100} for i in range(4)]
    anns = [
        {"id": 4 * i + j + 1, "image_id": i, "category_id": 1, "bbox": b, "area": 400, "iscrowd": 0}
        for i in range(4)
        for j, b in enumerate(BOXES)
    ]
    cats = [{"id": 1, "name": "cell"}]
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    register_coco_instances("precision_runs_tiny", {}, str(path), str(tmp_path))
    yield "precision_runs_tiny"
    DatasetCatalog.remove("precision_runs_tiny")
    MetadataCatalog.remove("precision_runs_tiny")


def _run(root: Path, name: str, bf16: bool, found: int, log: list) -> Path:
    """A finished run folder whose detections hit ``found`` of the 4 cells of every image."""
    run = root / name
    (run / "inference" / "precision_runs_tiny").mkdir(parents=True)
    prec = f"BMC:\n  PRECISION:\n    CPU_BF16: {str(bf16).lower()}\n    CHANNELS_LAST: true\n"
    (run / "config.yaml").write_text(prec)
    (run / "metrics.json").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    dets = [
        {"image_id": i, "category_id": 1, "bbox": b, "score": 0.9}
        for i in range(4)
        for b in BOXES[:found]
    ]
    out = run / "inference" / "precision_runs_tiny"
    (out / "coco_instances_results.json").write_text(json.dumps(dets))
    ap = 100.0 * found / 4
    (out / "coco_metrics.json").write_text(json.dumps({"bbox": {"AP": ap, "AP50": ap}}))
    return run


LOG = [
    {"iteration": i, "total_loss": 1.0 - i / 1000, "time": 2.0 if i < 100 else 1.0}
    for i in range(0, 200, 20)
]


def test_read_run_dedups_a_resumed_log_and_names_the_precision(tmp_path, tiny_set):
    resumed = LOG[:6] + [{"iteration": 100, "total_loss": 5.0, "time": 9.0}] + LOG[5:]
    rec = read_run("fp32", _run(tmp_path, "a", False, 4, resumed), tiny_set, tail=2)
    assert rec.precision == "float32" and rec.iterations == 181
    assert rec.final_loss == pytest.approx(1.0 - 170 / 1000)  # mean of 160 and 180
    assert rec.sec_per_iter == pytest.approx(1.0)  # warm-up (< 100) left out
    rec = read_run("bf16", _run(tmp_path, "b", True, 2, LOG), tiny_set)
    assert rec.precision == "bf16 + channels-last" and rec.metrics["AP"] == 50.0
    with pytest.raises(FileNotFoundError, match="not finished"):
        read_run("x", tmp_path / "missing", tiny_set)


def test_page_compares_with_the_first_run(tmp_path, tiny_set, capsys):
    a = _run(tmp_path, "a", False, 4, LOG)
    b = _run(tmp_path, "b", True, 2, LOG)
    c = _run(tmp_path, "c", True, 3, LOG)
    page = tmp_path / "page.md"
    rc = precision_runs.main(
        [
            "--dataset",
            tiny_set,
            "--runs",
            f"fp32={a}",
            f"bf16={b}",
            "--seed-runs",
            f"bf16 s1={c}",
            "--samples",
            "50",
            "--output",
            str(page),
        ]
    )
    assert rc == 0
    text = page.read_text()
    # half the cells lost on every image: 101-point AP 51/101 against 100
    assert "| bf16 - fp32 | -49.5 [-49.5, -49.5] | -49.5 [-49.5, -49.5] |" in text
    assert "2 seeds of the same config: bf16 s1, bf16): AP 50.0-75.0" in text
    rc = precision_runs.main(["--dataset", tiny_set, "--runs", f"fp32={a}"])
    assert rc == 2 and "at least two runs" in capsys.readouterr().err
    rc = precision_runs.main(["--dataset", tiny_set, "--runs", f"fp32={a}", str(b)])
    assert rc == 2 and "expected LABEL=RUN_FOLDER" in capsys.readouterr().err
