"""The CPU precision variants of one config measured side by side (``tools/precision_bench``).

Three variants of the same config and the same initial weights are built in one process:
``fp32``, ``bf16`` (``BMC.PRECISION.CPU_BF16``) and ``bf16+cl`` (plus ``CHANNELS_LAST``). Each
round, in an order rotating from round to round
(:func:`~bmc_detectron.reporting.timing.round_order`), every variant takes one batch from its
own train loader (timed: data time) and does one training step on it (timed: step time), then
every variant runs batch-1 inference on the same images (:func:`~.measure.measure_latency`).
Before the rounds, the three variants' losses on one batch are compared (:func:`loss_agreement`).
"""

from __future__ import annotations

import copy
import itertools
from typing import Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.utils.events import EventStorage

from bmc_detectron.bench.inputs import default_input_size, random_batch
from bmc_detectron.bench.measure import (
    Subject,
    build_subject,
    make_train_step,
    measure_latency,
    timed,
)
from bmc_detectron.engine import BMCTrainer
from bmc_detectron.reporting.tables import fmt, markdown_table
from bmc_detectron.reporting.timing import round_order, summarize_ms

#: variant name -> (BMC.PRECISION.CPU_BF16, BMC.PRECISION.CHANNELS_LAST)
VARIANTS: Dict[str, Tuple[bool, bool]] = {
    "fp32": (False, False),
    "bf16": (True, False),
    "bf16+cl": (True, True),
}
REFERENCE = "fp32"
#: Relative tolerance of a bf16 variant's total loss vs float32 on the same batch and weights.
#: bf16 keeps 8 significant bits (unit roundoff 2**-8 = 0.39 %); the ~20 layers of backbone,
#: neck and head each round their inputs and outputs, so single activations drift by a few per
#: cent, but the losses average over tens of thousands of anchors (assignment is float32 and
#: identical), which brings the total's error well under 1 %: 2e-2 leaves a factor >2 of margin
#: while a wrong cast (a float16 overflow, a missing float32 loss, mismatched weights) gives
#: errors of tens of per cent or more.
LOSS_RTOL = 2e-2

Batches = Callable[[CfgNode], Iterator[List[dict]]]


def variant_cfg(cfg: CfgNode, name: str) -> CfgNode:
    """``cfg`` with the ``BMC.PRECISION`` options of variant ``name``."""
    bf16, channels_last = VARIANTS[name]
    out = cfg.clone()
    out.defrost()
    out.BMC.PRECISION.CPU_BF16 = bf16
    out.BMC.PRECISION.CHANNELS_LAST = channels_last
    out.freeze()
    return out


def build_variants(cfg: CfgNode, description: str = "") -> List[Subject]:
    """The three variants of ``cfg``, all with the float32 variant's initial weights."""
    subjects = []
    for name in VARIANTS:
        torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
        subjects.append(build_subject(variant_cfg(cfg, name), name, description))
    state = subjects[0].model.state_dict()
    for s in subjects[1:]:
        s.model.load_state_dict(state)
    return subjects


def loader_batches(cfg: CfgNode) -> Iterator[List[dict]]:
    """The trainer's own train loader (``BMCTrainer.build_train_loader``): augmentation,
    ``DATALOADER.NUM_WORKERS`` worker processes and aspect-ratio grouping included."""
    return iter(BMCTrainer.build_train_loader(cfg))


def random_batches(num_gts: int = 20) -> Batches:
    """A batch source of random images (``SOLVER.IMS_PER_BATCH`` of the test size) with
    ``num_gts`` random boxes each, a new seed per batch (same sequence for every variant)."""

    def batches(cfg: CfgNode) -> Iterator[List[dict]]:
        n, k = cfg.SOLVER.IMS_PER_BATCH, cfg.MODEL.RETINANET.NUM_CLASSES
        size = default_input_size(cfg)
        for seed in itertools.count(max(cfg.SEED, 0)):
            yield random_batch(n, *size, num_gts, k, seed=seed)

    return batches


def loss_agreement(
    subjects: Sequence[Subject], batch: List[dict], rtol: float = LOSS_RTOL
) -> Dict[str, object]:
    """Losses of every subject (train mode, no optimizer step) on a copy of the same batch, and
    their relative differences from the first subject's; ``ok`` when every total is within
    ``rtol``. Call it before any step, while the weights are still identical."""
    losses: Dict[str, Dict[str, float]] = {}
    with EventStorage(0), torch.no_grad():
        for s in subjects:
            s.model.train()
            with s.precision():
                out = s.model(copy.deepcopy(batch))
            values = {k: float(v.float()) for k, v in out.items()}
            losses[s.name] = {**values, "total": sum(values.values())}
    ref = losses[subjects[0].name]
    rel = {
        name: {k: abs(v - ref[k]) / max(abs(ref[k]), 1e-12) for k, v in values.items()}
        for name, values in losses.items()
    }
    ok = all(r["total"] <= rtol for r in rel.values())
    return {"losses": losses, "relative_diff": rel, "rtol": rtol, "ok": ok}


