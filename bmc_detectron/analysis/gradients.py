"""Where a training step's gradient goes: per-group gradient norms and update sizes, and the
gradient reaching the SE gates of the PAN neck.

Used to ask why a component does not learn (the SE gates of the PAN + SE neck stay at their
initial value for a whole 780-iteration run): for each parameter group, the gradient norm, the
norm after detectron2's per-parameter clipping, and the relative size of one SGD step
``lr * |clipped grad| / |weight|``; for each SE gate, its value and the gradient of the loss with
respect to it, signed and absolute, so that a push that is small or that changes sign from
batch to batch shows as such.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping

import torch
from torch import nn

from bmc_detectron.modeling.neck import SEFusion

#: default parameter groups (first matching pattern wins), by parameter name
DEFAULT_GROUPS: Dict[str, str] = {
    "se_fc2_bias": r"\.se\.fc2\.bias$",
    "se_fc": r"\.se\.fc[12]\.",
    "pan": r"backbone\.pan\.",
    "fpn": r"backbone\.(fpn_|top_block)",
    "resnet": r"backbone\.bottom_up\.",
    "head": r"^head\.",
}


@dataclass
class StepStats:
    """One batch: per-group norms and the SE gates' values and gradients."""

    grad_norm: Dict[str, float]
    clipped_norm: Dict[str, float]
    weight_norm: Dict[str, float]
    gate: Dict[str, float]
    gate_grad: Dict[str, float]
    gate_grad_abs: Dict[str, float]
    bias_grad: Dict[str, float]


def group_of(name: str, groups: Mapping[str, str]) -> str | None:
    """The first group whose pattern matches the parameter name (None: in no group)."""
    return next((g for g, pat in groups.items() if re.search(pat, name)), None)


def _norms(model: nn.Module, groups: Mapping[str, str], clip: float | None) -> tuple:
    sq, clipped, weights = defaultdict(float), defaultdict(float), defaultdict(float)
    for name, p in model.named_parameters():
        g = group_of(name, groups)
        if g is None or p.grad is None:
            continue
        n = p.grad.detach().float().norm().item()
        c = n if clip is None else min(n, clip)  # detectron2 clips each parameter on its own
        sq[g] += n * n
        clipped[g] += c * c
        weights[g] += p.detach().float().norm().item() ** 2
    root = {k: v**0.5 for k, v in sq.items()}
    return root, {k: v**0.5 for k, v in clipped.items()}, {k: v**0.5 for k, v in weights.items()}


def _gate_hooks(model: nn.Module, store: Dict[str, List[torch.Tensor]]) -> list:
    """Keep each SE gate's output and, on backward, its gradient, by fusion name."""
    handles = []
    for module in model.modules():
        if isinstance(module, SEFusion) and module.se is not None:
            name = module.name or f"fusion{len(handles)}"

            def keep(mod, args, out, name=name):
                store[f"{name}/gate"].append(out.detach())
                if out.requires_grad:
                    out.register_hook(lambda g: store[f"{name}/grad"].append(g.detach()))

            handles.append(module.se.register_forward_hook(keep))
    return handles


def step_stats(
    model: nn.Module, batch: List[dict], groups: Mapping[str, str], clip: float | None
) -> StepStats:
    """Forward + backward of one batch (no optimizer step); the model's grads are left set."""
    from detectron2.utils.events import EventStorage

    store: Dict[str, List[torch.Tensor]] = defaultdict(list)
    handles = _gate_hooks(model, store)
    model.zero_grad(set_to_none=True)
    try:
        with EventStorage():
            loss = sum(model(batch).values())
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    grad, clipped, weight = _norms(model, groups, clip)
    names = sorted({k.split("/")[0] for k in store})
    gate = {n: torch.cat([t.flatten() for t in store[f"{n}/gate"]]).mean().item() for n in names}
    grads = {n: torch.cat([t.flatten() for t in store[f"{n}/grad"]]) for n in names}
    bias = {}
    for module in model.modules():
        if isinstance(module, SEFusion) and module.se is not None and module.name in grads:
            bias[module.name] = module.se.fc2.bias.grad.detach().float().mean().item()
    return StepStats(
        grad,
        clipped,
        weight,
        gate,
        {n: g.mean().item() for n, g in grads.items()},
        {n: g.abs().mean().item() for n, g in grads.items()},
        bias,
    )


def summarize(steps: Iterable[StepStats], lr: float) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Means over batches; ``update_ratio`` = lr x clipped norm / weight norm (one SGD step);
    ``consistency`` = |mean signed gradient| / mean |gradient| over batches (1: always the same
    sign, ~0: pushes that cancel)."""
    steps = list(steps)
    if not steps:
        raise ValueError("no batch to summarise")

    def mean(values: List[float]) -> float:
        return sum(values) / len(values)

    groups: Dict[str, Dict[str, float]] = {}
    for g in steps[0].grad_norm:
        grad = mean([s.grad_norm[g] for s in steps])
        clipped = mean([s.clipped_norm[g] for s in steps])
        weight = mean([s.weight_norm[g] for s in steps])
        ratio = lr * clipped / weight if weight > 0 else float("nan")
        groups[g] = {"grad_norm": grad, "clipped_norm": clipped, "weight_norm": weight}
        groups[g]["update_ratio"] = ratio
    gates: Dict[str, Dict[str, float]] = {}
    for n in steps[0].gate:
        signed = [s.bias_grad[n] for s in steps]
        abs_mean = mean([abs(v) for v in signed])
        gates[n] = {
            "gate": mean([s.gate[n] for s in steps]),
            "dloss_dgate": mean([s.gate_grad[n] for s in steps]),
            "abs_dloss_dgate": mean([s.gate_grad_abs[n] for s in steps]),
            "fc2_bias_grad": mean(signed),
            "fc2_bias_consistency": abs(mean(signed)) / abs_mean if abs_mean > 0 else 0.0,
        }
    return {"groups": groups, "gates": gates}
