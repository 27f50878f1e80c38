"""Test-time flips (modeling/tta.py): boxes found on a flipped image come back to the image's
frame, duplicates of the passes merge into one, empty passes are fine, the trainer's hook."""

from __future__ import annotations

from typing import Dict, List, Sequence

import pytest
import torch
from detectron2.structures import Boxes, Instances
from torch import nn

from bmc_detectron.config import ConfigError, check_cfg
from bmc_detectron.engine.trainer import BMCTrainer
from bmc_detectron.modeling.tta import BMCRetinaNetWithTTA, unflip_boxes, wbf_merge
from tests.helpers import tiny_cfg

H, W = 40, 60  # the image's frame (the detections' output size)
CELL = [5.0, 8.0, 20.0, 30.0]  # one cell, class 1, in the unflipped frame


def _instances(boxes: Sequence[Sequence[float]], scores, classes) -> Instances:
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


class FakeDetector(nn.Module):
    """Finds CELL wherever the marker pixel (top-left of the unflipped image) went: a flipped
    input gives the box mirrored as the image was, with a score that tells the passes apart."""

    test_nms_thresh = 0.5
    max_detections_per_image = 100

    def __init__(self, empty: bool = False):
        super().__init__()
        self.empty = empty
        self.seen: List[torch.Tensor] = []

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        out = []
        for d in batched_inputs:
            img = d["image"]
            self.seen.append(img)
            hflip, vflip = bool(img[0, :, -1].any()), bool(img[0, -1, :].any())
            x0, y0, x1, y1 = CELL
            if hflip:
                x0, x1 = W - x1, W - x0
            if vflip:
                y0, y1 = H - y1, H - y0
            score = 0.9 - 0.1 * hflip - 0.2 * vflip
            rows = [] if self.empty else [[x0, y0, x1, y1]]
            out.append({"instances": _instances(rows, [score] * len(rows), [1] * len(rows))})
        return out


def _image() -> torch.Tensor:
    img = torch.zeros(3, H, W, dtype=torch.uint8)
    img[0, 0, 0] = 255  # the marker
    return img


@pytest.mark.parametrize("merge", ["nms", "wbf"])
def test_flipped_passes_map_back_and_collapse_to_one(merge):
    model = FakeDetector()
    tta = BMCRetinaNetWithTTA(model, flips=["h", "v", "hv"], merge=merge).eval()
    (out,) = tta([{"image": _image(), "height": H, "width": W}])
    inst = out["instances"]
    assert len(model.seen) == 4  # the image and its three flips
    assert len(inst) == 1
    assert inst.pred_boxes.tensor[0].tolist() == pytest.approx(CELL, abs=1e-5)
    assert inst.pred_classes.tolist() == [1]
    # NMS keeps the best pass; WBF the mean score of the 4 passes (each found it)
    want = 0.9 if merge == "nms" else (0.9 + 0.8 + 0.7 + 0.6) / 4
    assert inst.scores.item() == pytest.approx(want, abs=1e-5)


def test_each_flip_maps_back_exactly():
    boxes = torch.tensor([[5.0, 8.0, 20.0, 30.0], [0.0, 0.0, 60.0, 10.0]])
    assert unflip_boxes(boxes, "h", H, W).tolist() == [[40, 8, 55, 30], [0, 0, 60, 10]]
    assert unflip_boxes(boxes, "v", H, W).tolist() == [[5, 10, 20, 32], [0, 30, 60, 40]]
    assert unflip_boxes(unflip_boxes(boxes, "hv", H, W), "hv", H, W).tolist() == boxes.tolist()


def test_empty_detections():
    for merge in ("nms", "wbf"):
        tta = BMCRetinaNetWithTTA(FakeDetector(empty=True), flips=["h"], merge=merge).eval()
        outs = tta([{"image": _image()}, {"image": _image()}])
        assert [len(o["instances"]) for o in outs] == [0, 0]
        assert outs[0]["instances"].pred_boxes.tensor.shape == (0, 4)


def test_merge_keeps_distinct_cells_and_classes():
    a = _instances([CELL, [30, 5, 50, 25]], [0.9, 0.8], [1, 1])
    b = _instances([[5.5, 8, 20.5, 30], CELL], [0.6, 0.7], [1, 2])  # a near-duplicate, class 2
    tta = BMCRetinaNetWithTTA(FakeDetector(), flips=["h"])
    nms = tta.merge_passes([a, b])
    assert sorted(nms.scores.tolist()) == pytest.approx([0.7, 0.8, 0.9])
    fused = wbf_merge([a, b], 0.5, 100, passes=2)
    assert len(fused) == 3
    first = fused.pred_boxes.tensor[0].tolist()  # 0.9 * CELL + 0.6 * shifted, over 1.5
    assert first == pytest.approx([5.2, 8.0, 20.2, 30.0], abs=1e-5)
    assert fused.scores[0].item() == pytest.approx(0.75)
    assert len(wbf_merge([a, b], 0.5, 2, passes=2)) == 2


def test_bad_keys_are_named():
    with pytest.raises(ConfigError, match="BMC.TEST_FLIPS"):
        BMCRetinaNetWithTTA(FakeDetector(), flips=["x"])
    with pytest.raises(ConfigError, match="BMC.TEST_FLIP_MERGE"):
        BMCRetinaNetWithTTA(FakeDetector(), flips=["h"], merge="mean")
    with pytest.raises(ConfigError, match="has no test_nms_thresh"):
        BMCRetinaNetWithTTA(nn.Identity(), flips=["h"])
    cfg = tiny_cfg(["BMC.TEST_FLIPS", ["h", "h"]])
    with pytest.raises(ConfigError, match="BMC.TEST_FLIPS"):
        check_cfg(cfg)


def test_trainer_test_wraps_the_model_only_when_asked(monkeypatch):
    seen = []
    monkeypatch.setattr(
        "detectron2.engine.DefaultTrainer.test",
        classmethod(lambda cls, cfg, model, evaluators=None: seen.append(model) or {}),
    )
    model = FakeDetector()
    BMCTrainer.test(tiny_cfg(), model)
    BMCTrainer.test(tiny_cfg(["BMC.TEST_FLIPS", ["v"], "BMC.TEST_FLIP_MERGE", "wbf"]), model)
    assert seen[0] is model
    assert isinstance(seen[1], BMCRetinaNetWithTTA)
    assert (seen[1].model, seen[1].flips, seen[1].merge) == (model, ["v"], "wbf")
