"""AP of a detector while the test images are rescaled and their stain is shifted.

    python -m studies.robustness.robustness --config-file C --weights W [W ...] --dataset D \
        --scales 0.5 0.75 1 1.5 2 3 --stain-shifts hue:-20 hue:20 sat:0.6 sat:1.4 h:0.15 e:-0.15 \
        --output DIR [--label NAME ...] [--stain-normalize reinhard]
        [--auto-scale [image|case]] [--training-profile PATH] [--report md] [--keep-copies]
        [KEY VALUE ...]

Writes ``robustness.json`` (AP / AP50 per model and condition), ``ap_vs_scale.png``,
``ap_vs_stain.png`` and, with ``--report md``, ``robustness.md``; prints the table. How the
rescale survives the model's own test resize: :mod:`studies.robustness.sweep`. Each
stain kind also gets its neutral value (hue:0, sat:1, h:0, e:0) so every curve has a baseline.

``--auto-scale`` (``case``: one factor per condition) / ``--stain-normalize reinhard``: the
inference-time measures
(:mod:`studies.robustness.measures`), with the training profile
(``--training-profile``, default ``training_profile.json`` beside the first ``--weights``). The
results are named after the model and the measures (``full + auto-scale``), so the
``robustness.json`` of several runs merge into one page
(:mod:`studies.robustness.robustness_report`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.data.checks import DatasetError
from bmc_detectron.engine.loading import load_model
from bmc_detectron.smear.profile import PROFILE_FILE, TrainingProfile
from bmc_detectron.smear.stain import STAIN_METHODS
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic
from studies.robustness.measures import Measures
from studies.robustness.report import page_text, plot_curves, results_table
from studies.robustness.sweep import (
    STAIN_NEUTRAL,
    Condition,
    parse_stain_shift,
    run_sweep,
)

logger = logging.getLogger("bmc_detectron.smear")


def conditions(scales: Sequence[float], shifts: Sequence[str]) -> List[Condition]:
    """Scale conditions, then stain conditions (with each kind's neutral value), deduplicated."""
    out = [Condition("scale", float(s)) for s in scales]
    stain = [parse_stain_shift(s) for s in shifts]
    stain += [Condition(k, STAIN_NEUTRAL[k]) for k in sorted({c.kind for c in stain})]
    for c in stain:
        if c not in out:
            out.append(c)
    return out


def model_label(weights: str, taken: Dict[str, object]) -> str:
    """A short unique name for a weights file (its stem, then its folder's name)."""
    path = Path(weights)
    label = path.stem if path.stem not in taken else f"{path.parent.name}/{path.stem}"
    return label


def build_measures(args: argparse.Namespace) -> Measures:
    """The measures asked for, with the training profile they need (FileNotFoundError naming
    the command that makes it when it is missing)."""
    if not (args.auto_scale or args.stain_normalize):
        return Measures()
    path = Path(args.training_profile or Path(args.weights[0]).parent / PROFILE_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: training profile not found (make it with python -m "
            "bmc_detectron.tools.estimate_scale --dataset TRAIN --output PATH --config-file C)"
        )
    profile = TrainingProfile.load(path)
    per_case = args.auto_scale == "case"
    return Measures(bool(args.auto_scale), args.stain_normalize, profile, str(path), per_case)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, help="model config (yaml)")
    p.add_argument("--weights", required=True, nargs="+", help="checkpoint(s), one curve each")
    p.add_argument("--dataset", required=True, help="registered test dataset name")
    p.add_argument("--scales", type=float, nargs="*", default=[0.5, 0.75, 1, 1.5, 2, 3])
    p.add_argument("--stain-shifts", nargs="*", default=[], help="KIND:VALUE, KIND hue/sat/h/e")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--report", choices=["md"], help="also write robustness.md")
    p.add_argument("--keep-copies", action="store_true", help="keep the transformed images")
    p.add_argument("--label", nargs="+", help="model name(s) in the results, one per --weights")
    p.add_argument(
        "--auto-scale",
        nargs="?",
        const="image",
        choices=["image", "case"],
        help="resize images by their red cells: each by its own (image, the default) or all of a "
        "condition by their median (case)",
    )
    p.add_argument("--stain-normalize", choices=STAIN_METHODS, help="normalise the stain")
    p.add_argument("--training-profile", help="training_profile.json (default: beside weights)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def run(args: argparse.Namespace) -> Dict[str, List[dict]]:
    """Evaluate every model under every condition; write JSON, plots and the report."""
    if args.label and len(args.label) != len(args.weights):
        raise ValueError("--label: give one name per --weights")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    conds = conditions(args.scales, args.stain_shifts)
    measures = build_measures(args)
    results: Dict[str, List[dict]] = {}
    variants: Dict[str, dict] = {}
    labels: Dict[str, object] = {}
    for i, weights in enumerate(args.weights):
        cfg = build_cfg(args.config_file, list(args.opts) + ["MODEL.WEIGHTS", weights])
        label = args.label[i] if args.label else model_label(weights, labels)
        labels[label] = weights
        name = measures.variant(label)
        model = load_model(cfg, weights)
        work = out / "copies" / label.replace("/", "_")
        results[name] = run_sweep(cfg, model, args.dataset, conds, work, args.keep_copies, measures)
        variants[name] = {
            "model": label,
            "measures": " + ".join(measures.names) or "plain",
            "config": args.config_file,
            "weights": weights,
            "profile": measures.profile_source or None,
        }
    summary = {"dataset": args.dataset, "config": args.config_file, "results": results}
    summary["variants"] = variants
    write_json_atomic(summary, out / "robustness.json", indent=1)
    images = plot_curves(results, out)
    if args.report == "md":
        title = f"Robustness of {', '.join(results)} on {args.dataset}"
        atomic_write_text(out / "robustness.md", page_text(results, variants, images, title))
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        results = run(args)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(results_table(results))
    print(Path(args.output) / "robustness.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
