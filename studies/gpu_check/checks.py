"""Building blocks of the prepared GPU check (``studies/gpu_check/gpu_check.sh``).

Each runs on any device, so the CPU machine's tests exercise them; on a CUDA machine they
answer three questions: does a deformable convolution run on torchvision's CUDA kernel and
compute what the CPU path computes (:func:`dcn_parity`, :func:`ops_seen`), how much faster is a
training step in CUDA mixed precision (:func:`train_step_times`), and do the detections of a
model trained on the GPU come out the same when the same weights run on the CPU
(:func:`detection_agreement`). :func:`choose_max_iter` sizes the training schedule to the
time a lease leaves.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Dict, List, Mapping, Sequence

import torch
import torchvision
from detectron2.config import CfgNode
from detectron2.structures import Instances
from torch.profiler import ProfilerActivity, profile
from torchvision.ops import box_iou, deform_conv2d

from bmc_detectron.bench.measure import build_subject, measure_training, synchronize
from bmc_detectron.modeling.deform import DeformConv2dPack
from bmc_detectron.reporting.provenance import machine_info

# substrings of the profiler's op / kernel names that tell which deformable path ran:
# torchvision's op (and, on CUDA, its deformable_im2col / col2im kernels) or the CPU path's
# bilinear sampling
OP_KEYS = ("deform", "grid_sampler")
# relative error allowed against the float64 reference: float32 paths, fp16 autocast
TOLERANCE = {"float32": 1e-4, "autocast": 2e-2}


def environment() -> Dict[str, object]:
    """:func:`~bmc_detectron.reporting.provenance.machine_info` plus the CUDA device, runtime
    and cuDNN."""
    info = dict(machine_info())
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_memory_gib=round(props.total_memory / 2**30, 1))
        info.update(capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
        info.update(cudnn=torch.backends.cudnn.version())
    info["torchvision"] = torchvision.__version__
    return info


def ops_seen(fn: Callable[[], object], device: torch.device | str) -> List[str]:
    """Names of the ops and kernels matching :data:`OP_KEYS` that ``fn()`` ran (torch.profiler,
    CUDA activity included on a CUDA device), sorted."""
    activities = [ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    names = {evt.key for evt in prof.key_averages()}
    return sorted(n for n in names if any(k in n.lower() for k in OP_KEYS))


def _random_layer(channels: int, modulated: bool, seed: int) -> DeformConv2dPack:
    """A 3x3 deformable layer whose offsets are a few pixels (offset conv not at zero)."""
    g = torch.Generator().manual_seed(seed)
    layer = DeformConv2dPack(channels, channels, 3, padding=1, modulated=modulated)
    fan_in = channels * 9
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / math.sqrt(fan_in))
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
        # inputs ~ N(0, 1): offsets ~ N(0, 1.5^2) pixels, mask logits alike
        w = layer.offset_conv.weight
        w.copy_(torch.randn(w.shape, generator=g) * 1.5 / math.sqrt(fan_in))
        layer.offset_conv.bias.copy_(torch.randn(layer.offset_conv.bias.shape, generator=g))
    return layer


def _forward_backward(layer: DeformConv2dPack, x: torch.Tensor, reference: bool) -> Dict:
    """Output and gradients (input, weight, offset predictor) of ``sum(out * probe)``; with
    ``reference`` the op is torchvision's whatever the device (else the layer's own path)."""
    x = x.clone().requires_grad_(True)
    if reference:
        offset, mask = layer.offsets_and_mask(x)
        out = deform_conv2d(x, offset, layer.weight, layer.bias, padding=layer.padding, mask=mask)
    else:
        out = layer(x)
    probe = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
    (out.double() * probe.to(out.device)).sum().backward()
    grads = {"input": x.grad, "weight": layer.weight.grad, "offsets": layer.offset_conv.weight.grad}
    return {"output": out.detach(), **{k: v.detach() for k, v in grads.items()}}


def _relative_errors(got: Mapping, ref: Mapping) -> Dict[str, float]:
    """max |got - ref| / max |ref| per tensor (compared in float64 on the CPU)."""
    out = {}
    for k, r in ref.items():
        g = got[k].double().cpu()
        out[k] = float((g - r).abs().max() / r.abs().max().clamp_min(1e-12))
    return out


def dcn_parity(
    device: torch.device | str,
    *,
    modulated: bool = True,
    seed: int = 0,
    size: Sequence[int] = (2, 16, 20, 24),
) -> Dict[str, object]:
    """A deformable layer's output and gradients on each path against a float64 reference.

    The reference is ``torchvision.ops.deform_conv2d`` in float64 on the CPU. The paths: the
    layer on the CPU in float32 (the bilinear-sampling path), and on a CUDA ``device`` the layer
    in float32 and under fp16 autocast (torchvision's CUDA kernel, run in float32 by its
    autocast rule). Each path records its relative errors (:func:`_relative_errors`), the ops it
    ran (:func:`ops_seen`) and ``ok``: errors within :data:`TOLERANCE` and the expected kernel
    seen (``grid_sampler`` on the CPU; torchvision's op and its ``deformable`` kernels on CUDA).

    Args:
        size: (N, C, H, W) of the random input.
    """
    n, c, h, w = size
    layer = _random_layer(c, modulated, seed)
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed + 1))
    ref = _forward_backward(copy.deepcopy(layer).double(), x.double(), reference=True)
    paths = {"cpu float32": ("cpu", False)}
    if torch.device(device).type == "cuda":
        paths.update({"cuda float32": (device, False), "cuda fp16 autocast": (device, True)})
    out: Dict[str, object] = {"modulated": modulated, "size": list(size), "paths": {}}
    for name, (dev, amp) in paths.items():
        lay, xin = copy.deepcopy(layer).to(dev), x.to(dev)
        ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
        result: Dict[str, Dict] = {}

        def run(lay=lay, xin=xin, ctx=ctx, result=result) -> None:
            with ctx:
                result.update(_forward_backward(lay, xin, reference=False))

        ops = ops_seen(run, dev)
        errors = _relative_errors(result, ref)
        tol = TOLERANCE["autocast" if amp else "float32"]
        kernel_ok = _expected_kernel(ops, torch.device(dev).type)
        ok = kernel_ok and all(e <= tol for e in errors.values())
        out["paths"][name] = {"errors": errors, "tolerance": tol, "ops": ops, "ok": ok}
    out["ok"] = all(p["ok"] for p in out["paths"].values())
    return out


def _expected_kernel(ops: Sequence[str], device_type: str) -> bool:
    lower = [o.lower() for o in ops]
    if device_type == "cpu":
        return any("grid_sampler" in o for o in lower) and "torchvision::deform_conv2d" not in ops
    # torchvision's CUDA kernels: deformable_im2col_kernel, deformable_col2im(_coord)_kernel
    return "torchvision::deform_conv2d" in ops and any("deformable_" in o for o in lower)


def model_ops(cfg: CfgNode, batch: List[dict]) -> List[str]:
    """:func:`ops_seen` during one training step (forward, backward, optimizer) of ``cfg``'s
    model on ``batch``: which deformable path the whole detector takes on its device."""
    subject = build_subject(cfg, "ops")
    return ops_seen(lambda: measure_training(subject.model, cfg, batch, 0), cfg.MODEL.DEVICE)


def train_step_times(
    cfgs: Mapping[str, CfgNode], batch: List[dict], iters: int
) -> Dict[str, Dict[str, object]]:
    """Per named config (e.g. float32 and AMP variants of one model), the time of a training
    step on ``batch`` (:func:`~bmc_detectron.bench.measure.measure_training`: one warm-up, then
    ``iters`` timed), each model built from the config's seed."""
    out = {}
    for name, cfg in cfgs.items():
        torch.manual_seed(max(cfg.SEED, 0))
        subject = build_subject(cfg, name)
        rec = measure_training(subject.model, cfg, copy.deepcopy(batch), iters)
        rec.pop("clocks", None)
        out[name] = rec
        del subject
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def choose_max_iter(
    budget_s: float,
    step_s: float,
    runs: int,
    *,
    requested: int,
    minimum: int,
    multiple: int = 50,
    overhead_s: float = 60.0,
    margin: float = 1.25,
) -> int:
    """The longest schedule (a multiple of ``multiple``, at most ``requested``) that lets
    ``runs`` trainings of ``step_s`` seconds per iteration (times ``margin`` for data loading and
    logging) plus ``overhead_s`` each (build, evaluation, timing) fit in ``budget_s``; 0 when
    even ``minimum`` iterations do not fit."""
    if runs <= 0 or step_s <= 0:
        raise ValueError("runs and step_s must be positive")
    per_run = budget_s / runs - overhead_s
    fits = int(per_run / (step_s * margin) // multiple * multiple) if per_run > 0 else 0
    iters = min(requested, fits)
    return iters if iters >= minimum else 0


def detection_agreement(
    a: Instances, b: Instances, *, iou: float = 0.9, top: int = 100
) -> Dict[str, float]:
    """How far the detections ``b`` reproduce ``a`` (e.g. the same weights on CPU and GPU).

    Each of ``a``'s ``top`` highest-scoring detections is matched to the detection of ``b``
    with the same class and the highest IoU; it counts as reproduced when that IoU is at least
    ``iou``. Returns the number compared, the fraction reproduced, and over the reproduced ones
    the median IoU and the largest absolute score difference.
    """
    a = a.to("cpu")[a.scores.argsort(descending=True)[:top].cpu()]
    b = b.to("cpu")
    n, nan = len(a), float("nan")
    if n == 0 or len(b) == 0:
        empty = {"median_iou": nan, "max_score_diff": nan}
        return {"compared": n, "reproduced": nan if n == 0 else 0.0, **empty}
    ious = box_iou(a.pred_boxes.tensor.float(), b.pred_boxes.tensor.float())
    same = a.pred_classes[:, None] == b.pred_classes[None, :]
    ious = torch.where(same, ious, torch.full_like(ious, -1.0))
    best, idx = ious.max(dim=1)
    hit = best >= iou
    diffs = (a.scores[hit] - b.scores[idx[hit]]).abs()
    return {
        "compared": n,
        "reproduced": float(hit.float().mean()),
        "median_iou": float(best[hit].median()) if hit.any() else nan,
        "max_score_diff": float(diffs.max()) if hit.any() else nan,
    }
