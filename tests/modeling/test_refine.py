"""The box refinement stage (modeling/refine.py): samples, losses, refinement, the detector hook."""

from __future__ import annotations

import math

import pytest
import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from bmc_detectron.modeling.refine import REFINE_DELTA_WEIGHTS, BoxRefinementHead, jitter_boxes
from tests.helpers import detections, pyramid_features

STRIDES = (8, 16, 32)


def _head(**kwargs) -> BoxRefinementHead:
    torch.manual_seed(0)
    args = dict(in_channels=4, strides=STRIDES, fc_dim=16, gt_copies=0)
    args.update(kwargs)
    return BoxRefinementHead(**args)


def _features(size=(64, 64), channels=4):
    return pyramid_features(STRIDES, size, channels)


_dets = detections


def _gt(boxes, size=(64, 64)) -> Instances:
    gt = Instances(size)
    gt.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    gt.gt_classes = torch.zeros(len(boxes), dtype=torch.int64)
    return gt


def _set_deltas(head: BoxRefinementHead, deltas, iou_logit=None) -> None:
    """Make the head predict the same (weighted) deltas for every box."""
    with torch.no_grad():
        head.deltas.weight.zero_()
        head.deltas.bias.copy_(torch.tensor(deltas))
        if iou_logit is not None:
            head.iou.weight.zero_()
            head.iou.bias.fill_(iou_logit)


def test_jitter_stays_within_its_bounds():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0]])  # w 40, h 20, centre (30, 30)
    out = jitter_boxes(boxes, copies=200, scale=0.1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (200, 4)
    centre = (out[:, :2] + out[:, 2:]) / 2
    wh = out[:, 2:] - out[:, :2]
    assert (centre - torch.tensor([30.0, 30.0])).abs().le(torch.tensor([4.0, 2.0]) + 1e-4).all()
    ratio = wh / torch.tensor([40.0, 20.0])
    assert ratio.min() >= math.exp(-0.1) - 1e-5 and ratio.max() <= math.exp(0.1) + 1e-5
    assert ratio.std() > 0.01  # random, not the box itself
    assert jitter_boxes(boxes, copies=0, scale=0.1).shape == (0, 4)


def test_samples_are_best_detections_gt_and_copies_clipped():
    head = _head(proposals_per_image=2, gt_copies=3)
    det = _dets([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 70, 9]], [0.2, 0.9, 0.5], [0, 0, 1])
    (samples,) = head.samples([det], [_gt([[30.0, 30.0, 40.0, 44.0]])])
    # the two best detections (0.9, 0.5; the second clipped to the 64-px image), the gt, 3 copies
    assert len(samples) == 2 + 1 + 3
    assert samples.tensor[:3].tolist() == [[5, 5, 20, 20], [1, 1, 64, 9], [30, 30, 40, 44]]


def test_box_loss_is_the_l1_of_faster_rcnn_deltas_over_the_samples():
    head = _head(loss_weight=1.0, foreground_iou=0.5)
    _set_deltas(head, [0.0, 0.0, 0.0, 0.0])
    gt = _gt([[10.0, 10.0, 30.0, 30.0]])
    # a detection 2 px right of the gt (IoU 18/22 > 0.5), one far away (background)
    det = _dets([[12.0, 10.0, 32.0, 30.0], [40.0, 40.0, 60.0, 60.0]], [0.9, 0.8], [0, 0])
    losses = head.losses(_features(), [det], [gt])
    # foreground: the detection (dx = 10 * -2 / 20 = -1) and the gt itself (0); 3 samples
    assert losses["loss_refine_box"].item() == pytest.approx(1.0 / 3, abs=1e-6)
    assert "loss_refine_iou" not in losses


def test_refine_moves_boxes_by_the_predicted_deltas_and_rescores():
    head = _head(iou_score=True)
    # dx = 0.1 * w after the weights, dw = exp(0.1)
    _set_deltas(head, [1.0, 0.0, 0.5, 0.0], iou_logit=0.0)  # IoU sigmoid(0) = 0.5
    det = _dets([[10.0, 10.0, 30.0, 20.0]], [0.5], [2])
    (out,) = head.refine(_features(), [det])
    cx, w = 20.0 + 0.1 * 20, 20 * math.exp(0.5 / REFINE_DELTA_WEIGHTS[2])
    assert out.pred_boxes.tensor[0].tolist() == pytest.approx([cx - w / 2, 10, cx + w / 2, 20])
    assert out.scores.tolist() == pytest.approx([math.sqrt(0.5 * 0.5)])
    assert out.pred_classes.tolist() == [2]


def test_refine_clips_and_suppresses_duplicates_again():
    head = _head()
    _set_deltas(head, [0.0, 0.0, 0.0, 0.0])
    # two boxes of one class at IoU 0.6 (kept by the dense NMS at 0.5? no: the refined set is
    # NMSed again at 0.5, so the weaker one goes); a third of another class stays
    det = _dets(
        [[0, 0, 20, 20], [0, 0, 20, 12], [0, 0, 20, 12], [50, 50, 80, 70]],
        [0.9, 0.8, 0.7, 0.6],
        [0, 0, 1, 1],
    )
    (out,) = head.refine(_features(), [det])
    assert out.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert out.pred_boxes.tensor[-1].tolist() == [50, 50, 64, 64]
    head.second_nms = False
    (out,) = head.refine(_features(), [det])
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_training_the_head_lowers_its_loss():
    head = _head(loss_weight=1.0)
    features = _features()
    gt = [_gt([[10.0, 12.0, 34.0, 30.0], [36.0, 30.0, 60.0, 58.0]])]
    boxes = [[14.0, 12.0, 36.0, 34.0], [8.0, 10.0, 30.0, 30.0], [38.0, 34.0, 62.0, 60.0]]
    det = [_dets(boxes, [0.9, 0.8, 0.7], [0, 0, 0])]
    opt = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    history = []
    torch.manual_seed(0)
    for _ in range(60):
        loss = head.losses(features, det, gt)["loss_refine_box"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[-10:]) < 0.5 * sum(history[:10]), history


