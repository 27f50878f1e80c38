"""Golden count: the same images and the same seeded weights give the same report, exactly.

Pinned before the package was rearranged (issue 30): a randomly initialised but seeded detector
and cell classifier count three synthetic smears through the ``count`` command; the counts of
``summary.json`` and the whole ``cells.csv`` must equal ``tests/data/golden_count.json``.
``BMC_WRITE_GOLDEN=1`` rewrites that file (only when a change of behaviour is intended).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import torch

from bmc_detectron.tools import count as count_tool
from tests.helpers import CONFIGS
from tests.pipeline.helpers import save_random_detector, smear_bgr

GOLDEN = Path(__file__).parent / "data" / "golden_count.json"
DET_CONFIG = CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml"
DET_OPTS = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160"]
DET_OPTS += ["TEST.DETECTIONS_PER_IMAGE", "8"]
CLS_CONFIG = CONFIGS / "recognition" / "cell_classifier_R_18_synth_cpu.yaml"
CLS_OPTS = ["MODEL.BMC.CLASSIFIER.CROP_SIZE", "32"]
SUMMARY_KEYS = ("class_names", "detected", "counted", "uncertain", "classes", "me")


def _classifier_weights(path: Path) -> Path:
    from detectron2.modeling import build_model

    from bmc_detectron.config import build_cfg

    torch.manual_seed(1)
    cfg = build_cfg(str(CLS_CONFIG), [*CLS_OPTS, "MODEL.DEVICE", "cpu"])
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


def _count(tmp_path: Path) -> dict:
    fields = tmp_path / "case"
    fields.mkdir()
    for seed in range(3):
        cv2.imwrite(str(fields / f"field{seed}.png"), smear_bgr(seed, size=160))
    det = save_random_detector(tmp_path / "det.pth", DET_OPTS)
    cls = _classifier_weights(tmp_path / "cls.pth")
    out = tmp_path / "report"
    args = ["--detector-config", str(DET_CONFIG), "--detector-weights", str(det)]
    args += ["--detector-opts", *DET_OPTS, "--classifier-config", str(CLS_CONFIG)]
    args += ["--classifier-weights", str(cls), "--classifier-opts", *CLS_OPTS]
    args += ["--input", str(fields / "*.png"), "--score-threshold", "0", "--device", "cpu"]
    args += ["--uncertain-below", "0.11", "--no-progress", "--output", str(out)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert count_tool.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((out / "summary.json").read_text())
    cells = (out / "cells.csv").read_text().replace(str(fields), "CASE")
    return {"summary": {k: summary[k] for k in SUMMARY_KEYS}, "cells_csv": cells}


def test_count_report_equals_the_golden_one(tmp_path):
    got = _count(tmp_path)
    if os.environ.get("BMC_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert got["summary"] == want["summary"]
    assert got["cells_csv"] == want["cells_csv"]
    assert got["summary"]["detected"] > 10
