"""BMCRetinaNet: parity with detectron2's RetinaNet, training and inference on edge cases."""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from bmc_detectron.modeling import BMCRetinaNet
from bmc_detectron.modeling.assigners import ASSIGNER_REGISTRY
from tests.helpers import make_inputs, tiny_cfg

GT = [[[4, 6, 30, 28, 0], [20, 20, 60, 50, 2]], [[10, 10, 40, 40, 1]]]
# TOOD's assigner with its normalised-alignment soft targets under the quality focal loss
TAL = [
    "MODEL.BMC.ASSIGNER.NAME",
    "TaskAligned",
    "MODEL.BMC.LOSS.CLS_TYPE",
    "quality_focal",
    "MODEL.BMC.LOSS.SOFT_LABELS",
    True,
    "MODEL.BMC.LOSS.SOFT_TARGET",
    "alignment",
]


def _stock_and_bmc(opts=()):
    stock = tiny_cfg(
        [
            "MODEL.META_ARCHITECTURE",
            "RetinaNet",
            "MODEL.BACKBONE.NAME",
            "build_retinanet_resnet_fpn_backbone",
            "MODEL.FPN.OUT_CHANNELS",
            32,
            "MODEL.RETINANET.SCORE_THRESH_TEST",
            0.0,
            *opts,
        ]
    )
    bmc = stock.clone()
    bmc.MODEL.META_ARCHITECTURE = "BMCRetinaNet"
    torch.manual_seed(0)
    ref = build_model(stock)
    torch.manual_seed(1)
    ours = build_model(bmc)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_parity_with_detectron2_retinanet_losses_and_detections():
    ref, ours = _stock_and_bmc()
    assert isinstance(ours, BMCRetinaNet) and type(ref).__name__ == "RetinaNet"
    batch = make_inputs((64, 64), GT)
    ref.train()
    ours.train()
    with EventStorage():
        l_ref = ref(batch)
        l_ours = ours(batch)
    assert set(l_ref) == set(l_ours) == {"loss_cls", "loss_box_reg"}
    for k in l_ref:
        assert torch.equal(l_ref[k], l_ours[k]), (k, l_ref[k], l_ours[k])
    ref.eval()
    ours.eval()
    with torch.no_grad():
        d_ref = ref(batch)
        d_ours = ours(batch)
    for a, b in zip(d_ref, d_ours):
        ia, ib = a["instances"], b["instances"]
        assert len(ia) > 0
        assert torch.equal(ia.pred_boxes.tensor, ib.pred_boxes.tensor)
        assert torch.equal(ia.scores, ib.scores)
        assert torch.equal(ia.pred_classes, ib.pred_classes)


def test_parity_of_anchor_labels_with_and_without_gt():
    ref, ours = _stock_and_bmc()
    batch = make_inputs((64, 64), [GT[0], []])
    images = ours.preprocess_image(batch)
    features = [ours.backbone(images.tensor)[f] for f in ours.head_in_features]
    anchors = ours.anchor_generator(features)
    gts = [x["instances"] for x in batch]
    la, ba = ref.label_anchors(anchors, gts)
    lb, bb = ours.label_anchors(anchors, gts)
    for x, y in zip(la + ba, lb + bb):
        assert torch.equal(x, y)
    assert (lb[1] == 3).all()  # the image without gt: every anchor background (K = 3)


