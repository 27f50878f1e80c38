"""Choose a trained classifier's open-set ("Other") threshold on known-type val crops.

    bmc open-set-threshold --config-file C --weights output/clf/model_final.pth \
        [--dataset pbc_marrow_val] [--max-known-lost 0.05] [--score knn] [KEY VALUE ...]

Writes ``<weights stem>.open_set.json`` beside the weights (for a feature score, kNN or
Mahalanobis, also the statistics of the training crops' features, ``<weights stem>.open_set.npz``):
what ``bmc train`` does at the end of training; this command is for a model trained before, or
another dataset, share or score. The count then
calls a cell whose open-set score is below the threshold Other
(:mod:`bmc_detectron.evaluation.open_set`). Exit 2 with a one-line error for bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from bmc_detectron.evaluation.open_set import SCORE_KINDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, help="the classifier's config")
    p.add_argument("--weights", required=True, help="its weights (.pth)")
    p.add_argument(
        "--dataset", nargs="+", help="registered datasets of known-type crops (default: every TEST)"
    )
    p.add_argument("--max-known-lost", type=float, help="share of them flagged (default: config)")
    p.add_argument("--score", choices=SCORE_KINDS, help="default: the config's")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from bmc_detectron.config import ConfigError, build_cfg
    from bmc_detectron.data.checks import DatasetError
    from bmc_detectron.data.datasets import register_builtin_datasets
    from bmc_detectron.engine.classifier_trainer import choose_open_set_threshold
    from bmc_detectron.evaluation.open_set import load_threshold_file

    opts = list(args.opts)
    if args.max_known_lost is not None:
        opts += ["MODEL.BMC.CLASSIFIER.OPEN_SET_MAX_KNOWN_LOST", str(float(args.max_known_lost))]
    if args.score:
        opts += ["MODEL.BMC.CLASSIFIER.OPEN_SET_SCORE", args.score]
    try:
        register_builtin_datasets()
        cfg = build_cfg(args.config_file, opts)
        if cfg.MODEL.BMC.CLASSIFIER.OPEN_SET_MAX_KNOWN_LOST < 0:
            raise ValueError("--max-known-lost must be >= 0")
        path = choose_open_set_threshold(cfg, args.weights, args.dataset)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = load_threshold_file(path)
    print(
        f"open-set threshold {t.threshold:.6g} ({t.score}) on {t.dataset}: "
        f"{100 * t.known_lost:.1f} % of {t.crops} known crops flagged -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
