"""Detectors of crowded real cells (issue 24, section 2): the class-agnostic full model and
detectron2's RetinaNet trained on the real-cell composites, measured where cells crowd.

    python -m studies.real_marrow.detectors --runs output/marrow_real \\
        [--names retinanet_R_18_full_agnostic_marrow_real_cpu ...] [--nms 0.4 0.5 0.6] \\
        [--choose-on marrow_real_val] [--out docs/results/real_marrow]

Each run folder ``RUNS/NAME`` (``train_net.py --config-file configs/cpu/agnostic/NAME.yaml
OUTPUT_DIR RUNS/NAME``; ``studies/real_marrow/detectors.sh``) holds ``config.yaml`` and
``model_final.pth``; the measurements are kept in ``real_marrow_eval.json`` beside them (for
those weights). Every run is counted through the product's counter (score threshold 0.05 so
that AP sees every detection; the count itself keeps the cells scoring ``--count-threshold``) at
each NMS IoU threshold of ``--nms`` (the detector's own and the counter's), on

- ``marrow_real_val``: composite fields of PBC ``val`` cells (never seen in training): AP, AP50,
  recall / precision at the count threshold, recall of isolated / touching / overlapping cells,
  touching pairs counted as two (:mod:`bmc_detectron.evaluation.crowding`);
- ``bccd_test``, its ``WBC`` boxes only, at BCCD's pixel size (the red cells and platelets are
  not nucleated cells: the composites do not mark them): a second, real check.

The NMS threshold is chosen per model on ``marrow_real_val`` (:func:`choose`), never on a test set.
Writes ``RESULTS_detectors.md`` and ``detectors.json`` into ``--out``; a named run whose weights
are not on this machine keeps the rows of the earlier ``detectors.json``, marked with their date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2

from bmc_detectron.counting import CounterSpec, build_counter, scale_setup
from bmc_detectron.data.datasets import register_builtin_datasets
from bmc_detectron.data.synthetic.backgrounds import BCCD_MICRONS_PER_PIXEL
from bmc_detectron.evaluation.count import dataset_images, evaluate_cells, merge_classes
from bmc_detectron.pipeline.scale_plan import ScaleOptions, plan_scale
from bmc_detectron.reporting.tables import fmt, markdown_table
from bmc_detectron.utils.io import (
    atomic_write_text,
    file_sha256,
    shown_path,
    write_json_atomic,
)

NAMES = (
    "retinanet_R_18_full_agnostic_marrow_real_cpu",
    "d2_retinanet_R_18_FPN_agnostic_marrow_real_cpu",
)
LABELS = {
    NAMES[0]: "full model",
    NAMES[1]: "detectron2 RetinaNet",
    "retinanet_R_18_full_agnostic_marrow_real_SCANNER_cpu": "full model, scanner augmentation",
    "retinanet_R_18_chosen_agnostic_marrow_real_cpu": "full model + refinement (issue 25)",
}
VAL = "marrow_real_val"
CACHE_FILE = "real_marrow_eval.json"
CHECKS = {VAL: None, "bccd_test": BCCD_MICRONS_PER_PIXEL}


def truth(dataset: str) -> Dict[str, Any]:
    """The dataset's COCO truth with every class merged into ``cell`` (BCCD: its WBC only)."""
    gt, images = dataset_images(dataset)
    if dataset.startswith("bccd"):
        wbc = [c["id"] for c in gt["categories"] if c["name"] == "WBC"]
        gt = {**gt, "annotations": [a for a in gt["annotations"] if a["category_id"] in wbc]}
    merged, _ = merge_classes(gt, [])
    return {"gt": merged, "images": images}


