"""Feature-space open-set scores measured with the leave-one-type-out models (no retraining).

    OMP_NUM_THREADS=1 python -m studies.open_set.features --runs output/open_set \
        [--types Lym Mono] [--max-train-crops 4000] [--knn-k 10] [--test-flips 8]

For each finished run ``<runs>/without_<T>/`` (``model_final.pth``, trained by
``studies/open_set/open_set.py``) the model's logits and pooled penultimate features
(:meth:`~bmc_detectron.modeling.classifier.BMCCellClassifier.predict_logits_and_features`) are
computed once for every crop of ``pbc_marrow_val`` and for a bounded sample of its training crops
(``pbc_marrow_train`` without T) and cached in ``<run>/features.npz``; the crops themselves are
cut once for all runs (``<runs>/crops_<dataset>.npz``). Then every score of
energy, max-softmax, Mahalanobis and kNN is measured as the driver measures
energy (threshold on the known val crops, at most ``max_known_lost`` flagged; the share of T's val
crops below it; AUROC) -> ``<run>/feature_scores.json``. A second call only re-measures (seconds).
``--test-flips 8`` measures the same models with each crop's 8 flips and quarter turns averaged
(``MODEL.BMC.CLASSIFIER.TEST_FLIPS``) into ``features_flips8.npz`` / ``feature_scores_flips8.json``.
The page: ``python -m studies.open_set.report``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from bmc_detectron.config_checks import CLASSIFIER_TEST_FLIPS
from bmc_detectron.data.crop_mapper import CellCropMapper
from bmc_detectron.data.datasets import register_builtin_datasets
from bmc_detectron.data.pbc import PBC_MARROW_CLASSES
from bmc_detectron.engine.classifier_trainer import load_crop_records
from bmc_detectron.engine.loading import load_model
from bmc_detectron.evaluation.feature_scores import FEATURE_SCORES, fit_statistics
from bmc_detectron.evaluation.open_set import OPEN_SET_SCORES, open_set_metrics, open_set_score
from bmc_detectron.modeling.classifier import classifier_other_index
from bmc_detectron.utils.io import write_json_atomic
from studies.open_set.neighbours import unseen_predicted_as
from studies.open_set.open_set import called_other_flagged, leave_out_cfg
from studies.status import load_manifest

MANIFEST = Path(__file__).with_name("study.yaml")
FEATURES = "features.npz"
SCORES = "feature_scores.json"
TRAIN, VAL = "pbc_marrow_train", "pbc_marrow_val"
#: the k of the kNN score's sensitivity table
KNN_KS = (1, 5, 10, 20, 50, 200)


def result_names(test_flips: int) -> Tuple[str, str]:
    """The cache and scores file names of a run measured with ``test_flips`` views."""
    if test_flips == 1:
        return FEATURES, SCORES
    return f"features_flips{test_flips}.npz", f"feature_scores_flips{test_flips}.json"


def dataset_crops(cfg, runs: Path, dataset: str) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3, S, S) uint8 test crops (exact boxes) and (N,) labels of ``dataset``, cut once and
    cached in ``<runs>/crops_<dataset>.npz``."""
    path = runs / f"crops_{dataset}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["crops"], data["labels"]
    records = load_crop_records(cfg, [dataset])
    mapper = CellCropMapper(cfg, False)
    crops = np.stack([mapper(r)["image"].numpy() for r in records])
    labels = np.asarray([r["label"] for r in records], dtype=np.int64)
    np.savez(path, crops=crops, labels=labels)
    return crops, labels


def forward_crops(model, crops: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, K) float32 logits and (N, D) pooled features of (N, 3, S, S) uint8 crops."""
    logits, features = model.predict_logits_and_features(torch.from_numpy(crops))
    return logits.numpy().astype(np.float32), features.numpy().astype(np.float32)


def run_features(
    run: Path,
    runs: Path,
    left_out: str,
    config: str,
    max_train_crops: int,
    seed: int = 0,
    test_flips: int = 1,
) -> Dict[str, np.ndarray]:
    """The cached logits / features of one leave-one-out model (computed when missing), each
    crop's ``test_flips`` views averaged."""
    path = run / result_names(test_flips)[0]
    if path.is_file():
        with np.load(path) as data:
            return dict(data)
    register_builtin_datasets()
    flips = ["MODEL.BMC.CLASSIFIER.TEST_FLIPS", str(test_flips)]
    cfg = leave_out_cfg(config, ["OUTPUT_DIR", str(run), *flips])
    t = PBC_MARROW_CLASSES.index(left_out)
    train_crops, train_labels = dataset_crops(cfg, runs, TRAIN)
    val_crops, val_labels = dataset_crops(cfg, runs, VAL)
    known = np.flatnonzero(train_labels != t)
    if known.size > max_train_crops:
        known = np.sort(np.random.default_rng(seed).choice(known, max_train_crops, replace=False))
    model = load_model(cfg, str(run / "model_final.pth"))
    start = time.perf_counter()
    train_logits, train_features = forward_crops(model, train_crops[known])
    val_logits, val_features = forward_crops(model, val_crops)
    out = {
        "train_logits": train_logits,
        "train_features": train_features,
        "train_labels": train_labels[known],
        "val_logits": val_logits,
        "val_features": val_features,
        "val_labels": val_labels,
        "left_out": np.asarray(t),
        # the model's Other class id, -1 when it has none (an npz holds no None)
        "other_column": np.asarray(-1 if (i := classifier_other_index(cfg)) is None else i),
        "seconds": np.asarray(time.perf_counter() - start),
    }
    np.savez(path, **out)
    return out


