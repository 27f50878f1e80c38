"""The refinement cascade (modeling/cascade.py): stages, their samples, refinement, config."""

from __future__ import annotations

import math

import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from bmc_detectron.modeling.cascade import RefinementCascade
from bmc_detectron.modeling.refine import REFINE_DELTA_WEIGHTS, BoxRefinementHead
from tests.helpers import detections, pyramid_features

STRIDES = (8, 16, 32)


def _cascade(ious=(0.5, 0.6), **kwargs) -> RefinementCascade:
    torch.manual_seed(0)
    args = dict(in_channels=4, strides=STRIDES, fc_dim=16, gt_copies=0, loss_weight=1.0)
    args.update(kwargs)
    stages = []
    for t, iou in enumerate(ious, start=1):
        weights = tuple(w * t for w in REFINE_DELTA_WEIGHTS)
        stages.append(BoxRefinementHead(**args, foreground_iou=iou, delta_weights=weights))
    return RefinementCascade(stages=stages)


def _features(size=(64, 64), channels=4):
    return pyramid_features(STRIDES, size, channels)


_dets = detections


def _gt(boxes, classes=None, size=(64, 64)) -> Instances:
    gt = Instances(size)
    gt.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    gt.gt_classes = torch.tensor(classes or [0] * len(boxes))
    return gt


def _predict(stage: BoxRefinementHead, deltas, class_bias=None) -> None:
    """Make a stage predict the same (weighted) deltas, and class logits, for every box."""
    with torch.no_grad():
        stage.deltas.weight.zero_()
        stage.deltas.bias.copy_(torch.tensor(deltas))
        if class_bias is not None:
            stage.classes.weight.zero_()
            stage.classes.bias.copy_(torch.tensor(class_bias))


def test_second_stage_learns_from_the_first_stages_refined_samples():
    cascade = _cascade()
    gt = _gt([[10.0, 10.0, 30.0, 30.0]])
    # a detection 2 px right of the gt: the first stage's delta moves it exactly onto the gt
    det = _dets([[12.0, 10.0, 32.0, 30.0]], [0.9], [0])
    _predict(cascade.stages[0], [-1.0, 0.0, 0.0, 0.0])  # dx = -1 / 10 * 20 px = -2 px
    _predict(cascade.stages[1], [0.0, 0.0, 0.0, 0.0])
    losses = cascade.losses(_features(), [det], [gt])
    assert set(losses) == {"loss_refine_box", "loss_refine_box_2"}
    # stage 1: its samples are the detection (target dx -1, predicted -1) and the gt (target 0,
    # predicted -1): L1 1 over 2 samples; stage 2: the detection refined onto the gt (0 vs 0) and
    # the gt moved 2 px left (target dx +2 / 20 * 20 = +2, predicted 0): L1 2 over 2 samples
    assert losses["loss_refine_box"].item() == pytest.approx(0.5, abs=1e-5)
    assert losses["loss_refine_box_2"].item() == pytest.approx(1.0, abs=1e-5)


def test_refinement_runs_every_stage_and_averages_the_classifiers():
    cascade = _cascade(classify=True, num_classes=3, second_nms=False)
    # stage 1 moves right by 0.1 w (delta 1 at weight 10), stage 2 by 0.05 w (delta 1 at 20)
    _predict(cascade.stages[0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, math.log(2.0), 0.0])  # p 2/5
    _predict(cascade.stages[1], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, math.log(12.0), 0.0])  # 4/5
    det = _dets([[10.0, 10.0, 30.0, 20.0]], [0.9], [2])
    (out,) = cascade.refine(_features(), [det])
    # 20 px wide: +2 px, then +1 px
    assert out.pred_boxes.tensor[0].tolist() == pytest.approx([13.0, 10.0, 33.0, 20.0])
    assert out.scores.item() == pytest.approx(math.sqrt(0.9 * (0.4 + 0.8) / 2), abs=1e-6)
    assert out.pred_classes.tolist() == [2]


def test_detector_builds_trains_and_refines_with_a_cascade():
    from detectron2.modeling import build_model

    from bmc_detectron.config import build_cfg
    from tests.helpers import make_inputs

    cfg = build_cfg(
        "configs/cpu/retinanet_R_18_full_REFINE_CLS_cpu.yaml",
        ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.NUM_CLASSES", 3]
        + ["MODEL.BMC.REFINE.CASCADE_IOUS", "[0.6, 0.7]"]
        + ["MODEL.RETINANET.SCORE_THRESH_TEST", 0.0],  # untrained: scores at the prior
    )
    model = build_model(cfg)
    stages = model.refinement.stages
    assert [s.foreground_iou for s in stages] == [0.5, 0.6, 0.7]
    assert [s.transform.weights for s in stages] == [
        (10, 10, 5, 5),
        (20, 20, 10, 10),
        (30, 30, 15, 15),
    ]
    batch = make_inputs((96, 96), [[[8, 10, 40, 44, 0], [50, 30, 90, 70, 2]]])
    with EventStorage():
        losses = model(batch)
    for name in ("loss_refine_box", "loss_refine_cls"):
        assert {name, f"{name}_2", f"{name}_3"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        (out,) = model(batch)
    assert len(out["instances"]) > 0


def test_one_stage_is_no_cascade():
    with pytest.raises(ValueError, match="two or more stages"):
        RefinementCascade(stages=[BoxRefinementHead(in_channels=4, strides=STRIDES)])


def test_bad_cascade_iou_is_named():
    from bmc_detectron.config import ConfigError, build_cfg

    with pytest.raises(ConfigError, match=r"CASCADE_IOUS \[0.6, 1.5\]: each must be in"):
        build_cfg(
            "configs/cpu/retinanet_R_18_full_REFINE_cpu.yaml",
            ["MODEL.BMC.REFINE.CASCADE_IOUS", "[0.6, 1.5]"],
        )
