"""Open set on crops that are not white cells: what a detector's false boxes in marrow hold.

    OMP_NUM_THREADS=1 python -m studies.open_set.non_cells --runs output/open_set \
        [--types Lym Mono] [--test-flips 8] [--per-kind 300]
    OMP_NUM_THREADS=1 python -m studies.open_set.non_cells \
        --full-run output/marrow_real/classifier --output output/open_set

The boxes come from :mod:`bmc_detectron.data.non_cells` (the same kinds the classifier with an
Other class trains on, here from the ``val`` images), plus blurred cells. The leave-one-type-out
measurement asks a model to call a cell type it never saw "Other". Real
marrow's other unknowns are not cells of a type at all: red cells and platelets a detector boxes,
empty background between cells, a box on part of a cell, a cell too blurred to name. This module
cuts such crops from real images, never from generated ones, and measures the share each open-set
score flags at the threshold the leave-one-out measurement uses (at most ``max_known_lost`` of
the known val crops flagged):

- ``red cell (BCCD)``, ``platelet (BCCD)``: BCCD ``val`` boxes of those classes (another
  microscope and stain than the training cells': easier to flag for that alone);
- ``background (BCCD)``: BCCD ``val`` windows of a white-cell box's size touching no white cell;
- ``background (PBC)``: a PBC ``val`` window (red cells, platelets, plasma) of 0.45 times the
  image's white-cell box, touching that box nowhere: the training images' own stain;
- ``cell fragment``: one quarter (a corner quadrant) of a PBC ``val`` white cell's box;
- ``blurred cell``: a PBC ``val`` white-cell crop under a Gaussian blur of sigma = crop / 16.

The crops are cut once per crop size into ``<runs>/crops_non_cells_<S>.npz``. For each finished
leave-one-out run the non-cell crops go through its model (``--test-flips`` views), and every
score is measured against that run's known val crops, cached by ``features.py`` (run it first)
-> ``<run>/non_cells[_flips8].json``. ``--full-run`` measures the product classifier with its own
stored threshold and statistics (``<output>/<--full-name>/non_cells.json``). The page:
``python -m studies.open_set.report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils

from bmc_detectron.config import build_cfg
from bmc_detectron.config_checks import CLASSIFIER_TEST_FLIPS
from bmc_detectron.data.classes import OTHER
from bmc_detectron.data.crops import crop_boxes
from bmc_detectron.data.datasets import BCCD_CLASSES, register_builtin_datasets
from bmc_detectron.data.non_cells import (
    PBC_BACKGROUND_SIDE,
    background_box,
    fragment_box,
)
from bmc_detectron.data.pbc import PBC_MARROW_CLASSES
from bmc_detectron.engine.loading import load_model
from bmc_detectron.evaluation.feature_scores import FEATURE_SCORES, fit_statistics
from bmc_detectron.evaluation.open_set import (
    OPEN_SET_SCORES,
    open_set_metrics,
    open_set_score,
    read_threshold,
)
from bmc_detectron.structures.boxes import record_boxes
from bmc_detectron.utils.io import write_json_atomic
from studies.open_set.features import forward_crops, result_names, run_features
from studies.open_set.open_set import full_config, leave_out_cfg
from studies.status import load_manifest

MANIFEST = Path(__file__).with_name("study.yaml")
KINDS = (
    "red cell (BCCD)",
    "platelet (BCCD)",
    "background (BCCD)",
    "background (PBC)",
    "cell fragment",
    "blurred cell",
)
RESULT = "non_cells.json"


def result_name(test_flips: int) -> str:
    """The results file of a run measured with ``test_flips`` views."""
    return RESULT if test_flips == 1 else f"non_cells_flips{test_flips}.json"


def _sample(items: List, n: int, rng: np.random.Generator) -> List:
    if len(items) <= n:
        return items
    return [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]


def _cut(jobs: List[Tuple[str, np.ndarray]], fmt: str, size: int, margin: float) -> np.ndarray:
    """(N, size, size, 3) crops of (file, box) pairs, each image read once."""
    out = np.empty((len(jobs), size, size, 3), dtype=np.uint8)
    by_file: Dict[str, List[int]] = {}
    for i, (file_name, _) in enumerate(jobs):
        by_file.setdefault(file_name, []).append(i)
    for file_name, idx in by_file.items():
        image = utils.read_image(file_name, format=fmt)
        out[idx] = crop_boxes(image, np.stack([jobs[i][1] for i in idx]), size, margin)
    return out


def _kind_jobs(per_kind: int, margin: float, rng: np.random.Generator) -> Dict[str, list]:
    """(file, box) pairs of each kind (the blurred cells are whole cells, blurred after)."""
    register_builtin_datasets()
    bccd, pbc = DatasetCatalog.get("bccd_val"), DatasetCatalog.get("pbc_marrow_val")
    rbc, plt, wbc = (BCCD_CLASSES.index(c) for c in ("RBC", "Platelets", "WBC"))
    jobs: Dict[str, list] = {k: [] for k in KINDS}
    for rec in bccd:
        jobs["red cell (BCCD)"] += [(rec["file_name"], b) for b in record_boxes(rec, rbc)[0]]
        jobs["platelet (BCCD)"] += [(rec["file_name"], b) for b in record_boxes(rec, plt)[0]]
    sides = [max(b[2] - b[0], b[3] - b[1]) for r in bccd for b in record_boxes(r, wbc)[0]]
    side = float(np.median(sides))
    for rec in bccd:
        box = background_box(
            rec["width"], rec["height"], record_boxes(rec, wbc)[0], side, margin, rng
        )
        if box is not None:
            jobs["background (BCCD)"].append((rec["file_name"], box))
    for rec in pbc:
        cell = record_boxes(rec)[0]
        side = PBC_BACKGROUND_SIDE * float(np.max(cell[:, 2:] - cell[:, :2]))
        box = background_box(rec["width"], rec["height"], cell, side, margin, rng)
        if box is not None:
            jobs["background (PBC)"].append((rec["file_name"], box))
    cells = [(r["file_name"], b) for r in pbc for b in record_boxes(r)[0]]
    jobs["cell fragment"] = [(f, fragment_box(b, int(rng.integers(4)))) for f, b in cells]
    jobs["blurred cell"] = list(cells)
    return {k: _sample(v, per_kind, rng) for k, v in jobs.items()}


def non_cell_crops(
    runs: Path, size: int, margin: float, fmt: str, per_kind: int = 300, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3, size, size) uint8 non-cell crops in ``fmt`` and (N,) kind names, cut once and cached
    in ``<runs>/crops_non_cells_<size>.npz``."""
    path = runs / f"crops_non_cells_{size}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["crops"], data["kinds"]
    rng = np.random.default_rng(seed)
    crops, kinds = [], []
    for kind, jobs in _kind_jobs(per_kind, margin, rng).items():
        cut = _cut(jobs, fmt, size, margin)
        if kind == "blurred cell":
            cut = np.stack([cv2.GaussianBlur(c, (0, 0), size / 16.0) for c in cut])
        crops.append(cut)
        kinds += [kind] * len(cut)
    out = np.ascontiguousarray(np.concatenate(crops).transpose(0, 3, 1, 2))
    runs.mkdir(parents=True, exist_ok=True)
    np.savez(path, crops=out, kinds=np.asarray(kinds))
    return out, np.asarray(kinds)


