"""The gradient probe: per-group norms with per-parameter clipping, SE gate gradients, summary."""

from __future__ import annotations

import math

import pytest
import torch
from detectron2.modeling import build_model

from bmc_detectron.analysis.gradients import (
    DEFAULT_GROUPS,
    StepStats,
    group_of,
    step_stats,
    summarize,
)
from tests.helpers import make_inputs, tiny_cfg

BOXES = [[[8, 10, 40, 44, 0], [30, 30, 60, 62, 2]], [[20, 20, 50, 50, 1]]]


def _se_model(gate_bias: float = 0.0):
    opts = ["MODEL.BMC.NECK.PAN", True, "MODEL.BMC.NECK.ATTENTION", True]
    cfg = tiny_cfg([*opts, "MODEL.BMC.NECK.SE_GATE_BIAS", gate_bias])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    return model


def test_group_of_takes_the_first_matching_pattern():
    assert group_of("backbone.pan.fusions.0.se.fc2.bias", DEFAULT_GROUPS) == "se_fc2_bias"
    assert group_of("backbone.pan.fusions.0.se.fc2.weight", DEFAULT_GROUPS) == "se_fc"
    assert group_of("backbone.pan.fusions.1.fuse.weight", DEFAULT_GROUPS) == "pan"
    assert group_of("backbone.fpn_output3.bias", DEFAULT_GROUPS) == "fpn"
    assert group_of("head.cls_score.bias", DEFAULT_GROUPS) == "head"
    assert group_of("pixel_mean", DEFAULT_GROUPS) is None


@pytest.mark.parametrize("bias, expected", [(0.0, 0.5), (3.0, 1 / (1 + math.exp(-3)))])
def test_step_stats_sees_the_gates_and_their_gradients(bias, expected):
    model = _se_model(bias)
    s = step_stats(model, make_inputs((64, 64), BOXES), DEFAULT_GROUPS, clip=None)
    assert set(s.gate) == {"p4", "p5"}
    if bias:
        # the gate's last layer starts at the bias alone only for its bias; weights still vary
        assert all(abs(g - expected) < 0.05 for g in s.gate.values()), s.gate
    assert all(v != 0 for v in s.gate_grad_abs.values())
    assert set(s.grad_norm) == {"se_fc2_bias", "se_fc", "pan", "fpn", "resnet", "head"}
    assert s.clipped_norm == s.grad_norm  # no clipping


def test_per_parameter_clipping_bounds_each_parameter():
    model = _se_model()
    clip = 1e-6
    s = step_stats(model, make_inputs((64, 64), BOXES), DEFAULT_GROUPS, clip=clip)
    expected = {}
    for name, p in model.named_parameters():
        g = group_of(name, DEFAULT_GROUPS)
        if g is not None and p.grad is not None:
            expected[g] = expected.get(g, 0.0) + min(p.grad.norm().item(), clip) ** 2
    for g, sq in expected.items():
        assert s.clipped_norm[g] == pytest.approx(math.sqrt(sq), rel=1e-6)
        assert s.clipped_norm[g] < s.grad_norm[g]


def _stats(bias_grad: float, gate: float = 0.5) -> StepStats:
    one = {"head": 2.0}
    return StepStats(
        one,
        {"head": 1.0},
        {"head": 10.0},
        {"p4": gate},
        {"p4": bias_grad},
        {"p4": abs(bias_grad)},
        {"p4": bias_grad},
    )


def test_summary_consistency_and_update_ratio():
    same = summarize([_stats(1e-3), _stats(3e-3)], lr=0.01)
    assert same["gates"]["p4"]["fc2_bias_consistency"] == pytest.approx(1.0)
    assert same["gates"]["p4"]["fc2_bias_grad"] == pytest.approx(2e-3)
    assert same["groups"]["head"]["update_ratio"] == pytest.approx(0.01 * 1.0 / 10.0)
    flip = summarize([_stats(1e-3), _stats(-1e-3)], lr=0.01)
    assert flip["gates"]["p4"]["fc2_bias_consistency"] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        summarize([], lr=0.01)
