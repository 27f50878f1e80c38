"""AP of a detector while the test images are rescaled and their stain is shifted.

    python -m bmc_detectron.tools.robustness --config-file C --weights W [W ...] --dataset D \
        --scales 0.5 0.75 1 1.5 2 3 --stain-shifts hue:-20 hue:20 sat:0.6 sat:1.4 h:0.15 e:-0.15 \
        --output DIR [--report md] [--keep-copies] [KEY VALUE ...]

Writes ``robustness.json`` (AP / AP50 per model and condition), ``ap_vs_scale.png``,
``ap_vs_stain.png`` and, with ``--report md``, ``robustness.md``; prints the table. How the
rescale survives the model's own test resize: :mod:`bmc_detectron.analysis.robustness_sweep`. Each
stain kind also gets its neutral value (hue:0, sat:1, h:0, e:0) so every curve has a baseline.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..analysis.inference import load_model
from ..analysis.robustness_sweep import (
    Condition,
    markdown_table,
    parse_stain_shift,
    plot_curves,
    run_sweep,
)
from ..config import ConfigError, build_cfg
from ..data.checks import DatasetError
from ..utils.io import atomic_write_text, write_json_atomic

logger = logging.getLogger("bmc_detectron.robustness")
_NEUTRAL = {"hue": 0.0, "sat": 1.0, "h": 0.0, "e": 0.0}


def conditions(scales: Sequence[float], shifts: Sequence[str]) -> List[Condition]:
    """Scale conditions, then stain conditions (with each kind's neutral value), deduplicated."""
    out = [Condition("scale", float(s)) for s in scales]
    stain = [parse_stain_shift(s) for s in shifts]
    stain += [Condition(k, _NEUTRAL[k]) for k in sorted({c.kind for c in stain})]
    for c in stain:
        if c not in out:
            out.append(c)
    return out


def model_label(weights: str, taken: Dict[str, object]) -> str:
    """A short unique name for a weights file (its stem, then its folder's name)."""
    path = Path(weights)
    label = path.stem if path.stem not in taken else f"{path.parent.name}/{path.stem}"
    return label


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
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def run(args: argparse.Namespace) -> Dict[str, List[dict]]:
    """Evaluate every model under every condition; write JSON, plots and the report."""
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    conds = conditions(args.scales, args.stain_shifts)
    results: Dict[str, List[dict]] = {}
    for weights in args.weights:
        cfg = build_cfg(args.config_file, list(args.opts) + ["MODEL.WEIGHTS", weights])
        label = model_label(weights, results)
        model = load_model(cfg, weights)
        work = out / "copies" / label.replace("/", "_")
        results[label] = run_sweep(cfg, model, args.dataset, conds, work, args.keep_copies)
    summary = {"dataset": args.dataset, "config": args.config_file, "results": results}
    write_json_atomic(summary, out / "robustness.json", indent=1)
    plot_curves(results, out)
    if args.report == "md":
        text = f"# Robustness of {', '.join(results)} on {args.dataset}\n\n"
        text += markdown_table(results)
        text += "\n![AP vs scale](ap_vs_scale.png)\n\n![AP vs stain](ap_vs_stain.png)\n"
        atomic_write_text(out / "robustness.md", text)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        results = run(args)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    print(Path(args.output) / "robustness.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
