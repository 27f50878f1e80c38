"""Varifocal and quality focal losses against hand-computed values."""

from __future__ import annotations

import math

import torch

from bmc_detectron.modeling.losses import (
    one_hot_quality_targets,
    quality_focal_loss,
    varifocal_loss,
)


def _bce(p: float, t: float) -> float:
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_varifocal_by_hand():
    # a positive entry (target 0.8, p = sigmoid(0) = 0.5), a negative (p = sigmoid(ln 3) = 0.75)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    targets = torch.tensor([[0.8, 0.0]])
    expected = 0.8 * _bce(0.5, 0.8) + 0.75 * 0.75**2 * _bce(0.75, 0.0)
    got = varifocal_loss(logits, targets, alpha=0.75, gamma=2.0)
    assert abs(got.item() - expected) < 1e-6


def test_quality_focal_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    targets = torch.tensor([[0.8, 0.0]])
    expected = abs(0.8 - 0.5) ** 2 * _bce(0.5, 0.8) + 0.75**2 * _bce(0.75, 0.0)
    got = quality_focal_loss(logits, targets, beta=2.0)
    assert abs(got.item() - expected) < 1e-6


def test_losses_vanish_on_perfect_predictions_and_push_the_right_way():
    logits = torch.tensor([[20.0, -20.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0]])
    assert varifocal_loss(logits, targets).item() < 1e-6
    logits = torch.zeros(1, 2, requires_grad=True)
    quality_focal_loss(logits, torch.tensor([[0.9, 0.0]])).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]


def test_one_hot_quality_targets():
    labels = torch.tensor([0, 2, 1])  # K = 2: label 2 is background
    quality = torch.tensor([0.7, 0.9, 1.0])
    expected = torch.tensor([[0.7, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert torch.equal(one_hot_quality_targets(labels, quality, 2), expected)
