"""The one- vs two-stage comparison's other detectors: detectron2's Faster R-CNN and FCOS (built
from yacs by BMCFCOS), CPU-sized, with the trainer's precision path."""

from __future__ import annotations

import json

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.fcos import FCOS

from bmc_detectron.config import build_cfg
from bmc_detectron.data.classes import marrow_metadata
from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.data.synthetic import generate_dataset
from bmc_detectron.engine.precision import apply_precision
from bmc_detectron.modeling import BMCFCOS
from studies.detectors import compare_detectors
from tests.helpers import CONFIGS, make_inputs, sgd_steps

BOXES = [[[8, 10, 40, 44, 0], [30, 30, 60, 62, 2]], [[20, 20, 50, 50, 1]]]
TINY = ["MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.RETINANET.NUM_CLASSES", 3]
COMPARE = CONFIGS / "cpu" / "compare"


def _model(name: str, *opts):
    cfg = build_cfg(str(COMPARE / name), [*TINY, *opts])
    torch.manual_seed(0)
    return cfg, apply_precision(build_model(cfg), cfg)


def _train(model, steps: int = 10) -> list:
    # 128 px: FCOS's GroupNorm needs more than one value per group on P7 (stride 128)
    return sgd_steps(model, make_inputs((128, 128), BOXES), steps)


