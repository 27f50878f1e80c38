"""A second, RoI-style look at the full model's boxes (issue 25, section 2): the page.

Faster R-CNN's lead on BCCD is box quality (AP75) and platelets; its second stage re-reads the
features inside each box. The candidates (leaf configs, trained by ``studies/gap/gap.sh`` with the
gap protocol: BCCD train -> val, 780 iterations, bf16, one thread, seeds paired with the full
model's) add that stage to the full model (``MODEL.BMC.REFINE``, modeling/refine.py):

- ``REFINE``: trained jointly (its gradients reach the backbone and neck);
- ``REFINE_DETACH``: trained on detached features, so the dense detector is the full model's own;
- ``REFINE_IOU``: ``REFINE`` with IoU-Net's localisation score re-ranking the detections;
- ``REFINE_CLS``: ``REFINE`` with Faster R-CNN's classifier (classes + background) re-ranking them;
- ``REFINE_IOU_CLS``: both;
- ``REFINE_CLS_CASCADE``: ``REFINE_CLS`` as three stages of Cascade R-CNN (modeling/cascade.py);
- ``REFINE_CLS_P2``: ``REFINE_CLS`` pooling from a stride-4 level the dense head does not read.

Each trained run is also evaluated (``train_net.py --eval-only``) at test-time settings that do
not change training, to take the gain apart: without the per-class NMS after refinement
(``SECOND_NMS False``), with the stage switched off (``REFINE.ENABLED False``: the jointly trained
dense detector alone) and, for the candidates that rescore, without the rescoring. The
page shows every variant against the full model, paired by seed (mean and 95 % t-interval), and
the batch-1 latency of the stage against the full model (one process, interleaved, trained weights).

    python -m studies.gap.refine              # missing evaluations, the latency, the page
    python -m studies.gap.refine --no-run     # only the page

Settings: --runs (the gap study's runs/), --out (evaluation outputs), --py, --seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from studies.ablation.report import mean_interval
from studies.gap.flips import interval_cell, latency_record, run_eval, variant_study_args

ROOT = Path(__file__).resolve().parents[2]
RUNS = "output/gap/runs"
OUT = "output/gap/refine"
PAGE = "docs/results/gap/RESULTS_gap_refine.md"
DATASET = "bccd_val"
METRICS = ("AP", "AP50", "AP75", "AP-Platelets")
FULL = "retinanet_R_18_full_cpu"
CANDIDATES = (
    "retinanet_R_18_full_REFINE_cpu",
    "retinanet_R_18_full_REFINE_DETACH_cpu",
    "retinanet_R_18_full_REFINE_IOU_cpu",
    "retinanet_R_18_full_REFINE_CLS_cpu",
    "retinanet_R_18_full_REFINE_IOU_CLS_cpu",
    "retinanet_R_18_full_REFINE_CLS_CASCADE_cpu",
    "retinanet_R_18_full_REFINE_CLS_P2_cpu",
)
RESCORING_OFF = ["MODEL.BMC.REFINE.IOU_SCORE", "False", "MODEL.BMC.REFINE.CLASSIFY", "False"]
#: test-time variants: name -> config overrides ("as trained" is the run's own evaluation)
VARIANTS: Dict[str, List[str]] = {
    "as trained": [],
    "no second NMS": ["MODEL.BMC.REFINE.SECOND_NMS", "False"],
    "stage off (dense only)": ["MODEL.BMC.REFINE.ENABLED", "False"],
    "no rescoring": RESCORING_OFF,
    "no rescoring, no second NMS": RESCORING_OFF + ["MODEL.BMC.REFINE.SECOND_NMS", "False"],
}


def variants_of(config: str) -> List[str]:
    """The variants that make sense for a candidate (rescoring ones only where it rescores)."""
    rescores = "_IOU_" in config or "_CLS_" in config  # REFINE_IOU_CLS has both
    return [v for v in VARIANTS if "rescoring" not in v or rescores]


def metrics_file(runs: Path, out: Path, config: str, variant: str, seed: int) -> Path:
    if variant == "as trained":
        return runs / config / f"seed{seed}" / "inference" / DATASET / "coco_metrics.json"
    folder = variant.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    return out / config / folder / f"seed{seed}" / "inference" / DATASET / "coco_metrics.json"


def eval_command(py: str, run: Path, out: Path, variant: str) -> List[str]:
    """``train_net.py --eval-only`` of one trained run's weights at a test-time variant."""
    return [py, "train_net.py", "--config-file", str(run / "config.yaml"), "--eval-only",
            "MODEL.WEIGHTS", str(run / "model_final.pth"), "OUTPUT_DIR", str(out),
            *VARIANTS[variant]]  # fmt: skip


