"""Micro-benchmark of the label assigners: time and memory per image, share of a training step.

    python -m bmc_detectron.tools.assign_bench \
        --config-file configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml [--gts 5 20 80 320] \
        [--repeats 20] [--assigners MaxIoU ATSS ...] [--output output/assign_bench] [KEY VALUE ...]

For every registered assigner (or ``--assigners``) and every G in ``--gts``:

- time: median (and p90) ms of one image's assignment (``assigner(layout, gt_boxes, gt_classes,
  logits, boxes)``) after 2 warm-up calls, over ``--repeats`` calls; the anchors are those of the
  config's anchor generator for one ``--input-size`` image (default 320x426, padded as the model
  pads it); the predictions (logits, decoded boxes) come from a freshly built model of the config
  (so they are those of an untrained network); the G gt boxes are random, sides 12-96 px;
- peak memory: the largest amount of tensor memory alive at once during one call, above what was
  alive when it started. On CPU it is read from ``torch.profiler`` (``profile_memory=True``): the
  allocation and free events are replayed in time order and their running sum's maximum is the
  peak (tracemalloc does not see torch's allocator and RSS hides freed-and-reused blocks). On CUDA
  it is ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call;
- share of a training iteration: the config's model built with that assigner runs forward +
  backward on ``SOLVER.IMS_PER_BATCH`` random images of ``--input-size`` with ``--share-gts``
  random boxes each; share = time spent in ``model.label_anchors`` (assignment of the whole batch,
  prediction decoding included) / the iteration's wall time, median over ``--iters`` iterations;
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
from typing import Callable, Dict, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.layers import cat
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger
from torch import nn

from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.modeling.assigners import ASSIGNER_REGISTRY, AnchorLayout, BaseAssigner
from bmc_detectron.tools._bench_utils import (
    fmt,
    machine_info,
    markdown_table,
    random_batch,
    random_gt_boxes,
    summarize_ms,
    synchronize,
    timed,
    torch_threads,
    write_json,
)

BOX_SIZES = (12.0, 96.0)


def with_assigner(cfg: CfgNode, name: str) -> CfgNode:
    """A frozen copy of ``cfg`` whose MODEL.BMC.ASSIGNER.NAME is ``name``."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BMC.ASSIGNER.NAME = name
    cfg.freeze()
    return cfg


@torch.no_grad()
def anchor_setup(
    cfg: CfgNode, input_size: Tuple[int, int]
) -> Tuple[AnchorLayout, torch.Tensor, torch.Tensor]:
    """Anchors of one ``input_size`` image and a fresh model's (R, K) logits and (R, 4) boxes."""
    model = build_model(cfg).eval()
    image = torch.zeros(3, *input_size, dtype=torch.uint8)
    x = model.preprocess_image([{"image": image}]).tensor
    feats = model.backbone(x)
    feats = [feats[f] for f in model.head_in_features]
    anchors = model.anchor_generator(feats)
    logits, deltas = model._transpose_dense_predictions(model.head(feats), [model.num_classes, 4])
    boxes = torch.cat([a.tensor for a in anchors])
    layout = AnchorLayout(
        boxes=boxes,
        num_per_level=[len(a) for a in anchors],
        num_per_location=int(model.anchor_generator.num_anchors[0]),
        strides=[int(s) for s in model.anchor_generator.strides],
    )
    pred = model.box2box_transform.apply_deltas(cat(deltas, dim=1)[0].float(), boxes)
    return layout, cat(logits, dim=1)[0].float(), pred


def peak_tensor_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak tensor memory (MB) alive during ``fn()`` above the level at its start (module doc)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events = [e for e in events if "CPU" in str(e.device_type())]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def bench_assigner(
    assigner: BaseAssigner,
    layout: AnchorLayout,
    logits: torch.Tensor,
    boxes: torch.Tensor,
    gts: Sequence[int],
    repeats: int,
    input_size: Tuple[int, int],
) -> Dict[int, Dict[str, float]]:
    """{G: {median_ms, p90_ms, peak_mb}} of one image's assignment with G random gt boxes."""
    device = layout.boxes.device
    out = {}
    for g in gts:
        gen = torch.Generator().manual_seed(g)
        gt_boxes = random_gt_boxes(g, *input_size, gen, BOX_SIZES).to(device)
        gt_classes = torch.randint(0, logits.shape[1], (g,), generator=gen).to(device)
        args = (layout, gt_boxes, gt_classes)
        if assigner.needs_predictions:
            args += (logits, boxes)

        def call(args=args):
            return assigner(*args)

        for _ in range(2):
            call()
        times = [timed(call, device)[0] for _ in range(repeats)]
        stats = summarize_ms(times)
        out[g] = {"median_ms": stats["median_ms"], "p90_ms": stats["p90_ms"],
                  "peak_mb": peak_tensor_mb(call, device)}  # fmt: skip
    return out


