"""The prepared GPU check: its building blocks on hand-built cases, its page, and the whole
command as a dry run on the CPU (the CUDA paths run where a GPU is lent)."""

from __future__ import annotations

import json

import pytest
import torch
from detectron2.structures import Boxes, Instances

from bmc_detectron.data.classes import marrow_metadata
from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.data.synthetic import generate_dataset
from studies.gpu_check import checks as gc
from studies.gpu_check import gpu_check
from studies.gpu_check import runs as gpu_runs
from studies.gpu_check.report import page
from tests.helpers import CONFIGS

CUDA_OPS = [
    "aten::conv2d",
    "torchvision::deform_conv2d",
    "void vision::ops::(anonymous namespace)::deformable_im2col_kernel<float>(int, float const*)",
]


@pytest.mark.parametrize("modulated", [False, True])
def test_dcn_parity_on_the_cpu_path(modulated):
    rec = gc.dcn_parity("cpu", modulated=modulated, size=(1, 8, 9, 11))
    assert list(rec["paths"]) == ["cpu float32"]  # no CUDA paths without CUDA
    path = rec["paths"]["cpu float32"]
    assert set(path["errors"]) == {"output", "input", "weight", "offsets"}
    assert max(path["errors"].values()) < 1e-5 and rec["ok"] and path["ok"]
    # the layer on the CPU samples bilinearly; torchvision's op is only the reference
    assert "aten::grid_sampler_2d" in path["ops"]
    assert "torchvision::deform_conv2d" not in path["ops"]


def test_dcn_parity_catches_a_wrong_path(monkeypatch):
    import bmc_detectron.modeling.deform as deform

    sampled = deform.deform_conv2d_sampled
    monkeypatch.setattr(deform, "deform_conv2d_sampled", lambda *a, **k: sampled(*a, **k) * 1.01)
    path = gc.dcn_parity("cpu", size=(1, 8, 9, 11))["paths"]["cpu float32"]
    assert path["errors"]["output"] > 1e-3 and not path["ok"]


def test_expected_kernel_per_device():
    assert gc._expected_kernel(CUDA_OPS, "cuda")
    assert not gc._expected_kernel(["aten::grid_sampler_2d"], "cuda")  # the CPU path on CUDA
    assert not gc._expected_kernel(CUDA_OPS[:2], "cuda")  # the op without its CUDA kernel
    assert gc._expected_kernel(["aten::grid_sampler_2d"], "cpu")
    assert not gc._expected_kernel(["aten::grid_sampler_2d", CUDA_OPS[1]], "cpu")


def test_choose_max_iter():
    kw = dict(requested=1000, minimum=100, overhead_s=60, margin=1.25)
    # (420 / 2 - 60) s per run / (0.3 * 1.25) s per iteration = 400
    assert gc.choose_max_iter(420, 0.3, 2, **kw) == 400
    assert gc.choose_max_iter(420, 0.3, 2, **{**kw, "requested": 300}) == 300
    assert gc.choose_max_iter(200, 0.3, 2, **kw) == 100  # 106 rounds down to 100
    assert gc.choose_max_iter(150, 0.3, 2, **kw) == 0  # 40 < minimum
    assert gc.choose_max_iter(100, 0.3, 2, **kw) == 0  # the overhead alone does not fit
    with pytest.raises(ValueError):
        gc.choose_max_iter(100, 0.0, 2, **kw)


def _dets(boxes, scores, classes) -> Instances:
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    return inst


def test_detection_agreement_hand_built():
    a = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0.9, 0.8, 0.7], [0, 1, 2])
    # first: same box, score -0.05; second: shifted by 1 px (IoU 361/441 < 0.9); third: same
    # box but another class
    b = _dets([[0, 0, 10, 10], [21, 21, 41, 41], [50, 50, 60, 60]], [0.85, 0.8, 0.7], [0, 1, 0])
    rec = gc.detection_agreement(a, b)
    assert rec["compared"] == 3 and rec["reproduced"] == pytest.approx(1 / 3)
    assert rec["median_iou"] == pytest.approx(1.0) and rec["max_score_diff"] == pytest.approx(0.05)
    assert gc.detection_agreement(a, b, iou=0.8)["reproduced"] == pytest.approx(2 / 3)
    assert gc.detection_agreement(a, b, top=1)["compared"] == 1
    assert gc.detection_agreement(a, _dets(torch.zeros(0, 4), [], []))["reproduced"] == 0.0


def test_schedule_opts():
    assert gpu_runs.schedule(400) == [
        *("SOLVER.MAX_ITER", "400", "SOLVER.STEPS", "(300, 360)"),
        *("SOLVER.WARMUP_ITERS", "80", "SOLVER.CHECKPOINT_PERIOD", "401"),
    ]
    # round(0.9 * 4) == 4 is not a step; no warm-up
    assert gpu_runs.schedule(4)[3] == "(3,)" and gpu_runs.schedule(4)[5] == "0"