def run_evals(py: str, runs: Path, out: Path, seeds: Sequence[int]) -> None:
    """Every missing evaluation of a trained run, one at a time on one thread."""
    for config in CANDIDATES:
        for seed in seeds:
            run = runs / config / f"seed{seed}"
            if not (run / "model_final.pth").is_file():
                continue
            for variant in variants_of(config)[1:]:
                target = metrics_file(runs, out, config, variant, seed)
                if target.is_file():
                    continue
                run_eval(eval_command(py, run, target.parents[2], variant))


def measure_latency(runs: Path, seed: int, images: int, rounds: int) -> Dict:
    """Per-image batch-1 seconds of the full model and every candidate trained at ``seed``
    (trained weights, one thread, interleaved after a warm-up round); each candidate's median
    paired ratio to the full model."""
    import torch

    from bmc_detectron.config import build_cfg
    from bmc_detectron.engine import BMCTrainer
    from bmc_detectron.engine.loading import load_model
    from bmc_detectron.reporting.timing import interleaved_latency

    torch.set_num_threads(1)
    subjects, loader = {}, None
    for name in (FULL, *CANDIDATES):
        run = runs / name / f"seed{seed}"
        if not (run / "model_final.pth").is_file():
            continue
        cfg = build_cfg(str(run / "config.yaml"))
        subjects[name] = load_model(cfg, str(run / "model_final.pth"))
        loader = loader or BMCTrainer.build_test_loader(cfg, DATASET)
    batches = [b for _, b in zip(range(images), loader)]
    with torch.no_grad():
        times = interleaved_latency(subjects, batches, rounds=rounds, warmup=1)
    return latency_record(times, FULL, seed=seed, images=len(batches), rounds=rounds)


def collect(runs: Path, out: Path, seeds: Sequence[int]) -> Dict[Tuple[str, str], Dict]:
    """(config, variant) -> seed -> bbox metrics, for the evaluations that exist; the full
    model's own runs under ("full model", "as trained")."""
    found: Dict[Tuple[str, str], Dict[int, Dict[str, float]]] = {}
    entries = [(FULL, "as trained")] + [(c, v) for c in CANDIDATES for v in variants_of(c)]
    for config, variant in entries:
        for seed in seeds:
            path = metrics_file(runs, out, config, variant, seed)
            if path.is_file():
                found.setdefault((config, variant), {})[seed] = json.loads(path.read_text())["bbox"]
    return found


def short(config: str) -> str:
    return "full model" if config == FULL else config.replace("retinanet_R_18_full_", "")[:-4]


def results_rows(found: Dict) -> List[List[object]]:
    """One row per (config, variant): means, and paired differences to the full model."""
    full = found.get((FULL, "as trained"), {})
    rows = []
    for (config, variant), per_seed in found.items():
        row: List[object] = [short(config), variant, len(per_seed)]
        row += [statistics.fmean(m[k] for m in per_seed.values()) for k in METRICS]
        for k in METRICS[:3]:
            diffs = [per_seed[s][k] - full[s][k] for s in per_seed if s in full]
            row.append("" if config == FULL else interval_cell(*mean_interval(diffs)))
        rows.append(row)
    return rows


def seed_rows(found: Dict) -> List[List[object]]:
    return [
        [short(config), variant, seed, *(m[k] for k in METRICS)]
        for (config, variant), per_seed in found.items()
        for seed, m in sorted(per_seed.items())
    ]