def _per_kind(
    kinds: np.ndarray, flagged: Dict[str, np.ndarray], predicted: np.ndarray, names: Sequence[str]
) -> Dict[str, object]:
    out = {}
    for kind in KINDS:
        mask = kinds == kind
        counts = np.bincount(predicted[mask], minlength=len(names))
        out[kind] = {
            "crops": int(mask.sum()),
            "flagged": {s: float(v[mask].mean()) for s, v in flagged.items() if mask.any()},
            "predicted_as": {names[i]: int(c) for i, c in enumerate(counts) if c},
        }
    return out


def measure_run(
    cache: Dict[str, np.ndarray],
    logits: np.ndarray,
    features: np.ndarray,
    kinds: np.ndarray,
    max_known_lost: float,
    knn_k: int,
) -> Dict[str, object]:
    """Every score's threshold on one leave-one-out run's known val crops (``cache``:
    :func:`~studies.open_set.features.run_features`) applied to the non-cell crops' (N, K)
    ``logits`` and (N, D) ``features``; per kind: the share flagged by each score and the known
    type the model calls them."""
    known = cache["val_labels"] != int(cache["left_out"])
    flagged, auroc = {}, {}
    for score in OPEN_SET_SCORES + FEATURE_SCORES:
        if score in FEATURE_SCORES:
            stats = fit_statistics(
                score, cache["train_features"], cache["train_labels"], knn_k=knn_k
            )
            known_s, cells_s = stats.scores(cache["val_features"][known]), stats.scores(features)
        else:
            known_s = open_set_score(cache["val_logits"][known], score)
            cells_s = open_set_score(logits, score)
        metrics = open_set_metrics(known_s, cells_s, max_known_lost)
        flagged[score] = cells_s < metrics["threshold"]
        auroc[score] = metrics["auroc"]
    predicted = logits.argmax(1)
    return {
        "left_out": PBC_MARROW_CLASSES[int(cache["left_out"])],
        "auroc_all": auroc,
        "kinds": _per_kind(kinds, flagged, predicted, PBC_MARROW_CLASSES),
    }