def test_fcos_builds_from_yacs_with_the_config_values():
    cfg, model = _model("fcos_R_18_FPN_cpu.yaml", "MODEL.BMC.FCOS.CENTER_SAMPLING_RADIUS", 2.5)
    assert isinstance(model, BMCFCOS) and isinstance(model, FCOS)
    assert model.num_classes == 3 and model.center_sampling_radius == 2.5
    assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert model.head.cls_score.out_channels == 3  # one anchor point per location
    norms = [m for m in model.head.cls_subnet if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == cfg.MODEL.RETINANET.NUM_CONVS


@pytest.mark.parametrize("name", ["fcos_R_18_FPN_cpu.yaml", "faster_rcnn_R_18_FPN_cpu.yaml"])
def test_detector_loss_falls_and_predicts_boxes_in_the_image(name):
    _, model = _model(name, "MODEL.ROI_HEADS.NUM_CLASSES", 3)
    history = _train(model)
    assert history[-1] < history[0], history
    model.eval()
    with torch.no_grad():
        inst = model(make_inputs((256,), ((),)))[0]["instances"]
    boxes = inst.pred_boxes.tensor
    assert boxes.dtype == torch.float32
    assert (boxes >= 0).all() and (boxes <= 256).all()
    assert inst.pred_classes.max().item() < 3 if len(inst) else True


def test_faster_rcnn_bf16_covers_rpn_and_box_heads_and_keeps_losses_float32():
    _, model = _model(
        "faster_rcnn_R_18_FPN_cpu.yaml",
        *("MODEL.ROI_HEADS.NUM_CLASSES", 3, "BMC.PRECISION.CPU_BF16", True),
    )
    assert getattr(model.backbone.forward, "bmc_bf16", False)
    assert getattr(model.proposal_generator.rpn_head.forward, "bmc_bf16", False)
    assert getattr(model.roi_heads.box_head.forward, "bmc_bf16", False)
    # the box predictor (class scores, deltas) and the losses stay float32
    assert not getattr(model.roi_heads.box_predictor.forward, "bmc_bf16", False)
    seen = set()
    model.roi_heads.box_head.register_forward_hook(lambda m, a, out: seen.add(out.dtype))
    history = _train(model, steps=3)
    assert seen == {torch.float32} and all(torch.isfinite(torch.tensor(history)))


def test_gflops_of_a_two_stage_detector_count_the_whole_model():
    from bmc_detectron.bench.model_cost import count_gflops

    _, rcnn = _model("faster_rcnn_R_18_FPN_cpu.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 3)
    _, fcos = _model("fcos_R_18_FPN_cpu.yaml")
    two, one = count_gflops(rcnn, (128, 160)), count_gflops(fcos, (128, 160))
    assert two["counted"].startswith("whole model") and one["counted"] == "backbone+head"
    for r in (two, one):
        assert r["backbone_gflops"] > 0 and r["head_gflops"] > 0
        assert abs(r["backbone_gflops"] + r["head_gflops"] - r["gflops"]) < 1e-6
    # RPN + ROI heads on 1000 proposals cost more than FCOS's shared head
    assert two["head_gflops"] > one["head_gflops"]


@pytest.mark.slow
def test_comparison_command_on_a_tiny_schedule(tmp_path):
    """tools/compare_detectors: the four detectors trained, evaluated, timed, on one page.
    160 px: batch-1 FCOS needs more than one value per GroupNorm group on P7 (stride 128)."""
    json_file = generate_dataset(tmp_path / "synth", "train", 3, seed=0, height=160, width=160)
    register_coco_dataset(
        "compare_smoke", json_file, tmp_path / "synth" / "train", metadata=marrow_metadata()
    )
    try:
        out, page = tmp_path / "cmp", tmp_path / "docs" / "RESULTS_detectors.md"
        argv = ["--train-dataset", "compare_smoke", "--test-dataset", "compare_smoke"]
        argv += ["--num-classes", "11", "--seeds", "0", "--max-iter", "2", "--in-process"]
        argv += ["--output", str(out), "--report", str(page), "--latency-images", "1"]
        argv += ["--latency-rounds", "1", "--no-train-timing", "--latency-threads", "1"]
        argv += ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1"]
        argv += ["INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "160"]
        argv += ["INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "160"]
        argv += ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]
        assert compare_detectors.main(argv) == 0
        names = ["d2_retinanet_R_18_FPN_cpu", "faster_rcnn_R_18_FPN_cpu", "fcos_R_18_FPN_cpu"]
        names.append("retinanet_R_18_full_cpu")
        for name in names:
            metrics = out / "runs" / name / "seed0" / "inference" / "compare_smoke"
            assert (metrics / "coco_metrics.json").is_file(), name
        text = page.read_text()
        assert "full model `retinanet_R_18_full_cpu` vs `d2_retinanet_R_18_FPN_cpu`" in text
        assert "| config | Prim | Lym |" in text  # per-class AP of 11 classes
        latency = (out / "latency" / "latency.md").read_text()
        assert all(f"| {n} |" in latency for n in names)
        # GFLOPs column of the mean table: Faster R-CNN (whole model) costs more than RetinaNet
        rows = {
            ln.split("|")[1].strip(): ln.split("|")
            for ln in text.splitlines()
            if ln.startswith("| ") and "/1 |" in ln
        }
        assert float(rows[names[1]][-2]) > float(rows[names[0]][-2]) > 0
        # the latency column is the side-by-side measurement, not each run's own timing
        timed = json.loads((out / "latency" / "latency.json").read_text())
        medians = {m["name"]: m["median_ms"] for m in timed["models"]}
        assert rows[names[2]][-4].strip() == f"{medians[names[2]]:.1f}"
        # the report again without training or timing: the latency table is kept as it was
        stamp = (out / "latency" / "latency.md").stat().st_mtime_ns
        assert compare_detectors.main(["--no-run", "--reuse-latency", *argv]) == 0
        assert (out / "latency" / "latency.md").stat().st_mtime_ns == stamp
        assert page.is_file()
        # one lane's runs: --tasks trains exactly those and writes no page
        page.unlink()
        assert compare_detectors.main(["--tasks", "fcos_R_18_FPN_cpu:1", *argv]) == 0
        assert (out / "runs" / "fcos_R_18_FPN_cpu" / "seed1" / "run.json").is_file()
        assert not page.exists()
    finally:
        unregister_dataset("compare_smoke")
