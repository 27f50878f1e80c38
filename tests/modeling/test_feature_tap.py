"""The backbone tap (modeling/feature_tap.py): the refinement on levels the head does not read."""

from __future__ import annotations

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

from bmc_detectron.modeling.feature_tap import FeatureTap

P2_OPTS = ["MODEL.RESNETS.OUT_FEATURES", '["res2", "res3", "res4", "res5"]']
P2_OPTS += ["MODEL.FPN.IN_FEATURES", '["res2", "res3", "res4", "res5"]']
P2_OPTS += ["MODEL.BMC.REFINE.IN_FEATURES", '["p2", "p3", "p4", "p5"]']


class _Named(nn.Module):
    def forward(self, x):
        return {"a": x + 1, "b": x * 2, "c": x}


def test_tap_keeps_the_last_pass_in_order_until_taken():
    backbone = _Named()
    tap = FeatureTap(backbone, ["b", "a"])
    backbone(torch.zeros(1))
    backbone(torch.ones(1))  # the last pass wins
    b, a = tap.take()
    assert b.item() == 2.0 and a.item() == 2.0
    with pytest.raises(RuntimeError, match="has not run since the last take"):
        tap.take()


def _model(opts=()):
    from detectron2.modeling import build_model

    from bmc_detectron.config import build_cfg

    cfg = build_cfg(
        "configs/cpu/retinanet_R_18_full_REFINE_CLS_cpu.yaml",
        ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.NUM_CLASSES", 3, *opts]
        + ["MODEL.RETINANET.SCORE_THRESH_TEST", 0.0],  # untrained: scores at the prior
    )
    torch.manual_seed(0)
    return build_model(cfg)


def test_refinement_pools_from_p2_the_head_does_not_read():
    from tests.helpers import make_inputs

    model = _model(P2_OPTS)
    assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert model.refinement.pooler.min_level == 2 and model.refinement.pooler.max_level == 5
    pooled = []
    model.refinement.pooler.register_forward_hook(lambda m, i, o: pooled.append(i[0][0].shape))
    batch = make_inputs((96, 96), [[[8, 10, 40, 44, 0], [50, 30, 90, 70, 2]]])
    with EventStorage():
        losses = model(batch)
    assert {"loss_refine_box", "loss_refine_cls"} <= set(losses)
    model.eval()
    with torch.no_grad():
        (out,) = model(batch)
    assert len(out["instances"]) > 0
    # both passes pooled from the stride-4 map of the 96 px input (24 x 24), not from p3 (12)
    assert pooled[0][-2:] == (24, 24) and pooled[1][-2:] == (24, 24)
    # the head's own levels: no tap
    assert _model().refine_tap is None


def test_unknown_refinement_level_is_named():
    with pytest.raises(ValueError, match=r"IN_FEATURES \['p2'\]: the backbone makes \['p3'"):
        _model(["MODEL.BMC.REFINE.IN_FEATURES", '["p2"]'])