def other_outcomes(
    flagged: np.ndarray, logits: np.ndarray, names: Sequence[str], score: str
) -> Dict[str, np.ndarray]:
    """(N,) bools of each way a crop is Other: ``flagged`` by the open-set ``score``; with an
    explicit Other class in ``names``, also called it by (N, K) ``logits`` and either of the two
    (what the count lists as Other)."""
    out = {score: flagged}
    if OTHER.abbr in names:
        called = logits.argmax(1) == list(names).index(OTHER.abbr)
        out |= {"Other class": called, "Other": flagged | called}
    return out


def measure_full(run: Path, output: Path, per_kind: int, name: str = "full") -> Dict[str, object]:
    """The product classifier of ``run`` with its stored threshold (whichever score) on the
    non-cell crops; writes ``<output>/<name>/non_cells.json``."""
    register_builtin_datasets()
    weights = run / "model_final.pth"
    cfg = build_cfg(full_config(run), ["OUTPUT_DIR", str(run)])
    threshold = read_threshold(weights)
    if threshold is None:
        raise SystemExit(f"{weights}: no open-set threshold stored beside it")
    clf = cfg.MODEL.BMC.CLASSIFIER
    crops, kinds = non_cell_crops(
        output, clf.CROP_SIZE, clf.CROP_MARGIN, cfg.INPUT.FORMAT, per_kind
    )
    logits, features = forward_crops(load_model(cfg, str(weights)), crops)
    flagged = threshold.scores(logits, features) < threshold.threshold
    names = list(cfg.MODEL.BMC.CLASSIFIER.CLASS_NAMES) or list(PBC_MARROW_CLASSES)
    shares = other_outcomes(flagged, logits, names, threshold.score)
    result = {
        "run": str(run),
        "score": threshold.score,
        "test_flips": int(clf.TEST_FLIPS),
        "kinds": _per_kind(kinds, shares, logits.argmax(1), names),
    }
    write_json_atomic(result, output / name / RESULT, indent=1)
    return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    manifest = load_manifest(MANIFEST)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=str(manifest["runs"]), help="the driver's --output folder")
    p.add_argument("--types", nargs="+", default=list(manifest["types"]))
    p.add_argument("--test-flips", type=int, choices=CLASSIFIER_TEST_FLIPS, default=1)
    p.add_argument("--per-kind", type=int, default=300, help="at most this many crops per kind")
    p.add_argument("--knn-k", type=int, default=int(manifest["features"]["knn_k"]))
    p.add_argument("--max-known-lost", type=float, default=float(manifest["max_known_lost"]))
    p.add_argument(
        "--max-train-crops", type=int, default=int(manifest["features"]["max_train_crops"])
    )
    p.add_argument("--config", default=str(manifest["config"]), help="leave-one-out config")
    p.add_argument("--full-run", help="the product classifier's OUTPUT_DIR: measure it instead")
    p.add_argument("--output", help="with --full-run: the runs folder of its results")
    p.add_argument("--full-name", default="full", help="its results folder under --output")
    return p.parse_args(argv)


def _print(name: str, kinds: Dict[str, dict]) -> None:
    cells = ", ".join(
        f"{kind} {100 * max(v['flagged'].values()):.0f} %"
        for kind, v in kinds.items()
        if v["flagged"]
    )
    print(f"{name}: flagged (best score) {cells}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.full_run:
        output = Path(args.output or args.runs)
        result = measure_full(Path(args.full_run), output, args.per_kind, args.full_name)
        _print(f"full ({result['score']})", result["kinds"])
        return 0
    runs = Path(args.runs)
    for left_out in args.types:
        run = runs / f"without_{left_out}"
        if not (run / result_names(args.test_flips)[0]).is_file():
            print(f"without {left_out}: no feature cache yet (studies.open_set.features), skipped")
            continue
        cache = run_features(
            run, runs, left_out, args.config, args.max_train_crops, test_flips=args.test_flips
        )
        flips = ["MODEL.BMC.CLASSIFIER.TEST_FLIPS", str(args.test_flips), "OUTPUT_DIR", str(run)]
        cfg = leave_out_cfg(args.config, flips)
        clf = cfg.MODEL.BMC.CLASSIFIER
        crops, kinds = non_cell_crops(
            runs, clf.CROP_SIZE, clf.CROP_MARGIN, cfg.INPUT.FORMAT, args.per_kind
        )
        logits, features = forward_crops(load_model(cfg, str(run / "model_final.pth")), crops)
        result = measure_run(cache, logits, features, kinds, args.max_known_lost, args.knn_k)
        result["test_flips"] = args.test_flips
        write_json_atomic(result, run / result_name(args.test_flips), indent=1)
        _print(f"without {left_out}", result["kinds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