@pytest.mark.parametrize("detach", [False, True])
def test_detached_features_get_no_gradient(detach):
    head = _head(gt_copies=2, iou_score=True, detach_features=detach)
    features = [f.requires_grad_(True) for f in _features()]
    det = [_dets([[14.0, 12.0, 36.0, 34.0]], [0.9], [0])]
    losses = head.losses(features, det, [_gt([[10.0, 12.0, 34.0, 30.0]])])
    sum(losses.values()).backward()
    reached = any(f.grad is not None and f.grad.abs().sum() > 0 for f in features)
    assert reached is not detach
    assert head.deltas.weight.grad.abs().sum() > 0


def test_detector_with_refinement_trains_and_refines():
    from detectron2.modeling import build_model

    from bmc_detectron.config import build_cfg
    from tests.helpers import make_inputs

    cfg = build_cfg(
        "configs/cpu/retinanet_R_18_full_REFINE_IOU_cpu.yaml",
        ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.NUM_CLASSES", 3]
        + ["MODEL.RETINANET.SCORE_THRESH_TEST", 0.0],  # untrained: scores at the prior
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = make_inputs((96, 96), [[[8, 10, 40, 44, 0], [50, 30, 90, 70, 2]]])
    with EventStorage():
        losses = model(batch)
    assert {"loss_refine_box", "loss_refine_iou"} <= set(losses)
    model.eval()
    images = model.preprocess_image(batch)
    features = [model.backbone(images.tensor)[f] for f in model.head_in_features]
    with torch.no_grad():
        predictions = model.head(features)

        def copies():  # detectron2's inference applies the sigmoid in place
            return [[x.clone() for x in level] for level in predictions]

        dense = model.dense_detections(images, features, copies())[0]
        refined = model.forward_inference(images, features, copies())[0]
        _set_deltas(model.refinement, [0.0, 0.0, 0.0, 0.0], iou_logit=50.0)
        unmoved = model.forward_inference(images, features, copies())[0]
    assert len(dense) > 0 and len(refined) <= len(dense)
    # zero deltas and an IoU of 1: the dense detections come back clipped (the untrained model's
    # boxes spill over the image: NMSed again once clipped), scores sqrt(score * 1)
    dense.pred_boxes.clip(dense.image_size)
    dense = dense[batched_nms(dense.pred_boxes.tensor, dense.scores, dense.pred_classes, 0.5)]
    assert torch.allclose(unmoved.pred_boxes.tensor, dense.pred_boxes.tensor)
    assert torch.allclose(unmoved.scores, dense.scores.sqrt())


def test_classifier_learns_gt_classes_and_background_and_rescores():
    head = _head(classify=True, num_classes=3, loss_weight=1.0)
    with torch.no_grad():  # uniform probabilities: the loss is log(K + 1)
        head.classes.weight.zero_()
        head.classes.bias.zero_()
    gt = _gt([[10.0, 10.0, 30.0, 30.0]])
    gt.gt_classes = torch.tensor([2])
    det = _dets([[11.0, 10.0, 31.0, 30.0], [40.0, 40.0, 60.0, 60.0]], [0.9, 0.8], [2, 0])
    losses = head.losses(_features(), [det], [gt])
    assert losses["loss_refine_cls"].item() == pytest.approx(math.log(4), abs=1e-5)
    # the targets: the detection and the gt -> class 2, the far detection -> background (3)
    with torch.no_grad():
        head.classes.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 5.0]))
    mixed = head.losses(_features(), [det], [gt])["loss_refine_cls"].item()
    expected = -math.log(math.exp(5) / (2 + 2 * math.exp(5)))  # each target class at e^5 / Z
    assert mixed == pytest.approx(expected, abs=1e-5)
    # rescoring: the geometric mean of the score and its class's probability
    _set_deltas(head, [0.0, 0.0, 0.0, 0.0])
    with torch.no_grad():
        head.classes.bias.copy_(torch.tensor([0.0, 0.0, math.log(2.0), 0.0]))  # p(2) = 2 / 5
    (out,) = head.refine(_features(), [_dets([[10.0, 10.0, 30.0, 30.0]], [0.9], [2])])
    assert out.scores.item() == pytest.approx(math.sqrt(0.9 * 0.4), abs=1e-6)


@pytest.mark.parametrize(
    "opts, words",
    [
        (["MODEL.META_ARCHITECTURE", "BMCFCOS"], "belongs to BMCRetinaNet"),
        (["MODEL.BMC.REFINE.FOREGROUND_IOU", "0.0"], "FOREGROUND_IOU 0.0: out of range"),
        (["MODEL.BMC.REFINE.NUM_FC", "0"], "NUM_FC 0: out of range"),
    ],
)
def test_bad_refinement_settings_are_named(opts, words):
    from bmc_detectron.config import ConfigError, build_cfg

    with pytest.raises(ConfigError, match=words):
        build_cfg("configs/cpu/retinanet_R_18_full_REFINE_cpu.yaml", opts)