def measure(
    cache: Dict[str, np.ndarray], max_known_lost: float, knn_k: int
) -> Dict[str, Dict[str, object]]:
    """``score -> open_set_metrics`` of every score, from one run's cached arrays."""
    results = {}
    for kind in OPEN_SET_SCORES + FEATURE_SCORES:
        if kind in FEATURE_SCORES:
            stats = fit_statistics(
                kind, cache["train_features"], cache["train_labels"], knn_k=knn_k
            )
            scores = stats.scores(cache["val_features"])
        else:
            scores = open_set_score(cache["val_logits"], kind)
        results[kind] = _metrics(cache, scores, max_known_lost)
    return results


def _metrics(cache: Dict[str, np.ndarray], scores: np.ndarray, max_known_lost: float) -> Dict:
    """``open_set_metrics`` of the val crops' ``scores``, a crop the model calls Other flagged
    (a cache of a model with that class: ``other_column`` >= 0)."""
    is_known = cache["val_labels"] != int(cache["left_out"])
    logits = cache["val_logits"]
    other = int(cache.get("other_column", -1))
    other = None if other < 0 else other
    known, unseen = called_other_flagged(
        scores[is_known],
        scores[~is_known],
        logits[is_known],
        logits[~is_known],
        other,
        max_known_lost,
    )
    return open_set_metrics(known, unseen, max_known_lost)


def knn_by_k(
    cache: Dict[str, np.ndarray], max_known_lost: float, ks: Sequence[int] = KNN_KS
) -> Dict[str, Dict[str, object]]:
    """The kNN score's metrics for other k (shown on the page, never chosen on it)."""
    out = {}
    for k in ks:
        scores = fit_statistics("knn", cache["train_features"], None, knn_k=k).scores(
            cache["val_features"]
        )
        out[str(k)] = _metrics(cache, scores, max_known_lost)
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    manifest = load_manifest(MANIFEST)
    features = manifest["features"]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=str(manifest["runs"]), help="the driver's --output folder")
    p.add_argument("--types", nargs="+", default=list(manifest["types"]))
    p.add_argument("--max-train-crops", type=int, default=int(features["max_train_crops"]))
    p.add_argument("--knn-k", type=int, default=int(features["knn_k"]))
    p.add_argument("--max-known-lost", type=float, default=float(manifest["max_known_lost"]))
    p.add_argument("--config", default=str(manifest["config"]), help="leave-one-out config")
    p.add_argument(
        "--test-flips",
        type=int,
        choices=CLASSIFIER_TEST_FLIPS,
        default=1,
        help="views of each crop averaged (MODEL.BMC.CLASSIFIER.TEST_FLIPS)",
    )
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    runs = Path(args.runs)
    torch.set_num_threads(1)
    for left_out in args.types:
        run = runs / f"without_{left_out}"
        if not (run / "model_final.pth").is_file():
            print(f"without {left_out}: no model_final.pth yet, skipped")
            continue
        cache = run_features(
            run, runs, left_out, args.config, args.max_train_crops, test_flips=args.test_flips
        )
        results = measure(cache, args.max_known_lost, args.knn_k)
        write_json_atomic(
            {
                "left_out": left_out,
                "knn_k": args.knn_k,
                "test_flips": args.test_flips,
                "train_crops": int(cache["train_labels"].size),
                "scores": results,
                "knn_by_k": knn_by_k(cache, args.max_known_lost),
                "unseen_predicted_as": unseen_predicted_as(
                    cache["val_logits"],
                    cache["val_labels"],
                    cache["train_labels"],
                    int(cache["left_out"]),
                ),
            },
            run / result_names(args.test_flips)[1],
            indent=1,
        )
        line = ", ".join(
            f"{kind} {100 * r['unseen_flagged']:.1f} % (AUROC {r['auroc']:.2f})"
            for kind, r in results.items()
        )
        print(f"without {left_out} ({float(cache['seconds']):.0f} s of features): {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
