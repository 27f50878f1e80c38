"""Side-by-side inference latency of several detectors, with where the time goes.

    python -m bmc_detectron.tools.latency \
        --configs configs/cpu/retinanet_R_18_FPN_cpu.yaml configs/cpu/retinanet_R_18_full_cpu.yaml \
        --reference --full retinanet_R_18_full_cpu [--rounds 6] [--num-images 10] [--threads 2] \
        [--input-size 320 426] [--dataset bccd_test | --images DIR] [--output output/latency]

Every model is built in this one process and timed on the same inputs, batch 1, eval mode,
``model([input])`` (pre-processing, backbone + neck, head, anchor decoding and NMS included).
After ``--warmup`` untimed calls per model, the models take turns: in each of ``--rounds`` rounds
every model runs over all ``--num-images`` inputs, the order of the models rotating from round to
round, so that drift of the machine (other load, clocks, caches) falls on all models alike.

Each call is split with forward hooks into ``backbone`` (ResNet + FPN/PAN neck), ``head`` (the
classification and box towers) and ``rest`` (everything else: normalisation and padding, anchors,
decoding, score filtering, NMS). ``--reference`` adds detectron2's stock ``RetinaNet`` built from
the first config; ``--full NAME`` states whether that model's median latency is within
``--max-ratio`` (default 1.3) of the reference's. Writes ``OUTPUT/latency.json`` and
``OUTPUT/latency.md``.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from torch import nn

from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.tools import _bench_utils as U
from bmc_detectron.tools import benchmark as B
from bmc_detectron.tools._ablation_report import REFERENCE_NAME, REFERENCE_OPTS, describe

STAGES = ("backbone", "head")


class StageClock:
    """Forward hooks that add up the wall time spent in ``model.backbone`` and ``model.head``."""

    def __init__(self, model: nn.Module):
        self.device = model.device
        self.spent = {s: 0.0 for s in STAGES}
        self._start: Dict[str, float] = {}
        self._handles = []
        for stage in STAGES:
            module = getattr(model, stage)
            self._handles.append(module.register_forward_pre_hook(self._pre(stage)))
            self._handles.append(module.register_forward_hook(self._post(stage)))

    def _pre(self, stage: str):
        def hook(module, args):
            U.synchronize(self.device)
            self._start[stage] = time.perf_counter()

        return hook

    def _post(self, stage: str):
        def hook(module, args, output):
            U.synchronize(self.device)
            self.spent[stage] += time.perf_counter() - self._start.pop(stage)

        return hook

    def reset(self) -> None:
        self.spent = {s: 0.0 for s in STAGES}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def build_models(args: argparse.Namespace) -> List[Tuple[str, str, nn.Module]]:
    """(name, description, eval-mode model) for every config, plus the reference if asked."""
    entries = [(Path(c).stem, c, list(args.opts)) for c in args.configs]
    if args.reference:
        entries.append((REFERENCE_NAME, args.configs[0], list(args.opts) + REFERENCE_OPTS))
    models = []
    for name, config_file, opts in entries:
        cfg = build_cfg(config_file, opts)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        desc = "detectron2's stock RetinaNet" if name == REFERENCE_NAME else describe(config_file)
        models.append((name, desc, model))
    return models


def time_models(
    models: Sequence[Tuple[str, str, nn.Module]], inputs: Sequence[dict], rounds: int, warmup: int
) -> Dict[str, Dict[str, List[float]]]:
    """Per model, the seconds of every timed call in total and per stage (interleaved rounds)."""
    clocks = {name: StageClock(model) for name, _, model in models}
    times = {name: {"total": [], "backbone": [], "head": []} for name, _, _ in models}
    try:
        with torch.no_grad():
            for _, _, model in models:
                for i in range(warmup):
                    model([inputs[i % len(inputs)]])
            for r in range(rounds):
                shift = r % len(models)
                for name, _, model in list(models[shift:]) + list(models[:shift]):
                    clock = clocks[name]
                    for inp in inputs:
                        clock.reset()
                        seconds = U.timed(lambda inp=inp, m=model: m([inp]), model.device)[0]
                        times[name]["total"].append(seconds)
                        for stage in STAGES:
                            times[name][stage].append(clock.spent[stage])
    finally:
        for clock in clocks.values():
            clock.remove()
    return times


def summarize(
    models: Sequence[Tuple[str, str, nn.Module]],
    times: Dict[str, Dict[str, List[float]]],
    input_size: Tuple[int, int],
) -> List[Dict[str, object]]:
    """One record per model: latency stats, per-stage medians, params, GFLOPs, ratio to ref."""
    recs = []
    for name, desc, model in models:
        t = times[name]
        rest = [a - b - c for a, b, c in zip(t["total"], t["backbone"], t["head"])]
        rec = {"name": name, "description": desc, **U.summarize_ms(t["total"])}
        for stage, values in (("backbone", t["backbone"]), ("head", t["head"]), ("rest", rest)):
            rec[f"{stage}_ms"] = statistics.median(values) * 1000 if values else float("nan")
        rec.update(B.count_parameters(model))
        rec["gflops"] = B.count_gflops(model, input_size)["gflops"]
        recs.append(rec)
    ref = next((r for r in recs if r["name"] == REFERENCE_NAME), None)
    for rec in recs:
        rec["ratio_to_reference"] = rec["median_ms"] / ref["median_ms"] if ref else None
    return recs


def markdown(recs: List[Dict], full: str | None, max_ratio: float, header: str) -> str:
    """The latency table (and the verdict on ``full``) as markdown."""
    f = U.fmt
    rows = [[r["name"], r["description"].replace("|", "/"),
             f"{f(r['median_ms'])} / {f(r['p90_ms'])}",
             f(r["ratio_to_reference"], 2) if r["ratio_to_reference"] else "-",
             f(r["backbone_ms"]), f(r["head_ms"]), f(r["rest_ms"]), f(r["params_m"], 2),
             f(r["gflops"], 2)] for r in recs]  # fmt: skip
    table = U.markdown_table(
        ["model", "what it is", "latency med / p90 (ms)", "× reference", "backbone+neck (ms)",
         "head (ms)", "rest (ms)", "params (M)", "GFLOPs"], rows)  # fmt: skip
    lines = [header, "", table, ""]
    by_name = {r["name"]: r for r in recs}
    if full and full in by_name and by_name[full]["ratio_to_reference"]:
        ratio = by_name[full]["ratio_to_reference"]
        verdict = "met" if ratio <= max_ratio else "not met"
        lines.append(f"- `{full}`: {ratio:.2f}x the reference's median latency "
                     f"(target ≤ {max_ratio}x) → **{verdict}**")  # fmt: skip
    elif full:
        lines.append(f"- target not evaluated: `{full}` or the reference was not measured")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> Dict[str, object]:
    """Build, time and summarize; returns the JSON record (also written to OUTPUT)."""
    models = build_models(args)
    cfg = build_cfg(args.configs[0], list(args.opts))
    size = tuple(args.input_size) if args.input_size else B.default_input_size(cfg)
    records = B.image_records(args.images, args.dataset) if args.images or args.dataset else []
    inputs = B.latency_inputs(records, args.num_images, size, cfg.INPUT.FORMAT)
    t0 = time.perf_counter()
    times = time_models(models, inputs, args.rounds, args.warmup)
    recs = summarize(models, times, size)
    machine = U.machine_info()
    header = (
        f"Batch 1, input {size[0]}x{size[1]} ({args.images or args.dataset or 'random images'}),"
        f" {args.rounds} interleaved rounds x {args.num_images} images per model after"
        f" {args.warmup} warm-up calls; device {models[0][2].device}, {machine['cpu']},"
        f" {torch.get_num_threads()} torch threads, 1-min load average {machine['load_avg_1m']}."
    )
    out = {
        "models": recs, "input_size": list(size), "rounds": args.rounds,
        "num_images": args.num_images, "threads": torch.get_num_threads(), "machine": machine,
        "wall_s": time.perf_counter() - t0, "markdown": markdown(recs, args.full, args.max_ratio,
                                                                  header),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m bmc_detectron.tools.latency " + shlex.join(args.argv),
    }  # fmt: skip
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", required=True)
    p.add_argument("--reference", action="store_true", help="add detectron2's stock RetinaNet")
    p.add_argument("--full", help="model name whose latency is judged against the reference")
    p.add_argument("--max-ratio", type=float, default=1.3, help="allowed latency / reference")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--dataset", help="registered dataset whose images are timed")
    p.add_argument("--images", help="image folder to time (overrides --dataset)")
    p.add_argument("--num-images", type=int, default=10, help="images per model and round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--output", default="output/latency")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.num_images < 1 or args.rounds < 1:
        p.error("--num-images and --rounds must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    setup_logger(name="bmc_detectron")
    try:
        with U.torch_threads(args.threads):
            rec = run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    U.write_json(out / "latency.json", rec)
    (out / "latency.md").write_text("## Inference latency, side by side\n\n" + rec["markdown"])
    print(rec["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