def interleaved_rounds(
    subjects: Sequence[Subject],
    batches: Batches,
    inputs: Sequence[dict],
    rounds: int,
    warmup: int = 1,
) -> Dict[str, object]:
    """``rounds`` rounds of one training iteration (data, then step) per subject, then batch-1
    inference latency of every subject on ``inputs``, the order rotating each round.

    Each subject reads its own batch source (built from its config), so all see the same batch
    sequence; ``warmup`` untimed iterations and inference calls per subject come first. Returns
    per subject ``data`` / ``step`` / ``iteration``
    (:func:`~bmc_detectron.reporting.timing.summarize_ms` plus the per-round ``calls_ms``) and
    ``latency``, and the order of every round (``orders``).
    """
    streams = {s.name: batches(s.cfg) for s in subjects}
    steps = {s.name: make_train_step(s.model, s.cfg) for s in subjects}
    times = {s.name: {"data": [], "step": []} for s in subjects}
    latency_ms: Dict[str, List[float]] = {s.name: [] for s in subjects}
    orders = []
    with EventStorage(0) as storage:
        for s in subjects:
            for _ in range(warmup):
                s.model.train()
                steps[s.name](next(streams[s.name]))
        measure_latency(subjects, inputs, rounds=0, warmup=warmup)
        for r in range(rounds):
            order = round_order(subjects, r)
            orders.append([s.name for s in order])
            for s in order:
                storage.iter = r
                s.model.train()
                data_s, batch = timed(lambda s=s: next(streams[s.name]), s.model.device)
                step_s = timed(lambda s=s, b=batch: steps[s.name](b), s.model.device)[0]
                times[s.name]["data"].append(data_s)
                times[s.name]["step"].append(step_s)
            lat = measure_latency(order, inputs, rounds=1, warmup=0)
            for name, rec in lat.items():
                latency_ms[name].extend(rec["calls_ms"]["total"])
    out: Dict[str, object] = {"orders": orders}
    for s in subjects:
        t = times[s.name]
        t["iteration"] = [d + st for d, st in zip(t["data"], t["step"])]
        rec = {k: {**summarize_ms(v), "calls_ms": [x * 1e3 for x in v]} for k, v in t.items()}
        lat = summarize_ms([x / 1e3 for x in latency_ms[s.name]])
        rec["latency"] = {**lat, "calls_ms": latency_ms[s.name]}
        out[s.name] = rec
    return out


def speedups(results: Mapping[str, Mapping], reference: str = REFERENCE) -> Dict[str, Dict]:
    """Per variant, the reference's median divided by the variant's (>1: faster) for step,
    whole iteration (data + step), data and inference latency."""
    keys = ("step", "iteration", "data", "latency")
    ref = results[reference]
    return {
        name: {k: ref[k]["median_ms"] / results[name][k]["median_ms"] for k in keys}
        for name in VARIANTS
        if name in results
    }


def _ms(rec: Mapping[str, float]) -> str:
    return f"{fmt(rec['median_ms'])} / {fmt(rec['p90_ms'])}"


def timing_markdown(results: Mapping[str, Mapping], speedup: Mapping[str, Mapping]) -> str:
    """The side-by-side table: median / p90 per variant and the speed-ups vs float32."""
    headers = (
        "variant",
        "train step med / p90 (ms)",
        "data med / p90 (ms)",
        "iteration (data + step) med / p90 (ms)",
        "step speed-up",
        "iteration speed-up",
        "inference b1 med / p90 (ms)",
        "inference speed-up",
    )
    rows = []
    for name, x in speedup.items():
        r = results[name]
        rows.append(
            [
                f"`{name}`",
                _ms(r["step"]),
                _ms(r["data"]),
                _ms(r["iteration"]),
                f"{x['step']:.2f}x",
                f"{x['iteration']:.2f}x",
                _ms(r["latency"]),
                f"{x['latency']:.2f}x",
            ]
        )
    return markdown_table(headers, rows)


def loss_markdown(check: Mapping[str, object]) -> str:
    """The loss-agreement table (losses and relative difference from float32 per variant)."""
    losses, rel = check["losses"], check["relative_diff"]
    keys = list(next(iter(losses.values())))
    headers = ("variant", *keys, *(f"rel. diff {k}" for k in keys))
    rows = [
        [f"`{name}`", *(f"{v[k]:.5f}" for k in keys), *(f"{rel[name][k]:.2e}" for k in keys)]
        for name, v in losses.items()
    ]
    verdict = "within" if check["ok"] else "**NOT** within"
    return (
        markdown_table(headers, rows)
        + f"\n\nEvery total loss is {verdict} the relative tolerance {check['rtol']:g} of float32."
    )
