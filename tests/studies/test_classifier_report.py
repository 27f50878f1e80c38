"""The classifier results page: numbers from the run's files, verdicts against the targets."""

from __future__ import annotations

import json

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from bmc_detectron.config import build_cfg
from studies.recognition import classifier_report

CONFIG = "configs/recognition/cell_classifier_R_18_synth_cpu.yaml"
OPTS = ["MODEL.BMC.CLASSIFIER.NUM_CLASSES", 2, "MODEL.BMC.CLASSIFIER.CROP_SIZE", 32]
OPTS += ["MODEL.BMC.CLASSIFIER.CLASS_NAMES", ["A", "B"]]


def _fake_run(tmp_path):
    run = tmp_path / "clf"
    run.mkdir()
    cfg = build_cfg(CONFIG, OPTS)
    (run / "config.yaml").write_text(cfg.dump())
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(run)).save("model_final")
    (run / "log.txt").write_text(
        "Contents of args.config_file=configs/recognition/x.yaml:\n"
        "d2.engine.hooks INFO: Overall training speed: 98 iterations in 0:25:30 (15.6122 s / it)\n"
    )
    per_class = {
        "A": {"precision": 0.9, "recall": 0.8, "f1": 0.847, "support": 10, "absent": False},
        "B": {"precision": None, "recall": None, "f1": None, "support": 0, "absent": True},
    }
    metrics = {
        "dataset": "toy_val",
        "num_samples": 10,
        "accuracy": 0.8,
        "macro_f1": 0.75,
        "macro_precision": 0.9,
        "macro_recall": 0.8,
        "absent_classes": ["B"],
        "per_class": per_class,
    }
    folder = run / "inference" / "toy_val"
    folder.mkdir(parents=True)
    (folder / "classification_metrics.json").write_text(json.dumps(metrics))
    return run


def test_training_time_is_read_from_the_log(tmp_path):
    run = _fake_run(tmp_path)
    assert classifier_report.training_time(run / "log.txt") == {
        "iterations": 98,
        "minutes": 25.5,
        "s_per_iter": 15.6122,
    }
    assert classifier_report.training_time(tmp_path / "missing.txt") == {}


def test_page_has_the_numbers_and_verdicts(tmp_path):
    run = _fake_run(tmp_path)
    out = tmp_path / "docs" / "page.md"
    args = ["--run", str(run), "--output", str(out), "--throughput-threads", "1"]
    assert classifier_report.main(args + ["--batch-size", "4"]) == 0
    page = out.read_text()
    assert "| toy_val | 10 | 80.0 | 0.750 | 0.900 | 0.800 | 98 it, 25.5 min | 15.61 |" in page
    assert "| top-1 >= 85.0 % | 80.0 | not met |" in page
    assert "| macro-F1 >= 0.8 | 0.750 | not met |" in page
    assert "| training <= 30.0 min on 2 CPU cores | 25.5 | met |" in page
    assert "| B | - | - | - | 0 | absent from this set |" in page
    assert "configs/recognition/x.yaml" in page and str(run) not in page


def test_missing_run_is_a_clear_error(tmp_path, capsys):
    assert classifier_report.main(["--run", str(tmp_path / "nope")]) == 2
    assert "no model_final.pth" in capsys.readouterr().err
