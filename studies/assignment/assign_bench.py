"""Micro-benchmark of the label assigners: time and memory per image, share of a training step.

    python -m studies.assignment.assign_bench \
        --config-file configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml [--gts 5 20 80 320] \
        [--repeats 20] [--assigners MaxIoU ATSS ...] [--output output/assign_bench] [KEY VALUE ...]

For every registered assigner (or ``--assigners``) and every G in ``--gts``:

- time: median (and p90) ms of one image's assignment (``assigner(layout, gt_boxes, gt_classes,
  logits, boxes)``) after 2 warm-up calls, over ``--repeats`` calls. The anchor layout and the
  predictions (detached logits, decoded boxes) are the model's own
  (``BMCRetinaNet.assignment_inputs``) for one ``--input-size`` image (default 320x426), from a
  freshly built model of the config, i.e. an untrained network; the G gt boxes are random,
  sides 12-96 px;
- peak memory: the largest amount of tensor memory alive at once during one call, above what was
  alive when it started (:class:`bmc_detectron.bench.memory.PeakMemory`, mode "tensors");
- share of a training iteration: the config's model built with that assigner takes training
  steps (forward + backward + optimizer, :func:`bmc_detectron.bench.measure.measure_training`)
  on ``SOLVER.IMS_PER_BATCH`` random images of ``--input-size`` with ``--share-gts`` random
  boxes each; share = time spent in ``model.label_anchors`` (assignment of the whole batch,
  prediction decoding included) / the step's wall time, median over ``--iters`` steps;
- scaling: time(G_max) / time(G_ref) (G_ref = 20 when measured, else the smallest G), compared with
  G_max / G_ref: at most that ratio means the time grows at most linearly in G.

Writes ``OUTPUT/assign_bench.json`` and ``OUTPUT/assign_bench.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.utils.logger import setup_logger

from bmc_detectron.bench.inputs import random_batch, random_gt_boxes
from bmc_detectron.bench.measure import (
    MethodClock,
    build_subject,
    measure_training,
    timed,
    torch_threads,
)
from bmc_detectron.bench.memory import PeakMemory
from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.modeling.assigners import ASSIGNER_REGISTRY, AnchorLayout, BaseAssigner
from bmc_detectron.reporting.provenance import machine_info
from bmc_detectron.reporting.timing import summarize_ms
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic
from studies.assignment.report import assign_bench_markdown


def with_assigner(cfg: CfgNode, name: str) -> CfgNode:
    """A frozen copy of ``cfg`` whose MODEL.BMC.ASSIGNER.NAME is ``name``."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BMC.ASSIGNER.NAME = name
    cfg.freeze()
    return cfg


def assignment_setup(
    cfg: CfgNode, input_size: Tuple[int, int]
) -> Tuple[AnchorLayout, torch.Tensor, torch.Tensor]:
    """Anchor layout of one ``input_size`` image and a fresh model's (R, K) logits and (R, 4)
    decoded boxes, through the model's own :meth:`BMCRetinaNet.assignment_inputs`."""
    model = build_subject(cfg, "setup").model.eval()
    if not hasattr(model, "assignment_inputs"):
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} has no pluggable assigner; "
            "use a BMCRetinaNet config"
        )
    image = torch.zeros(3, *input_size, dtype=torch.uint8)
    layout, logits, boxes = model.assignment_inputs([{"image": image}])
    return layout, logits[0], boxes[0]


def bench_assigner(
    assigner: BaseAssigner,
    setup: Tuple[AnchorLayout, torch.Tensor, torch.Tensor],
    gts: Sequence[int],
    repeats: int,
    input_size: Tuple[int, int],
) -> Dict[int, Dict[str, float]]:
    """{G: {median_ms, p90_ms, peak_mb}} of one image's assignment with G random gt boxes."""
    layout, logits, boxes = setup
    device = layout.boxes.device
    out = {}
    for g in gts:
        gen = torch.Generator().manual_seed(g)
        gt_boxes = random_gt_boxes(g, *input_size, gen).to(device)
        gt_classes = torch.randint(0, logits.shape[1], (g,), generator=gen).to(device)
        args = (layout, gt_boxes, gt_classes)
        if assigner.needs_predictions:
            args += (logits, boxes)

        def call(args=args):
            return assigner(*args)

        for _ in range(2):
            call()
        stats = summarize_ms([timed(call, device)[0] for _ in range(repeats)])
        with PeakMemory(device, mode="tensors") as mem:
            call()
        out[g] = {
            "median_ms": stats["median_ms"],
            "p90_ms": stats["p90_ms"],
            "peak_mb": mem.peak_mb,
        }
    return out