def latency_line(latency: Dict | None) -> str:
    if not latency:
        return "Latency: not measured yet (`python -m studies.gap.refine` measures it)."
    ms, ratio = latency["median_ms"], latency["ratio"]
    each = ", ".join(f"{short(k)} {ms[k]:.0f} ms (**{ratio[k]:.2f}x**)" for k in ms if k != FULL)
    return (
        f"Latency (batch 1, one thread, {latency['images']} val images x {latency['rounds']} "
        f"interleaved rounds after a warm-up, seed {latency['seed']}'s trained weights, each "
        f"as trained): full model {ms[FULL]:.0f} ms median per image; {each} (the median of "
        "the per-image ratios to the full model)."
    )


def write_page(path: Path, found: Dict, latency: Dict | None, runs: str, out: str) -> None:
    from bmc_detectron.reporting.tables import markdown_table
    from bmc_detectron.utils.io import atomic_write_text

    head = ["config", "at test time", "seeds", *METRICS]
    head += [f"Δ{k} vs full model [95 % t]" for k in METRICS[:3]]
    lines = [
        "# A second, RoI-style look at the full model's boxes (BCCD val, 780 iterations)",
        "",
        f"Generated {datetime.now():%Y-%m-%d %H:%M} by `python -m studies.gap.refine` from the "
        f"gap study's runs in `{runs}` (trained by `studies/gap/gap.sh`, the gap protocol) and "
        f"their test-time variants in `{out}` (`train_net.py --eval-only` with the overrides "
        "below).",
        "",
        "Faster R-CNN's lead over the full model on BCCD is box quality (AP75) and platelets; its "
        "second stage re-reads the features inside each box. The candidates add such a stage to "
        "the full model (`MODEL.BMC.REFINE`, `bmc_detectron/modeling/refine.py`: RoIAlign 7 x 7 "
        "on the neck's levels, Faster R-CNN's box head with two 256-wide FC layers, "
        "class-agnostic deltas, trained on the model's own detections plus jittered gt boxes): "
        "`REFINE` trains it jointly (its gradients reach the backbone and neck); `REFINE_DETACH` "
        "on detached features, so that its dense detector is the full model's own, to the digit; "
        "`REFINE_IOU` is `REFINE` with IoU-Net's localisation score, detections ranked by "
        "sqrt(score x predicted IoU); `REFINE_CLS` is `REFINE` with Faster R-CNN's classifier "
        "(the three classes and background) on the RoI features, detections ranked by "
        "sqrt(score x its probability of the detection's class); `REFINE_IOU_CLS` has both "
        "(the geometric mean of the three factors).",
        "",
        "Test-time variants: "
        + "; ".join(f"`{v}`: {' '.join(o) or 'the run as trained'}" for v, o in VARIANTS.items())
        + ". Differences are paired by seed with the full model's own runs.",
        "",
        markdown_table(head, results_rows(found)),
        "",
        latency_line(latency),
        "",
        "## Per seed",
        "",
        markdown_table(["config", "at test time", "seed", *METRICS], seed_rows(found)),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return variant_study_args(
        argv,
        __doc__.split("\n")[0],
        {"runs": RUNS, "out": OUT, "page": PAGE},
        {"runs": "the gap study's runs/ folder", "out": "evaluations of the test-time variants"},
        latency_rounds=3,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    latency_json = out / "latency.json"
    if not args.no_run:
        run_evals(args.py, runs, out, args.seeds)
        latency = measure_latency(runs, args.seeds[0], args.latency_images, args.latency_rounds)
        out.mkdir(parents=True, exist_ok=True)
        latency_json.write_text(json.dumps(latency, indent=2))
    latency = json.loads(latency_json.read_text()) if latency_json.is_file() else None
    found = collect(runs, out, args.seeds)
    write_page(ROOT / args.page, found, latency, args.runs, args.out)
    print(f"wrote {args.page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