def measure(
    run: Path, nms: float, dataset: str, data: Dict[str, Any], count_threshold: float
) -> Dict[str, Any]:
    """Count the dataset's images with the run's model at one NMS threshold and measure it."""
    spec = CounterSpec(
        detector_config=str(run / "config.yaml"),
        detector_weights=str(run / "model_final.pth"),
        detector_opts=("MODEL.RETINANET.NMS_THRESH_TEST", str(nms)),
        device="cpu",
        score_threshold=0.05,
        nms_threshold=nms,
    )
    counter = build_counter(spec)
    mpp = CHECKS.get(dataset)
    options = ScaleOptions(microns_per_pixel=mpp) if mpp else ScaleOptions()
    prep = plan_scale(scale_setup(spec, counter, options), {}, counter.detector).prep
    cells = {}
    for image_id, path in data["images"]:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"{path}: not a readable image")
        cells[image_id] = counter.count_image(image, prep)
    result = evaluate_cells(cells, data["gt"], "detector", count_threshold=count_threshold)
    return {
        "AP": result["agnostic"]["AP"],
        "AP50": result["agnostic"]["AP50"],
        "recall": 100 * result["matching"]["recall"],
        "precision": 100 * result["matching"]["precision"],
        "crowding": result.get("crowding"),
        "field_factor": prep.factor,
    }


def cached_measure(
    run: Path, nms: float, dataset: str, data: Dict[str, Any], args: argparse.Namespace
) -> Dict[str, Any]:
    """:func:`measure`, kept in ``RUN/real_marrow_eval.json`` for the run's weights (SHA-256): a
    page rebuilt from finished runs counts nothing again."""
    cache_file = run / CACHE_FILE
    weights = file_sha256(run / "model_final.pth")
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    if cache.get("weights_sha256") != weights:
        cache = {"weights_sha256": weights, "results": {}}
    key = f"{dataset}|nms={nms}|count={args.count_threshold}|limit={args.limit}"
    if key not in cache["results"]:
        cache["results"][key] = measure(run, nms, dataset, data, args.count_threshold)
        write_json_atomic(cache, cache_file, indent=1)
    return cache["results"][key]


def earlier_results(path: Path) -> Dict[str, Any]:
    """The runs of an earlier ``detectors.json``, each with the date it was measured on
    (``measured``), so that a model whose weights are gone from this machine keeps its rows."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    return {
        name: {**run, "measured": run.get("measured", earlier["date"])}
        for name, run in earlier.get("runs", {}).items()
    }


def choose(rows: Dict[str, Dict[str, Any]]) -> str:
    """The NMS threshold (a key of ``rows``) with the highest recall + precision (F1-like sum)
    at the count threshold; ties to the higher AP."""
    return max(rows, key=lambda k: (rows[k]["recall"] + rows[k]["precision"], rows[k]["AP"]))


def crowd_cells(m: Dict[str, Any]) -> List[str]:
    """Recall per crowding kind and the pairs' share, formatted."""
    c = m.get("crowding")
    if not c:
        return ["-"] * 4
    kinds = [fmt(100 * c["recall"][k]["recall"]) for k in ("isolated", "touching", "overlapping")]
    return kinds + [fmt(100 * c["pairs"]["share"])]


