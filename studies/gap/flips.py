"""Test-time flips, NMS thresholds and score voting on the full model (issue 25, section 2:
"test-time flips, reported apart").

The full model's three 780-iteration seeds (the gap study's own runs of it, BCCD train -> val,
the same protocol as the budget study's 780-iteration runs) are evaluated with
``train_net.py --eval-only``, once plainly and once per flip variant (``BMC.TEST_FLIPS`` /
``BMC.TEST_FLIP_MERGE``, modeling/tta.py), per NMS threshold
(``MODEL.RETINANET.NMS_THRESH_TEST``; the plain model's is 0.5) and with PAA's score voting
(``MODEL.BMC.SCORE_VOTING_SIGMA``, modeling/score_voting.py). The per-image latency of each
flip or voting variant against the plain model is measured in one process on the val images,
every image through every variant in turn (reporting/timing.interleaved_latency); an NMS
threshold leaves the network's cost as it is. The page shows the
AP / AP50 / AP75 of each variant, the paired differences to the plain model over the seeds
(mean and 95 % t-interval, studies/ablation/report.mean_interval) and the latency ratio.

    python -m studies.gap.flips                       # missing evals, latency, the page
    python -m studies.gap.flips --no-run              # only the page (from the eval outputs)

Settings: --runs (the full model's seed folders), --out (eval outputs), --py, --seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

from studies.ablation.report import mean_interval

ROOT = Path(__file__).resolve().parents[2]
RUNS = "output/gap/runs/retinanet_R_18_full_cpu"
OUT = "output/gap/flips"
PAGE = "docs/results/gap/RESULTS_flips.md"
DATASET = "bccd_val"
METRICS = ("AP", "AP50", "AP75")


class Variant(NamedTuple):
    """One way of running the trained model at test time."""

    flips: List[str] = []  # BMC.TEST_FLIPS
    merge: str = "nms"  # BMC.TEST_FLIP_MERGE
    nms: Optional[float] = None  # MODEL.RETINANET.NMS_THRESH_TEST; None: the model's own 0.5
    sigma: float = 0.0  # MODEL.BMC.SCORE_VOTING_SIGMA; 0: off

    def describe(self) -> str:
        parts = [f"flips {self.flips} merged by {self.merge}"] if self.flips else ["no flip"]
        if self.nms is not None:
            parts.append(f"NMS at IoU {self.nms}")
        if self.sigma:
            parts.append(f"score voting at sigma {self.sigma}")
        return ", ".join(parts)


#: "plain" is the model as it ships
VARIANTS: Dict[str, Variant] = {
    "plain": Variant(),
    "h": Variant(["h"]),
    "v": Variant(["v"]),
    "hv": Variant(["hv"]),
    "h+v+hv": Variant(["h", "v", "hv"]),
    "h+v+hv wbf": Variant(["h", "v", "hv"], "wbf"),
    "nms 0.6": Variant(nms=0.6),
    "nms 0.7": Variant(nms=0.7),
    "vote": Variant(sigma=0.025),
    "hv vote": Variant(["hv"], sigma=0.025),
}


def folder(variant: str) -> str:
    """The variant's folder name under ``--out``."""
    return variant.replace("+", "_").replace(" ", "_").replace(".", "")


def eval_command(py: str, run: Path, out: Path, variant: str) -> List[str]:
    """``train_net.py --eval-only`` of one seed's weights with the variant's flips."""
    flips, merge, nms, sigma = VARIANTS[variant]
    return [
        py,
        "train_net.py",
        "--config-file",
        str(run / "config.yaml"),
        "--eval-only",
        "MODEL.WEIGHTS",
        str(run / "model_final.pth"),
        "OUTPUT_DIR",
        str(out),
        "BMC.TEST_FLIPS",
        repr(flips),
        "BMC.TEST_FLIP_MERGE",
        merge,
        "MODEL.BMC.SCORE_VOTING_SIGMA",
        str(sigma),
    ] + (["MODEL.RETINANET.NMS_THRESH_TEST", str(nms)] if nms is not None else [])


def metrics_file(out: Path, variant: str, seed: int) -> Path:
    return out / folder(variant) / f"seed{seed}" / "inference" / DATASET / "coco_metrics.json"


