"""A detector's size and cost: parameters, and fvcore GFLOPs of the part that runs per image."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn


def count_parameters(model: nn.Module) -> Dict[str, float]:
    """All and trainable parameters, in millions."""
    params = list(model.parameters())
    return {
        "params_m": sum(p.numel() for p in params) / 1e6,
        "trainable_params_m": sum(p.numel() for p in params if p.requires_grad) / 1e6,
    }


class _BackboneHead(nn.Module):
    """Backbone + head of a dense detector, the part whose FLOPs are reported."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.head = model.backbone, model.head
        self.in_features = list(model.head_in_features)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        outputs = self.head([feats[f] for f in self.in_features])
        return tuple(t for group in outputs for t in group)


def _deform_conv_flops(inputs, outputs) -> int:
    """torchvision::deform_conv2d counted as the dense conv of the same shape (MACs)."""
    weight = get_shape(inputs[1])  # (C_out, C_in / groups, kh, kw)
    return int(np.prod(get_shape(outputs[0]))) * int(np.prod(weight[1:]))


def _flop_analysis(model: nn.Module, image: torch.Tensor):
    """fvcore analysis of a dense detector's backbone + head, or of a whole two-stage detector
    (backbone, RPN and ROI heads on its test proposals; detectron2's tracing adapter)."""
    if hasattr(model, "head"):
        x = model.preprocess_image([{"image": image}]).tensor
        return FlopCountAnalysis(_BackboneHead(model), (x,)), "head"
    from detectron2.utils.analysis import FlopCountAnalysis as ModelFlopCountAnalysis

    return ModelFlopCountAnalysis(model, [{"image": image}]), None


def count_gflops(model: nn.Module, input_size: Tuple[int, int]) -> Dict[str, object]:
    """fvcore GFLOPs in eval mode on one image of ``input_size`` (H, W). One multiply-add counts
    as one flop (the convention of detectron2 and detection papers). Dense detectors: backbone +
    head (ResNet, neck, cls and box towers) on the normalized, padded image; pre-processing,
    anchors, decoding and NMS are not counted; deformable convolutions count as dense ones of the
    same shape. Two-stage detectors (no ``head``): the whole model, RPN and ROI heads included,
    as detectron2 counts them (ops fvcore cannot count are listed in ``uncounted_ops``)."""
    was_training = model.training
    model.eval()
    image = torch.zeros(3, *input_size, dtype=torch.uint8)
    try:
        with torch.no_grad():
            padded = model.preprocess_image([{"image": image}]).tensor.shape[-2:]
            fca, head = _flop_analysis(model, image)
            fca.set_op_handle("torchvision::deform_conv2d", _deform_conv_flops)
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total, by_module = fca.total(), fca.by_module()
            unsupported = dict(fca.unsupported_ops())
    finally:
        model.train(was_training)
    # detectron2's analysis wraps the model in a tracing adapter: its modules are "model.*"
    backbone = by_module.get("backbone", by_module.get("model.backbone", 0))
    return {
        "gflops": total / 1e9,
        "backbone_gflops": backbone / 1e9,
        "head_gflops": (by_module.get(head, 0) if head else total - backbone) / 1e9,
        "padded_input": [int(padded[0]), int(padded[1])],
        "uncounted_ops": unsupported,
        "counted": "backbone+head" if head else "whole model (RPN + ROI heads)",
    }