def iteration_share(
    cfg: CfgNode, input_size: Tuple[int, int], num_gts: int, iters: int
) -> Dict[str, float]:
    """Median training step, time in ``label_anchors`` and their ratio (see the module doc)."""
    model = build_subject(cfg, "share").model
    n, k = cfg.SOLVER.IMS_PER_BATCH, cfg.MODEL.RETINANET.NUM_CLASSES
    batch = random_batch(n, *input_size, num_gts, k, seed=cfg.SEED)
    with MethodClock(model, "label_anchors", model.device) as clock:
        rec = measure_training(model, cfg, batch, iters, clocks={"assign": clock})
    assign_s = rec["clocks"]["assign"]
    return {
        "iteration_ms": rec["median_ms"],
        "assign_ms": summarize_ms(assign_s)["median_ms"],
        "share": statistics.median(a / t for a, t in zip(assign_s, rec["seconds"])),
        "batch_size": n,
        "gts_per_image": num_gts,
    }


def scaling(times: Dict[int, Dict[str, float]]) -> Dict[str, float]:
    """time(G_max) / time(G_ref) against G_max / G_ref (G_ref = 20 if measured, else min G)."""
    gs = sorted(g for g in times if times[g].get("median_ms") is not None)
    if len(gs) < 2:
        return {}
    ref = 20 if 20 in gs and gs[-1] > 20 else gs[0]
    ratio = times[gs[-1]]["median_ms"] / times[ref]["median_ms"]
    bound = gs[-1] / ref
    return {
        "g_ref": ref,
        "g_max": gs[-1],
        "time_ratio": ratio,
        "linear_ratio": bound,
        "at_most_linear": bool(ratio <= bound),
    }


def run(cfg: CfgNode, args: argparse.Namespace) -> Dict[str, object]:
    """Every measurement of the module docstring; returns the JSON record."""
    names = args.assigners or [name for name, _ in ASSIGNER_REGISTRY]
    input_size = tuple(args.input_size)
    setup = assignment_setup(cfg, input_size)
    device = setup[0].boxes.device
    rec: Dict[str, object] = {"config_file": args.config_file, "overrides": list(args.opts)}
    rec.update(input_size=list(input_size), num_anchors=int(setup[0].boxes.shape[0]))
    rec.update(gts=list(args.gts), repeats=args.repeats, share_gts=args.share_gts)
    rec.update(machine=machine_info(), device=str(device), assigners={})
    rec["memory_method"] = PeakMemory(device, mode="tensors").method
    for name in names:
        entry: Dict[str, object] = {}
        try:
            assigner = ASSIGNER_REGISTRY.get(name)(with_assigner(cfg, name))
            per_gts = bench_assigner(assigner, setup, args.gts, args.repeats, input_size)
            entry.update(per_gts=per_gts, scaling=scaling(per_gts))
            if args.iters > 0:
                entry["share"] = iteration_share(
                    with_assigner(cfg, name), input_size, args.share_gts, args.iters
                )
        except Exception as e:  # one broken assigner must not hide the others
            entry["error"] = f"{type(e).__name__}: {e}"
        print(f"[assign_bench] {name}: {entry.get('error', 'done')}")
        rec["assigners"][name] = entry
    return rec


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--gts", type=int, nargs="+", default=[5, 20, 80, 320])
    p.add_argument("--repeats", type=int, default=20, help="timed calls per (assigner, G)")
    p.add_argument("--assigners", nargs="+", help="default: every registered assigner")
    p.add_argument("--input-size", type=int, nargs=2, default=[320, 426], metavar=("H", "W"))
    p.add_argument("--iters", type=int, default=3, help="timed training iterations (0: skip)")
    p.add_argument("--share-gts", type=int, default=20, help="gt boxes per image for the share")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--output", default="output/assign_bench")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0, 1 when an assigner failed, 2 for bad arguments."""
    args = parse_args(argv)
    setup_logger(name="bmc_detectron")
    unknown = [a for a in args.assigners or [] if a not in ASSIGNER_REGISTRY]
    if unknown:
        print(f"error: unknown assigners {unknown}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        cfg = build_cfg(args.config_file, args.opts)
        with torch_threads(args.threads):
            rec = run(cfg, args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rec["wall_s"] = time.perf_counter() - t0
    out = Path(args.output)
    write_json_atomic(rec, out / "assign_bench.json", indent=2)
    text = assign_bench_markdown(rec)
    atomic_write_text(out / "assign_bench.md", text)
    print(text)
    return 1 if any("error" in e for e in rec["assigners"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