def page(results: Dict[str, Any], command: str, count_threshold: float) -> str:
    """The results page."""
    head = ["model", "NMS", "AP", "AP50", "recall", "precision"]
    head += ["recall isolated", "recall touching", "recall overlapping", "pairs as two"]
    rows, bccd = [], []
    for name, r in results["runs"].items():
        label = LABELS.get(name, name)
        if r.get("measured", results["date"]) != results["date"]:
            label += f" (measured {r['measured']})"
        for nms, m in r["marrow_real_val"].items():
            mark = " (chosen)" if nms == r["chosen"] else ""
            rows.append([label, nms + mark, fmt(m["AP"]), fmt(m["AP50"])])
            rows[-1] += [fmt(m["recall"]), fmt(m["precision"]), *crowd_cells(m)]
        b = r.get("bccd_test", {}).get(r["chosen"])
        if b:
            bccd.append([label, r["chosen"], fmt(b["AP"]), fmt(b["AP50"])])
            bccd[-1] += [fmt(b["recall"]), fmt(b["precision"]), fmt(b["field_factor"], 3)]
    return "\n".join(
        [
            "# Detectors of crowded real cells",
            "",
            f"Generated by `{command}` on {results['date']}. Class-agnostic detectors trained on "
            "the real-cell composites (`marrow_real_train`, 400 fields of 20-40 PBC cells); "
            "measured on `marrow_real_val` (100 fields of PBC `val` cells only, about 30 per "
            f"field). Recall and precision at the count threshold ({count_threshold}), matched "
            "at IoU 0.5; crowding as the generator marks it (touching: the cell's mask meets "
            "another's; overlapping: it shares pixels with one). *Pairs as two*: of the pairs of "
            "touching or overlapping true cells, the share with both cells found. The NMS IoU "
            "threshold is chosen on this val split (highest recall + precision).",
            "",
            markdown_table(head, rows),
            "",
            "## A second real check: BCCD test, white cells",
            "",
            "BCCD `test` photographs (another lab, peripheral blood), their `WBC` boxes only, "
            f"read at BCCD's pixel size ({BCCD_MICRONS_PER_PIXEL} um/px, the field factor "
            "below brings them to the training fields' scale). Red cells and platelets are not "
            "nucleated cells: the detector is right not to find them, and a platelet clump or a "
            "red cell it calls a cell is a false positive here.",
            "",
            markdown_table(
                ["model", "NMS", "AP", "AP50", "recall", "precision", "field factor"], bccd
            ),
            "",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="folder of the run folders")
    p.add_argument("--names", nargs="+", default=list(NAMES))
    p.add_argument("--nms", nargs="+", type=float, default=[0.4, 0.5, 0.6])
    p.add_argument("--count-threshold", type=float, default=0.5)
    p.add_argument("--out", default="docs/results/real_marrow")
    p.add_argument("--limit", type=int, help="only the first N images of each set (a quick run)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    register_builtin_datasets()
    data = {name: truth(name) for name in CHECKS}
    if args.limit:
        for d in data.values():
            d["images"] = d["images"][: args.limit]
            keep = {i for i, _ in d["images"]}
            gt = d["gt"]
            gt["images"] = [im for im in gt["images"] if im["id"] in keep]
            gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
    results: Dict[str, Any] = {"date": datetime.date.today().isoformat(), "runs": {}}
    out = Path(args.out)
    recorded = earlier_results(out / "detectors.json")
    for name in args.names:
        run = Path(args.runs) / name
        if not (run / "model_final.pth").is_file():
            if name in recorded:
                results["runs"][name] = recorded[name]
                print(f"[real_marrow] {shown_path(run)}: no weights, its recorded measurements")
            else:
                print(f"[real_marrow] {shown_path(run)}: no model_final.pth, left out")
            continue
        val = {str(n): cached_measure(run, n, VAL, data[VAL], args) for n in args.nms}
        chosen = choose(val)
        bccd = cached_measure(run, float(chosen), "bccd_test", data["bccd_test"], args)
        results["runs"][name] = {VAL: val, "chosen": chosen, "bccd_test": {chosen: bccd}}
        results["runs"][name]["measured"] = results["date"]
        print(f"[real_marrow] {name}: NMS {chosen}: {json.dumps(val[chosen], default=str)[:300]}")
    if not results["runs"]:
        print("error: no finished run", file=sys.stderr)
        return 2
    command = "python -m studies.real_marrow.detectors " + " ".join(argv or sys.argv[1:])
    write_json_atomic(results, out / "detectors.json", indent=2)
    atomic_write_text(out / "RESULTS_detectors.md", page(results, command, args.count_threshold))
    print(f"[real_marrow] wrote {shown_path(out / 'RESULTS_detectors.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