def iteration_share(
    cfg: CfgNode, input_size: Tuple[int, int], num_gts: int, iters: int
) -> Dict[str, float]:
    """Median forward+backward time, time in ``label_anchors`` and their ratio (see module doc)."""
    model: nn.Module = build_model(cfg).train()
    device = model.device
    spent = [0.0]
    label_anchors = model.label_anchors

    def timed_label_anchors(*args, **kwargs):
        seconds, result = timed(lambda: label_anchors(*args, **kwargs), device)
        spent[0] += seconds
        return result

    model.label_anchors = timed_label_anchors
    batch = random_batch(cfg.SOLVER.IMS_PER_BATCH, *input_size, num_gts,
                         cfg.MODEL.RETINANET.NUM_CLASSES, seed=cfg.SEED)  # fmt: skip
    iter_s, assign_s, shares = [], [], []
    with EventStorage(0) as storage:
        for i in range(iters + 1):  # the first iteration is a warm-up
            storage.iter = i
            spent[0] = 0.0
            model.zero_grad(set_to_none=True)
            seconds = timed(lambda: sum(model(batch).values()).backward(), device)[0]
            if i > 0:
                iter_s.append(seconds)
                assign_s.append(spent[0])
                shares.append(spent[0] / seconds)
    return {
        "iteration_ms": summarize_ms(iter_s)["median_ms"],
        "assign_ms": summarize_ms(assign_s)["median_ms"],
        "share": statistics.median(shares),
        "batch_size": cfg.SOLVER.IMS_PER_BATCH,
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
    return {"g_ref": ref, "g_max": gs[-1], "time_ratio": ratio, "linear_ratio": bound,
            "at_most_linear": bool(ratio <= bound)}  # fmt: skip


def run(cfg: CfgNode, args: argparse.Namespace) -> Dict[str, object]:
    """Every measurement of the module docstring; returns the JSON record."""
    names = args.assigners or [name for name, _ in ASSIGNER_REGISTRY]
    input_size = tuple(args.input_size)
    layout, logits, boxes = anchor_setup(cfg, input_size)
    rec: Dict[str, object] = {
        "config_file": args.config_file, "overrides": list(args.opts),
        "input_size": list(input_size), "num_anchors": int(layout.boxes.shape[0]),
        "gts": list(args.gts), "repeats": args.repeats, "share_gts": args.share_gts,
        "machine": machine_info(), "device": str(layout.boxes.device),
        "memory_method": "torch.cuda.max_memory_allocated" if layout.boxes.is_cuda
        else "torch.profiler memory events (peak live tensor bytes)",
        "assigners": {},
    }  # fmt: skip
    for name in names:
        entry: Dict[str, object] = {}
        try:
            assigner = ASSIGNER_REGISTRY.get(name)(with_assigner(cfg, name))
            entry["per_gts"] = bench_assigner(
                assigner, layout, logits, boxes, args.gts, args.repeats, input_size
            )
            entry["scaling"] = scaling(entry["per_gts"])
            if args.iters > 0:
                entry["share"] = iteration_share(
                    with_assigner(cfg, name), input_size, args.share_gts, args.iters
                )
        except Exception as e:  # one broken assigner must not hide the others
            entry["error"] = f"{type(e).__name__}: {e}"
        print(f"[assign_bench] {name}: {entry.get('error', 'done')}")
        rec["assigners"][name] = entry
    return rec


def markdown(rec: Dict[str, object]) -> str:
    """Time, memory and share/scaling tables of a record."""
    gts = rec["gts"]
    items = rec["assigners"].items()
    time_rows, mem_rows, share_rows = [], [], []
    for name, e in items:
        per = {int(k): v for k, v in e.get("per_gts", {}).items()}
        time_rows.append([name, *[fmt(per.get(g, {}).get("median_ms"), 2) for g in gts]])
        mem_rows.append([name, *[fmt(per.get(g, {}).get("peak_mb"), 2) for g in gts]])
        sh, sc = e.get("share", {}), e.get("scaling", {})
        share_rows.append([
            name, fmt(sh.get("assign_ms"), 1), fmt(sh.get("iteration_ms"), 0),
            fmt(100 * sh["share"], 1) if sh else "-",
            f"{fmt(sc.get('time_ratio'), 1)} (G {sc.get('g_max')}/{sc.get('g_ref')}: "
            f"{fmt(sc.get('linear_ratio'), 0)})" if sc else "-",
            ("yes" if sc.get("at_most_linear") else "no") if sc else "-",
            e.get("error", ""),
        ])  # fmt: skip
    h, w = rec["input_size"]
    head = (
        f"Assignment of one {h}x{w} image ({rec['num_anchors']} anchors) on {rec['device']}, "
        f"{rec['machine']['cpu']}; median of {rec['repeats']} calls.\n"
    )
    g_cols = [f"G={g}" for g in gts]
    return "\n".join([
        "## Assignment time (ms, median)\n", head, markdown_table(["assigner", *g_cols], time_rows),
        f"\n## Peak memory (MB, {rec['memory_method']})\n",
        markdown_table(["assigner", *g_cols], mem_rows),
        f"\n## Share of a training iteration ({rec['share_gts']} gts/image) and scaling in G\n",
        markdown_table(["assigner", "assign/batch (ms)", "fwd+bwd (ms)", "share (%)",
                        "time ratio (G ratio)", "at most linear", "error"], share_rows),
    ]) + "\n"  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
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
    """Command-line entry point; returns 0, or 1 when an assigner failed."""
    args = parse_args(argv)
    setup_logger(name="bmc_detectron")
    try:
        cfg = build_cfg(args.config_file, args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    unknown = [a for a in args.assigners or [] if a not in ASSIGNER_REGISTRY]
    if unknown:
        print(f"error: unknown assigners {unknown}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with torch_threads(args.threads):
        rec = run(cfg, args)
    rec["wall_s"] = time.perf_counter() - t0
    out = Path(args.output)
    write_json(out / "assign_bench.json", rec)
    text = markdown(rec)
    (out / "assign_bench.md").write_text(text)
    print(text)
    return 1 if any("error" in e for e in rec["assigners"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
