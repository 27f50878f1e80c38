"""Mixed precision on CPU: bfloat16 network body, float32 everything else.

detectron2's ``AMPTrainer`` covers CUDA (fp16 autocast around the whole forward + a gradient
scaler, switched on by ``SOLVER.AMP.ENABLED``). This module adds the CPU path:

- ``BMC.PRECISION.CPU_BF16``: the model's ``backbone`` (ResNet + neck) and ``head`` run under
  ``torch.autocast("cpu", torch.bfloat16)``, so convolutions and matrix products use the cores'
  AVX-512 BF16 / AMX units; their outputs are cast back to float32. Anchor generation, label
  assignment, losses, box decoding and NMS therefore stay float32 for every model with a
  ``backbone`` (and a ``head``): BMCRetinaNet, detectron2's stock RetinaNet and FCOS, the cell
  classifier; Faster R-CNN runs its RPN head and box head in bfloat16 too.
  bfloat16 keeps float32's exponent range, so no loss scaling is needed, and the optimizer keeps
  float32 master weights (the parameters never change dtype).
  One exception runs in float32 while training: a strided convolution (kernel > 1) on a feature
  map one pixel wide or high. oneDNN's bfloat16 weight gradient for that shape is wrong at
  random (NaN or values of 1e30 in some processes; measured with torch 2.14.1 on a 3x3 stride-2
  conv over a width-1 input, RetinaNet's P7 of a 64-px image); forward values and input
  gradients are right, so inference keeps bfloat16 there.
- ``BMC.PRECISION.CHANNELS_LAST``: conv weights and the backbone input in NHWC layout, the one
  oneDNN's CPU convolutions prefer.

Both act on a built model (:func:`apply_precision`), so training, evaluation, the benchmark tools
and the count pipeline all run the network the same way; a checkpoint is the same in any
precision.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from detectron2.config import CfgNode
from torch import nn

#: submodules whose forward runs in bfloat16 with ``BMC.PRECISION.CPU_BF16`` (dotted paths;
#: absent ones are skipped): the dense detectors' body and head, and Faster R-CNN's RPN conv head
#: and box head (its proposals, ROI pooling, box predictor and losses stay float32)
BF16_SUBMODULES = ("backbone", "head", "proposal_generator.rpn_head", "roi_heads.box_head")


def cpu_bf16_enabled(cfg: CfgNode) -> bool:
    """Whether ``cfg`` asks for bfloat16 on CPU and the model runs on the CPU."""
    return bool(cfg.BMC.PRECISION.CPU_BF16) and not cfg.MODEL.DEVICE.startswith("cuda")


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


def _bf16_forward(forward: Callable) -> Callable:
    @functools.wraps(forward)
    def run(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _to_float32(out)

    run.bmc_bf16 = True
    return run


def _thin_map_in_float32(forward: Callable) -> Callable:
    """Wrap a strided conv's forward: while gradients are recorded, a map with a side of 1 px
    goes through in float32 (the oneDNN bfloat16 weight-gradient fault in the module
    docstring); inference and every other shape are unchanged."""

    @functools.wraps(forward)
    def run(x, *args, **kwargs):
        thin = isinstance(x, torch.Tensor) and x.dim() == 4 and min(x.shape[-2:]) == 1
        if thin and torch.is_grad_enabled():
            with torch.autocast("cpu", enabled=False):
                return forward(x.float(), *args, **kwargs)
        return forward(x, *args, **kwargs)

    run.bmc_thin_f32 = True
    return run


def _guard_strided_convs(module: nn.Module) -> None:
    for conv in module.modules():
        if (
            isinstance(conv, nn.Conv2d)
            and max(conv.stride) > 1
            and max(conv.kernel_size) > 1
            and not getattr(conv.forward, "bmc_thin_f32", False)
        ):
            conv.forward = _thin_map_in_float32(conv.forward)


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return args


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    module: Any = model
    for part in path.split("."):
        module = getattr(module, part, None)
    return module if isinstance(module, nn.Module) else None


def apply_precision(model: nn.Module, cfg: CfgNode) -> nn.Module:
    """Apply ``cfg.BMC.PRECISION`` to a built model in place; returns ``model``.

    Calling it twice is harmless. With neither option set (the default) the model is unchanged.
    """
    if cpu_bf16_enabled(cfg):
        for name in BF16_SUBMODULES:
            module = _submodule(model, name)
            if module is not None and not getattr(module.forward, "bmc_bf16", False):
                module.forward = _bf16_forward(module.forward)
                _guard_strided_convs(module)
    if cfg.BMC.PRECISION.CHANNELS_LAST and not getattr(model, "_bmc_channels_last", False):
        model.to(memory_format=torch.channels_last)
        backbone = getattr(model, "backbone", None)
        if backbone is not None:
            backbone.register_forward_pre_hook(_to_channels_last)
        model._bmc_channels_last = True
    return model


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), read from
    /proc/cpuinfo; elsewhere bf16 autocast is emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
