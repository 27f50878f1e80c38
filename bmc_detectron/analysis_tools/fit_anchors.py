"""Fit the anchor sizes (per FPN level) and aspect ratios of a config to a dataset's gt boxes.

    python -m bmc_detectron.analysis_tools.fit_anchors --config-file C --dataset D \
        [--out DIR] [--threshold 0.5] [KEY VALUE ...]

The gt boxes are taken to the training resolution (the config's resize, scale jitter and
quarter turns; no image is read) and the anchors are fitted to maximise the mean best-anchor IoU
of the gt shapes (:mod:`bmc_detectron.analysis.anchor_fit`). Prints the current and the fitted
anchors' mean best IoU and recall at ``--threshold``, and a config snippet; with ``--out``, writes
``anchor_fit.json`` and ``anchor_fit.yaml`` (the snippet) there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from bmc_detectron.analysis.anchor_fit import AnchorFit, fit_config_anchors
from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.reporting.provenance import shell_join
from bmc_detectron.reporting.tables import markdown_table
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, help="model config (yaml)")
    p.add_argument("--dataset", required=True, help="registered dataset name (e.g. bccd_train)")
    p.add_argument("--out", default=None, help="folder for anchor_fit.json / anchor_fit.yaml")
    p.add_argument("--threshold", type=float, default=0.5, help="IoU of the recall (0.5)")
    p.add_argument("--max-evals", type=int, default=4000, help="refinement evaluations")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def report(fit: AnchorFit, dataset: str) -> str:
    """The printed summary: the two anchor sets' numbers and the config snippet."""
    t = fit.quality_after.threshold
    rows = [
        [
            name,
            f"{q.mean_iou:.3f}",
            f"{q.recall:.3f}",
            str([list(lv) for lv in a.sizes]),
            str(list(a.ratios)),
        ]
        for name, a, q in (
            ("current", fit.before, fit.quality_before),
            ("fitted", fit.after, fit.quality_after),
        )
    ]
    head = ["anchors", "mean best IoU", f"recall @ IoU {t:g}", "sizes", "aspect ratios"]
    per_level = ", ".join(f"{n:g}" for n in fit.gts_per_level)
    return "\n".join(
        [
            f"{dataset}: gts per level (config bands) {per_level}; {fit.shapes} distinct shapes",
            markdown_table(head, rows),
            "",
            fit.after.yaml(),
        ]
    )


def class_opts(dataset: str) -> List[str]:
    """``MODEL.RETINANET.NUM_CLASSES`` set to the dataset's class count (the anchors do not depend
    on it; the record checks compare it with the dataset), or nothing for an unknown dataset."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if dataset not in DatasetCatalog.list():
        return []
    names = MetadataCatalog.get(dataset).get("thing_classes")
    return ["MODEL.RETINANET.NUM_CLASSES", str(len(names))] if names else []


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from bmc_detectron.analysis.inference import dataset_records
    from bmc_detectron.data.datasets import register_builtin_datasets

    register_builtin_datasets()
    try:
        cfg = build_cfg(args.config_file, [*class_opts(args.dataset), *args.opts])
        fit = fit_config_anchors(
            cfg, dataset_records(cfg, args.dataset), args.threshold, args.max_evals
        )
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(fit, args.dataset))
    if args.out:
        out = Path(args.out)
        payload = fit.as_dict()
        payload["dataset"], payload["config"] = args.dataset, args.config_file
        command = "python -m bmc_detectron.analysis_tools.fit_anchors " + shell_join(
            sys.argv[1:] if argv is None else list(argv)
        )
        payload["command"] = command
        write_json_atomic(payload, out / "anchor_fit.json", indent=1)
        atomic_write_text(out / "anchor_fit.yaml", f"# {command}\n" + fit.after.yaml())
        print(f"wrote {out / 'anchor_fit.json'}, {out / 'anchor_fit.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