def run_eval(cmd: List[str]) -> None:
    """One ``train_net.py --eval-only`` command, on one thread, its output not shown."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def latency_record(times: Dict[str, List[float]], base: str, **about: object) -> Dict:
    """``about`` plus each subject's median ms per call and its median paired ratio to
    ``base`` (the i-th calls of two subjects are paired: reporting/timing.interleaved_latency)."""
    return {
        **about,
        "median_ms": {k: statistics.median(v) * 1000 for k, v in times.items()},
        "ratio": {
            k: statistics.median(a / b for a, b in zip(v, times[base])) for k, v in times.items()
        },
    }


def run_evals(py: str, runs: Path, out: Path, seeds: Sequence[int]) -> None:
    """Every missing (variant, seed) evaluation, one at a time on one thread."""
    for seed in seeds:
        for variant in VARIANTS:
            if metrics_file(out, variant, seed).is_file():
                continue
            target = out / folder(variant) / f"seed{seed}"
            run_eval(eval_command(py, runs / f"seed{seed}", target, variant))


def measure_latency(runs: Path, seed: int, images: int, rounds: int) -> Dict[str, object]:
    """Per-image seconds of every variant on the first ``images`` val images (one thread,
    interleaved, one warm-up round), and each variant's median paired ratio to the plain model."""
    import copy

    import torch

    from bmc_detectron.config import build_cfg
    from bmc_detectron.engine import BMCTrainer
    from bmc_detectron.engine.loading import load_model
    from bmc_detectron.modeling.tta import BMCRetinaNetWithTTA
    from bmc_detectron.reporting.timing import interleaved_latency

    torch.set_num_threads(1)
    cfg = build_cfg(str(runs / f"seed{seed}" / "config.yaml"))
    model = load_model(cfg, str(runs / f"seed{seed}" / "model_final.pth"))
    loader = BMCTrainer.build_test_loader(cfg, DATASET)
    batches = [b for _, b in zip(range(images), loader)]
    subjects = {"plain": model}
    for name, (flips, merge, _, sigma) in VARIANTS.items():
        if not (flips or sigma):
            continue
        variant = model
        if sigma:
            variant = copy.deepcopy(model)
            variant.score_voting_sigma = sigma
        subjects[name] = BMCRetinaNetWithTTA(variant, flips=flips, merge=merge).eval()
    with torch.no_grad():
        times = interleaved_latency(subjects, batches, rounds=rounds, warmup=1)
    return latency_record(times, "plain", seed=seed, images=len(batches), rounds=rounds)


def collect(out: Path, seeds: Sequence[int]) -> Dict[str, Dict[int, Dict[str, float]]]:
    """variant -> seed -> bbox metrics, for the evaluations that exist."""
    found: Dict[str, Dict[int, Dict[str, float]]] = {}
    for variant in VARIANTS:
        for seed in seeds:
            path = metrics_file(out, variant, seed)
            if path.is_file():
                found.setdefault(variant, {})[seed] = json.loads(path.read_text())["bbox"]
    return found


def interval_cell(mean: float, lo: float, hi: float, n: int) -> str:
    if n < 2:
        return f"{mean:+.2f} (n={n})"
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def results_rows(found: Dict, latency: Dict | None) -> List[List[object]]:
    """One row per variant: mean AP / AP50 / AP75, paired differences to "plain", latency."""
    plain = found.get("plain", {})
    rows = []
    for variant, per_seed in found.items():
        row: List[object] = [variant, len(per_seed)]
        row += [statistics.fmean(m[k] for m in per_seed.values()) for k in METRICS]
        for k in METRICS:
            diffs = [per_seed[s][k] - plain[s][k] for s in per_seed if s in plain]
            row.append("" if variant == "plain" else interval_cell(*mean_interval(diffs)))
        ratio = (latency or {}).get("ratio", {}).get(variant)
        row.append("" if ratio is None else f"{ratio:.2f}x")
        rows.append(row)
    return rows


def seed_rows(found: Dict) -> List[List[object]]:
    return [
        [variant, seed, *(m[k] for k in METRICS)]
        for variant, per_seed in found.items()
        for seed, m in sorted(per_seed.items())
    ]


