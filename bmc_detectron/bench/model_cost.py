"""A detector's size and cost: parameters, and fvcore GFLOPs of the part that runs per image."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes
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


class _Refinement(nn.Module):
    """The refinement stage, or each stage of a cascade, on fixed (K, 4) ``boxes``: RoIAlign,
    box head and predictors (modeling/refine.py, modeling/cascade.py)."""

    def __init__(self, refinement: nn.Module, boxes: torch.Tensor):
        super().__init__()
        self.stages = nn.ModuleList(getattr(refinement, "stages", [refinement]))
        self.register_buffer("boxes", boxes)

    def forward(self, *features: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        boxes = [Boxes(self.boxes)]
        outputs = [stage(list(features), boxes) for stage in self.stages]
        return tuple(t for out in outputs for t in out if t is not None)


def _refinement_flops(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of the model's refinement on as many boxes as it may keep per image
    (``max_detections_per_image``) of the (1, 3, H, W) input ``x``: the stage's cost at its
    most, as Faster R-CNN's ROI heads are counted on its proposals. Where the boxes lie does not
    change the count (RoIAlign is not a multiply-add), so they are one 64 px square, repeated."""
    feats = model.backbone(x)
    maps = model.refine_features([feats[f] for f in model.head_in_features])
    side = float(min(64, *x.shape[-2:]))
    boxes = torch.tensor([[0.0, 0.0, side, side]]).repeat(int(model.max_detections_per_image), 1)
    fca = FlopCountAnalysis(_Refinement(model.refinement, boxes), tuple(maps))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(fca.total())


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
    same shape; a refinement stage (``MODEL.BMC.REFINE``) is added at its most, on the
    ``max_detections_per_image`` boxes it may refine (``refine_gflops``). Two-stage detectors (no
    ``head``): the whole model, RPN and ROI heads included, as detectron2 counts them (ops fvcore
    cannot count are listed in ``uncounted_ops``)."""
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
            refine = 0
            if head and getattr(model, "refinement", None) is not None:
                x = model.preprocess_image([{"image": image}]).tensor
                refine = _refinement_flops(model, x)
    finally:
        model.train(was_training)
    counted = "whole model (RPN + ROI heads)"
    if head:
        counted = "backbone+head+refinement" if refine else "backbone+head"
    # detectron2's analysis wraps the model in a tracing adapter: its modules are "model.*"
    backbone = by_module.get("backbone", by_module.get("model.backbone", 0))
    return {
        "gflops": (total + refine) / 1e9,
        "backbone_gflops": backbone / 1e9,
        "head_gflops": (by_module.get(head, 0) if head else total - backbone) / 1e9,
        "refine_gflops": refine / 1e9,
        "padded_input": [int(padded[0]), int(padded[1])],
        "uncounted_ops": unsupported,
        "counted": counted,
    }
