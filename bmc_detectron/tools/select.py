"""Choose the unlabelled images a hematologist should label next; write pre-annotations.

    bmc select --detector-config C --detector-weights W --pool 'unlabelled/*.png' \\
        --budget 20 --strategy entropy [--aggregate max] [--diversity kcenter] \\
        [--classifier-config C2 --classifier-weights W2] --output DIR

Writes ``DIR/ranking.csv`` and ``ranking.json`` (every pool image, score, rank, chosen or not),
``DIR/label_studio_tasks.json`` (the chosen images with the model's boxes as predictions) and
``DIR/labelme/<image>.json``. Analyses are cached in ``--cache-dir`` (default ``DIR/cache``) by
image SHA-256 and model fingerprint. Exit status: 0 done, 1 done but some images were skipped,
2 bad arguments or no readable image.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from bmc_detectron.active.acquire import PoolModel, analyse_pool
from bmc_detectron.active.diversity import DIVERSITY
from bmc_detectron.active.formats import Labelled, label_studio_task, labelme_file
from bmc_detectron.active.ranking import RankSettings, kept, rank_pool
from bmc_detectron.active.scores import AGGREGATES, STRATEGIES
from bmc_detectron.config import ConfigError
from bmc_detectron.pipeline.detector import Detector
from bmc_detectron.utils.io import atomic_write_text, expand_inputs, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments (the old spellings --config-file, --weights, --opts and
    --score-threshold are still read, not shown)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detector-config", help="detector config (yaml; required)")
    p.add_argument("--detector-weights", help="detector weights (.pth / .pkl; required)")
    p.add_argument("--pool", nargs="+", required=True, help="images, folders or glob patterns")
    p.add_argument("--budget", type=int, required=True, help="number of images to choose")
    p.add_argument("--strategy", choices=STRATEGIES, default="entropy")
    p.add_argument("--aggregate", choices=AGGREGATES, default="max", help="per-image pooling")
    p.add_argument("--diversity", choices=DIVERSITY, default="none")
    p.add_argument("--candidates", type=float, default=3.0, help="kcenter: budget multiple")
    p.add_argument("--balance-weight", type=float, default=1.0, help="class_balance weight")
    p.add_argument(
        "--score-floor",
        type=float,
        default=0.05,
        help="boxes kept from this score: scored for uncertainty and pre-annotated",
    )
    p.add_argument("--feature-level", help="backbone level pooled for kcenter (default: last)")
    p.add_argument("--classifier-config", help="cell classifier config (yaml)")
    p.add_argument("--classifier-weights", help="cell classifier weights")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--cache-dir", help="analysis cache (default: OUTPUT/cache)")
    p.add_argument("--image-url-prefix", default="", help="prefix of Label Studio image refs")
    p.add_argument("--model-version", help="Label Studio model_version (default: weights name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random strategy")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--detector-opts", nargs="+", default=[], help="detector config KEY VALUE ...")
    hidden = dict(default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--config-file", dest="detector_config", **hidden)
    p.add_argument("--weights", dest="detector_weights", **hidden)
    p.add_argument("--opts", dest="detector_opts", nargs="+", **hidden)
    p.add_argument("--score-threshold", dest="score_floor", type=float, **hidden)
    return p


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The arguments, the detector's config and weights required."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.detector_config and args.detector_weights):
        parser.error("the following arguments are required: --detector-config, --detector-weights")
    return args


def build_model(args: argparse.Namespace) -> PoolModel:
    """Detector (and classifier) from the command's configs and weights."""
    detector = Detector.from_config(args.detector_config, args.detector_weights, args.detector_opts)
    classifier = None
    if bool(args.classifier_config) != bool(args.classifier_weights):
        raise ValueError("--classifier-config and --classifier-weights go together")
    if args.classifier_config:
        from bmc_detectron.pipeline.recognition import CellClassifier

        classifier = CellClassifier.from_config(args.classifier_config, args.classifier_weights)
    return PoolModel(detector, classifier, args.feature_level)


def write_ranking(rows: List[Dict[str, object]], output: Path, settings: Dict) -> None:
    """``ranking.csv`` and ``ranking.json``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(output / "ranking.csv", buf.getvalue())
    write_json_atomic({"settings": settings, "ranking": rows}, output / "ranking.json", indent=2)


def labelled(path: Path, entry: Dict[str, np.ndarray], names: List[str], thr: float) -> Labelled:
    """The kept boxes of an analysed image, labelled by their best class."""
    mask = kept(entry, thr)
    height, width = (int(v) for v in entry["size"])
    probs = entry["class_scores"][mask]
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    boxes = [
        (names[int(c)], tuple(float(v) for v in box), float(s))
        for c, box, s in zip(best, entry["boxes"][mask], entry["scores"][mask])
    ]
    return Labelled(path.name, width, height, boxes, str(path))


def write_annotations(chosen: List[Dict], results: Dict, model: PoolModel, args) -> None:
    """Label Studio tasks and LabelMe files of the chosen images."""
    output, tasks = Path(args.output), []
    version = args.model_version or Path(args.detector_weights).stem
    for row in chosen:
        path = Path(row["image"])
        item = labelled(path, results[path], model.class_names, args.score_floor)
        ref = f"{args.image_url_prefix}{path.name}" if args.image_url_prefix else str(path)
        tasks.append(label_studio_task(item, ref, version, row["score"]))
        rel = os.path.relpath(path.resolve(), (output / "labelme").resolve())
        doc = labelme_file(item, rel)
        write_json_atomic(doc, output / "labelme" / f"{path.stem}.json", indent=2)
    write_json_atomic(tasks, output / "label_studio_tasks.json", indent=2)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    output = Path(args.output)
    try:
        settings = RankSettings(args.strategy, args.aggregate, args.diversity, args.budget)
        settings.score_threshold, settings.seed = args.score_floor, args.seed
        settings.candidates, settings.balance_weight = args.candidates, args.balance_weight
        paths = expand_inputs(args.pool)
        model = build_model(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cache = Path(args.cache_dir) if args.cache_dir else output / "cache"
    with_views = args.strategy == "consistency"
    results, skipped = analyse_pool(model, paths, cache, with_views, not args.no_progress)
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if not results:
        print("error: no readable image in the pool", file=sys.stderr)
        return 2
    if len(results) <= args.budget:
        print(f"the pool has {len(results)} readable image(s), budget {args.budget}: all chosen")
    keys = [str(p) for p in results]
    rows = rank_pool(keys, list(results.values()), settings)
    record = dict(vars(settings), fingerprint=model.fingerprint(), classes=model.class_names)
    record["skipped"] = [{"image": str(p), "reason": why} for p, why in skipped]
    write_ranking(rows, output, record)
    chosen = sorted((r for r in rows if r["selected"]), key=lambda r: r["pick"])
    write_annotations(chosen, results, model, args)
    print(f"chose {len(chosen)} of {len(results)} image(s) by {args.strategy}: {output}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