@pytest.mark.parametrize(
    "opts",
    [
        [],
        ["MODEL.BMC.LOSS.CLS_TYPE", "varifocal", "MODEL.BMC.LOSS.SOFT_LABELS", True],
        ["MODEL.BMC.LOSS.CLS_TYPE", "quality_focal", "MODEL.BMC.LOSS.SOFT_LABELS", True],
        ["MODEL.BMC.LOSS.CLS_TYPE", "varifocal", "MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou"],
        ["MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "ciou", "MODEL.BMC.LOSS.BOX_WEIGHT", 2.0],
        TAL,
    ],
)
def test_forward_backward_with_and_without_boxes(opts):
    model = build_model(tiny_cfg(opts))
    model.train()
    batch = make_inputs((64, 96), [GT[0], []])
    with EventStorage():
        losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_soft_labels_need_an_iou_aware_loss():
    with pytest.raises(ValueError, match="SOFT_LABELS"):
        build_model(tiny_cfg(["MODEL.BMC.LOSS.SOFT_LABELS", True]))


@pytest.mark.parametrize(
    "opts",
    [
        [*TAL, "MODEL.BMC.ASSIGNER.NAME", "MaxIoU"],  # MaxIoU gives no quality
        [*TAL, "MODEL.BMC.LOSS.SOFT_LABELS", False],
    ],
    ids=["assigner-without-quality", "hard-labels"],
)
def test_alignment_target_needs_soft_labels_and_a_quality_assigner(opts):
    with pytest.raises(ValueError, match="SOFT_TARGET 'alignment'"):
        build_model(tiny_cfg(opts))


def test_loss_weights_scale_losses():
    torch.manual_seed(0)
    m1 = build_model(tiny_cfg())
    m2 = build_model(tiny_cfg(["MODEL.BMC.LOSS.CLS_WEIGHT", 0.5, "MODEL.BMC.LOSS.BOX_WEIGHT", 3.0]))
    m2.load_state_dict(m1.state_dict())
    batch = make_inputs((64,), [GT[0]])
    with EventStorage():
        a, b = m1(batch), m2(batch)
    torch.testing.assert_close(b["loss_cls"], a["loss_cls"] * 0.5)
    torch.testing.assert_close(b["loss_box_reg"], a["loss_box_reg"] * 3.0)


def test_soft_label_targets_are_the_iou_of_decoded_boxes(monkeypatch):
    from detectron2.structures import Boxes
    from detectron2.structures.boxes import matched_pairwise_iou

    from bmc_detectron.modeling import quality_losses

    torch.manual_seed(0)
    model = build_model(
        tiny_cfg(["MODEL.BMC.LOSS.CLS_TYPE", "varifocal", "MODEL.BMC.LOSS.SOFT_LABELS", True])
    )
    seen = {}

    def capture(logits, targets, **kwargs):
        seen["targets"] = targets
        return logits.sum() * 0

    monkeypatch.setattr(quality_losses, "varifocal_loss", capture)
    batch = make_inputs((64, 64), GT)
    images = model.preprocess_image(batch)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    logits, deltas = model._transpose_dense_predictions(model.head(features), [3, 4])
    anchors = model.anchor_generator(features)
    labels, boxes = model.label_anchors(anchors, [x["instances"] for x in batch])
    with EventStorage():
        model.losses(anchors, logits, labels, deltas, boxes)
    labels = torch.stack(labels)
    pos = (labels >= 0) & (labels != 3)
    decoded = model._decode_all(Boxes.cat(anchors).tensor, deltas)[pos]
    expected = matched_pairwise_iou(Boxes(decoded), Boxes(torch.stack(boxes)[pos])).clamp(min=0)
    valid_labels = labels[labels >= 0]
    targets = seen["targets"]
    got = targets[valid_labels != 3].gather(1, valid_labels[valid_labels != 3, None])[:, 0]
    assert pos.sum() > 0
    torch.testing.assert_close(got, expected)
    assert (targets[valid_labels == 3] == 0).all()


@pytest.mark.parametrize("assigner", sorted(n for n, _ in ASSIGNER_REGISTRY))
def test_mixed_precision_training_keeps_assignment_in_float32(assigner, monkeypatch):
    # CUDA runs under fp16 autocast (SOLVER.AMP); CPU autocast (bfloat16) exercises the same
    # casts here: the assigner must receive float32 predictions and the losses stay finite.
    model = build_model(tiny_cfg(["MODEL.BMC.ASSIGNER.NAME", assigner]))
    model.train()
    seen = []
    original = type(model.assigner).assign

    def spy(self, anchors, gt_boxes, gt_classes, pred_logits=None, pred_boxes=None):
        seen.append([t.dtype for t in (anchors.boxes, pred_logits, pred_boxes) if t is not None])
        return original(self, anchors, gt_boxes, gt_classes, pred_logits, pred_boxes)

    monkeypatch.setattr(type(model.assigner), "assign", spy)
    batch = make_inputs((64, 96), [GT[0], GT[1]])
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(batch)
    assert seen and all(d == torch.float32 for dtypes in seen for d in dtypes)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_alignment_soft_targets_are_the_assigners_quality(monkeypatch):
    from bmc_detectron.modeling import quality_losses

    torch.manual_seed(0)
    model = build_model(tiny_cfg(TAL))
    seen = {}

    def capture(logits, targets, **kwargs):
        seen["targets"] = targets
        return logits.sum() * 0

    monkeypatch.setattr(quality_losses, "quality_focal_loss", capture)
    batch = make_inputs((64, 64), [GT[0], []])
    images = model.preprocess_image(batch)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    logits, deltas = model._transpose_dense_predictions(model.head(features), [3, 4])
    anchors = model.anchor_generator(features)
    gts = [x["instances"] for x in batch]
    labels, boxes, quality = model.label_anchors(anchors, gts, logits, deltas, with_quality=True)
    with EventStorage():
        model.losses(anchors, logits, labels, deltas, boxes, quality=quality)
    labels, quality = torch.stack(labels), torch.stack(quality)
    pos = (labels >= 0) & (labels != 3)
    assert pos.sum() > 0 and not pos[1].any() and (quality[1] == 0).all()  # image 1: no gt
    valid_labels = labels[labels >= 0]
    targets = seen["targets"]
    got = targets[valid_labels != 3].gather(1, valid_labels[valid_labels != 3, None])[:, 0]
    torch.testing.assert_close(got, quality[pos])
    assert (got > 0).all() and (got <= 1).all()
    assert (targets[valid_labels == 3] == 0).all()
    with pytest.raises(ValueError, match="quality"), EventStorage():
        model.losses(anchors, logits, list(labels), deltas, boxes)