def test_checkpointed_records_a_failure_and_goes_on(tmp_path):
    ck = gpu_runs.Checkpointed(tmp_path / "r.json", {}, deadline=1e12)
    ck.step("bad", lambda: 1 / 0)
    ck.step("good", lambda: {"x": 1})
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["bad"] == {"error": "ZeroDivisionError: division by zero"}
    assert saved["good"] == {"x": 1} and set(saved["step_seconds"]) == {"bad", "good"}


def test_page_marks_the_gpu_and_says_what_failed():
    result = {
        "command": "python -m studies.gpu_check.gpu_check --output o",
        "environment": {
            "gpu": "NVIDIA H200",
            "gpu_memory_gib": 139.8,
            "capability": "9.0",
            "cuda": "13.0",
            "cudnn": 91000,
            "torch": "2.11.0",
            "torchvision": "0.26.0",
            "detectron2": "0.7.2",
            "cpu": "x",
            "logical_cores": 16,
        },
        "step": {
            "config": "full.yaml",
            "batch_size": 16,
            "precisions": {
                "float32": {"precision": "float32", "median_ms": 400.0, "p90_ms": 410.0, "n": 5},
                "amp": {
                    "precision": "float16 autocast",
                    "median_ms": 200.0,
                    "p90_ms": 220.0,
                    "n": 5,
                },
            },
        },
        "schedule": {"iterations": 300},
        "runs": {"error": "RuntimeError: CUDA out of memory"},
    }
    text = page(result)
    assert text.startswith("# GPU check: measured on NVIDIA H200\n")
    assert "| amp | float16 autocast | 200.0 | 220.0 | 5 | 2.00x |" in text
    assert "**runs failed**: `RuntimeError: CUDA out of memory`" in text
    assert "## Deformable convolution" in text and "Not run." in text


@pytest.fixture()
def synth(tmp_path):
    root = tmp_path / "synth"
    json_file = generate_dataset(root, "train", 4, seed=0, height=96, width=96)
    register_coco_dataset("gpu_check_synth", json_file, root / "train", metadata=marrow_metadata())
    yield "gpu_check_synth"
    unregister_dataset("gpu_check_synth")


@pytest.mark.slow
def test_dry_run_on_the_cpu_end_to_end(tmp_path, synth):
    cpu = CONFIGS / "cpu"
    out = tmp_path / "out"
    configs = [cpu / f"retinanet_R_18_{n}_cpu.yaml" for n in ("FPN", "full", "PAN_SE_DCN")]
    argv = (
        f"--output {out} --device cpu --train-dataset {synth} --test-dataset {synth} "
        f"--num-classes 11 --configs {configs[0]} {configs[1]} --dcn-config {configs[2]} "
        "--ims-per-batch 2 --workers 0 --max-iter 2 --min-iter 1 --iter-multiple 1 "
        "--run-overhead-s 1 --budget-s 3000 --step-iters 1 --latency-images 1 "
        "--agreement-images 2 MODEL.FPN.OUT_CHANNELS 32 MODEL.RETINANET.NUM_CONVS 1 "
        "INPUT.MIN_SIZE_TRAIN (64,) INPUT.MAX_SIZE_TRAIN 64 INPUT.MIN_SIZE_TEST 64 "
        "INPUT.MAX_SIZE_TEST 64 MODEL.RETINANET.SCORE_THRESH_TEST 0.0"
    ).split()
    assert gpu_check.main(argv) == 0
    result = json.loads((out / "gpu_check.json").read_text())
    assert not [k for k, v in result.items() if isinstance(v, dict) and "error" in v]
    assert result["schedule"]["iterations"] == 2
    assert [r["status"] for r in result["runs"]] == ["ok", "ok"]
    assert all(r["metrics"]["AP"] >= 0 and r["latency_ms"] > 0 for r in result["runs"])
    assert "aten::grid_sampler_2d" in result["dcn_model"]["ops"]
    agr = result["cpu_agreement"]
    assert agr["images"] == 2 and agr["reproduced"] == 1.0  # the same CPU twice here
    assert agr["cpu_metrics"]["AP"] == pytest.approx(agr["device_metrics"]["AP"])
    text = (out / "gpu_check.md").read_text()
    assert text.startswith("# GPU check: a dry run without a GPU")
    report = tmp_path / "page.md"
    argv = ["--report-from", str(out / "gpu_check.json"), "--report", str(report)]
    assert gpu_check.main(argv) == 0
    assert report.read_text() == text