def write_page(path: Path, found: Dict, latency: Dict | None, runs: str, out: str) -> None:
    """The page, from the evaluations' coco_metrics.json and the latency JSON."""
    from bmc_detectron.reporting.tables import markdown_table
    from bmc_detectron.utils.io import atomic_write_text

    head = ["variant", "seeds"] + list(METRICS) + [f"Δ{k} vs plain [95 % t]" for k in METRICS]
    lat = ""
    if latency:
        lat = (
            f"Latency: {latency['images']} val images, {latency['rounds']} rounds after one "
            f"warm-up, one thread, seed {latency['seed']}'s weights; plain "
            f"{latency['median_ms']['plain']:.0f} ms median per image; the ratio is the median "
            "over images of variant / plain time, measured back to back on this shared machine."
        )
    merges = "; ".join(
        f"`{name}`: {v.describe()}" for name, v in VARIANTS.items() if name != "plain"
    )
    lines = [
        "# Test-time flips, NMS thresholds and score voting on the full model (BCCD val, 780 "
        "iterations)",
        "",
        f"Generated {datetime.now():%Y-%m-%d %H:%M} by `python -m studies.gap.flips` from the "
        f"evaluations in `{out}` of the full model's seeds in `{runs}` (`train_net.py --eval-only "
        "BMC.TEST_FLIPS ... BMC.TEST_FLIP_MERGE ... MODEL.RETINANET.NMS_THRESH_TEST ...`); "
        "reported apart from the trained candidates of [the gap study](RESULTS_gap.md): they "
        "change only inference; flips cost latency, an NMS threshold does not (no latency "
        "measured for those rows).",
        "",
        f"Variants: {merges}. NMS is class-wise at the model's test threshold "
        "(MODEL.RETINANET.NMS_THRESH_TEST); WBF is weighted box fusion (Solovyev et al. 2021) "
        "matching at the same IoU; score voting (PAA, Kim & Lee 2020) moves each kept box to the "
        "score- and IoU-weighted mean of its class's pre-NMS candidates (scores unchanged). "
        "Differences are paired by seed: mean and 95 % t-interval.",
        "",
        markdown_table(head + ["latency vs plain"], results_rows(found, latency)),
        "",
        lat,
        "",
        "## Per seed",
        "",
        markdown_table(["variant", "seed"] + list(METRICS), seed_rows(found)),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines))


def variant_study_args(
    argv: Sequence[str] | None,
    description: str,
    defaults: Dict[str, str],
    helps: Dict[str, str],
    latency_rounds: int,
) -> argparse.Namespace:
    """The command line of a study that evaluates trained runs at test-time variants: --runs,
    --out, --page (``defaults`` and ``helps`` by name), --seeds, --py, --no-run, --latency-*."""
    p = argparse.ArgumentParser(description=description)
    for name in ("runs", "out", "page"):
        p.add_argument(f"--{name}", default=defaults[name], help=helps.get(name))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--py", default=sys.executable)
    p.add_argument("--no-run", action="store_true", help="only the page, from existing outputs")
    p.add_argument("--latency-images", type=int, default=20)
    p.add_argument("--latency-rounds", type=int, default=latency_rounds)
    return p.parse_args(argv)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return variant_study_args(
        argv,
        __doc__.split("\n")[0],
        {"runs": RUNS, "out": OUT, "page": PAGE},
        {
            "runs": "the full model's seed<N>/ folders",
            "out": "evaluation outputs (one folder per variant)",
        },
        latency_rounds=2,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    latency_path = out / "latency.json"
    if not args.no_run:
        run_evals(args.py, runs, out, args.seeds)
        if not latency_path.is_file():
            lat = measure_latency(runs, args.seeds[0], args.latency_images, args.latency_rounds)
            latency_path.write_text(json.dumps(lat, indent=2))
    found = collect(out, args.seeds)
    if not found:
        print(f"error: no evaluations in {out}; run without --no-run first", file=sys.stderr)
        return 1
    latency = json.loads(latency_path.read_text()) if latency_path.is_file() else None
    write_page(ROOT / args.page, found, latency, args.runs, args.out)
    print(f"wrote {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
