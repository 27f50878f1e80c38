"""Open-set recognition measured: leave one PBC type out of training, flag it as Other.

    python -m studies.open_set.open_set --output output/open_set [--types Myelo Baso] \
        [--iterations 600] [--threads 1] [--seed 1]
    python -m studies.open_set.open_set --output output/open_set --full-run output/clf_marrow_real

For each left-out type T (default: every PBC type with val crops) a classifier
(``configs/recognition/cell_classifier_R_18_pbc_cpu.yaml``, a short schedule) is trained on
``pbc_marrow_train`` without T, in ``<output>/without_T/`` (resumable: an interrupted run goes on
from its last checkpoint, a finished one, with ``result.json``, is skipped). The open-set threshold
is chosen on the known types' val crops (at most ``--max-known-lost`` flagged,
:func:`bmc_detectron.evaluation.open_set.open_set_metrics`) and the share of T's val crops below
it is the measurement, for each score (energy, max-softmax). A config whose classifier has the
``Other`` class (``cell_classifier_R_18_pbc_other_cpu.yaml``) keeps its other training sets (the
non-cell boxes) and a crop it calls Other is flagged whatever its score, as the count lists it
(:func:`called_other_flagged`). ``--full-run`` evaluates the full
model (trained by ``bmc train`` with the marrow_real config; evaluated with the ``config.yaml``
it was trained with, so its crop size and views, unless ``--full-config``) on PBC val and on the
crops of the composite val fields: top-1, and the share its stored threshold flags, into
``<output>/full/`` (``--full-name``: another folder, e.g. for the same model with a kNN
threshold).
The page: ``python -m studies.open_set.report``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from bmc_detectron.config import build_cfg
from bmc_detectron.data.classes import OTHER
from bmc_detectron.data.datasets import register_builtin_datasets
from bmc_detectron.data.pbc import PBC_MARROW_CLASSES
from bmc_detectron.engine.classifier_trainer import (
    BMCClassifierTrainer,
    crop_outputs,
    dataset_logits,
    load_crop_records,
)
from bmc_detectron.engine.loading import load_model
from bmc_detectron.evaluation.open_set import (
    OPEN_SET_SCORES,
    flagged_share,
    open_set_metrics,
    open_set_score,
    read_threshold,
)
from bmc_detectron.modeling.classifier import classifier_other_index
from bmc_detectron.utils.io import write_json_atomic
from studies.status import load_manifest

MANIFEST = Path(__file__).with_name("study.yaml")
RESULT = "result.json"


def register_split(source: str, name: str, keep: Sequence[int]) -> str:
    """Register ``name``: the images of ``source`` with only the annotations of classes ``keep``
    (images left without one are dropped); same classes as ``source``."""
    keep = set(int(k) for k in keep)

    def load() -> List[dict]:
        out = []
        for rec in DatasetCatalog.get(source):
            anns = [a for a in rec.get("annotations", []) if a["category_id"] in keep]
            if anns:
                out.append({**rec, "annotations": anns})
        return out

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    meta = MetadataCatalog.get(source)
    MetadataCatalog.get(name).set(
        thing_classes=list(meta.thing_classes),
        thing_full_names=list(meta.get("thing_full_names") or meta.thing_classes),
    )
    return name


def leave_out_cfg(config: str, opts: Sequence[str]):
    """``config`` with the PBC types as its classes (+ ``Other`` where it has that class)."""
    names = list(PBC_MARROW_CLASSES)
    if OTHER.abbr in build_cfg(config).MODEL.BMC.CLASSIFIER.CLASS_NAMES:
        names.append(OTHER.abbr)
    return build_cfg(config, ["MODEL.BMC.CLASSIFIER.CLASS_NAMES", json.dumps(names), *opts])


def called_other_flagged(
    known: np.ndarray,
    unseen: np.ndarray,
    known_logits: np.ndarray,
    unseen_logits: np.ndarray,
    other: Optional[int],
    max_known_lost: float,
) -> Tuple[np.ndarray, np.ndarray]:
    """The (known, unseen) scores with every crop whose highest logit is the Other class
    (column ``other``; None: the model has no such class) put below all the others, so that any
    threshold that flags at most the allowed share of the known crops flags it too (ValueError
    when more known crops than that are called Other: no score threshold could keep to it)."""
    if other is None:
        return known, unseen
    floor = float(min(np.min(known), np.min(unseen) if unseen.size else np.inf)) - 1.0
    known, unseen = np.array(known, np.float64), np.array(unseen, np.float64)
    called = known_logits.argmax(1) == other
    if called.sum() > math.floor(max_known_lost * called.size + 1e-9):
        raise ValueError(
            f"{int(called.sum())} of {called.size} known crops are called Other: more than "
            f"{max_known_lost:.0%}, no threshold keeps to it"
        )
    known[called] = floor
    unseen[unseen_logits.argmax(1) == other] = floor
    return known, unseen


def leave_one_out(
    left_out: str,
    output: Path,
    *,
    config: str,
    iterations: int,
    max_known_lost: float,
    threads: int = 1,
    seed: Optional[int] = None,
) -> Dict[str, object]:
    """Train without ``left_out`` (resumable) and measure; writes and returns ``result.json``.
    ``seed``: the run's ``SEED`` (None: the config's), for repeats that measure the runs' noise."""
    run = output / f"without_{left_out}"
    if (run / RESULT).is_file():
        return json.loads((run / RESULT).read_text())
    register_builtin_datasets()
    t = PBC_MARROW_CLASSES.index(left_out)
    known = [k for k in range(len(PBC_MARROW_CLASSES)) if k != t]
    train = register_split("pbc_marrow_train", f"pbc_marrow_train_without_{left_out}", known)
    val = register_split("pbc_marrow_val", f"pbc_marrow_val_without_{left_out}", known)
    unseen = register_split("pbc_marrow_val", f"pbc_marrow_val_only_{left_out}", [t])
    # the config's other training sets (the non-cell boxes of an Other class) stay
    extra = [d for d in build_cfg(config).DATASETS.TRAIN if d != "pbc_marrow_train"]
    opts = ["DATASETS.TRAIN", str((train, *extra)), "DATASETS.TEST", f"('{val}',)"]
    opts += ["SOLVER.MAX_ITER", str(iterations), "SOLVER.CHECKPOINT_PERIOD", "100"]
    opts += ["SOLVER.WARMUP_ITERS", str(min(100, iterations // 5)), "OUTPUT_DIR", str(run)]
    opts += ["MODEL.BMC.CLASSIFIER.OPEN_SET_MAX_KNOWN_LOST", "-1.0", "DATALOADER.NUM_WORKERS", "0"]
    opts += [] if seed is None else ["SEED", str(seed)]
    cfg = leave_out_cfg(config, opts)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    trainer = BMCClassifierTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    train_s = time.perf_counter() - start
    model = load_model(cfg, str(run / "model_final.pth"))
    known_logits, known_labels = dataset_logits(cfg, model, val)
    unseen_logits, _ = dataset_logits(cfg, model, unseen)
    result: Dict[str, object] = {
        "left_out": left_out,
        "config": config,
        "iterations": iterations,
        "seed": int(cfg.SEED),
        "train_s": round(train_s, 1),
        "known_top1": float((known_logits.argmax(1) == known_labels).mean()),
        "scores": {
            kind: open_set_metrics(
                *called_other_flagged(
                    open_set_score(known_logits, kind),
                    open_set_score(unseen_logits, kind),
                    known_logits,
                    unseen_logits,
                    classifier_other_index(cfg),
                    max_known_lost,
                ),
                max_known_lost,
            )
            for kind in OPEN_SET_SCORES
        },
    }
    write_json_atomic(result, run / RESULT, indent=1)
    return result


def evaluate_full(
    run: Path, output: Path, config: str, datasets: Sequence[str] = (), name: str = "full"
) -> Dict[str, object]:
    """The full model's top-1 (and the share its stored open-set threshold flags, whichever its
    score) on the crops of ``datasets`` (default: PBC val and the composite val fields); writes
    ``<output>/<name>/result.json``."""
    register_builtin_datasets()
    weights = run / "model_final.pth"
    cfg = build_cfg(config, ["OUTPUT_DIR", str(run)])
    model = load_model(cfg, str(weights))
    threshold = read_threshold(weights)
    result: Dict[str, object] = {
        "run": str(run),
        "config": config,
        "threshold": None,
        "datasets": {},
    }
    if threshold is not None:
        result["threshold"] = {"score": threshold.score, "threshold": threshold.threshold}
    for dataset in datasets or ("pbc_marrow_val", "marrow_real_val"):
        records = load_crop_records(cfg, [dataset])
        logits, features = crop_outputs(cfg, model, records)
        labels = np.asarray([r["label"] for r in records])
        entry = {"crops": int(len(labels)), "top1": float((logits.argmax(1) == labels).mean())}
        if threshold is not None:
            entry["other"] = flagged_share(threshold.scores(logits, features), threshold.threshold)
        result["datasets"][dataset] = entry
    write_json_atomic(result, output / name / RESULT, indent=1)
    return result


def full_config(run: Path) -> str:
    """The config a full run is evaluated with: the one it was trained with (``config.yaml``
    beside its weights: crop size, views), else the manifest's ``full_config``."""
    own = run / "config.yaml"
    return str(own) if own.is_file() else str(load_manifest(MANIFEST)["full_config"])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    manifest = load_manifest(MANIFEST)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", required=True, help="runs folder (e.g. output/open_set)")
    p.add_argument("--types", nargs="+", default=list(manifest["types"]), help="types to leave out")
    p.add_argument("--iterations", type=int, default=int(manifest["iterations"]))
    p.add_argument("--max-known-lost", type=float, default=float(manifest["max_known_lost"]))
    p.add_argument("--config", default=str(manifest["config"]), help="leave-one-out config")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument(
        "--seed", type=int, help="the runs' SEED (default: the config's); a repeat's own --output"
    )
    p.add_argument("--full-run", help="the full model's OUTPUT_DIR: evaluate it instead")
    p.add_argument(
        "--full-config",
        help="its config (default: the run's own config.yaml, else the manifest's full_config)",
    )
    p.add_argument("--full-name", default="full", help="its results folder under --output")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    output = Path(args.output)
    if args.full_run:
        run = Path(args.full_run)
        config = args.full_config or full_config(run)
        result = evaluate_full(run, output, config, name=args.full_name)
        for name, entry in result["datasets"].items():
            print(f"{name}: top-1 {100 * entry['top1']:.1f} % of {entry['crops']} crops")
        return 0
    unknown = [t for t in args.types if t not in PBC_MARROW_CLASSES]
    if unknown:
        print(f"error: unknown type(s) {unknown}: PBC types are {list(PBC_MARROW_CLASSES)}")
        return 2
    for left_out in args.types:
        result = leave_one_out(
            left_out,
            output,
            config=args.config,
            iterations=args.iterations,
            max_known_lost=args.max_known_lost,
            threads=args.threads,
            seed=args.seed,
        )
        energy = result["scores"]["energy"]
        print(
            f"without {left_out}: {100 * np.float64(energy['unseen_flagged']):.1f} % of its val "
            f"crops flagged Other at {100 * energy['known_lost']:.1f} % known lost (energy)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
