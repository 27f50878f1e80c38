"""AP on resampled image sets equals pycocotools on the same multiset; the paired bootstrap."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bmc_detectron.evaluation.image_bootstrap import (
    average_precision,
    match_images,
    paired_bootstrap,
)


def _coco(images, anns, n_cats=3) -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "width": 200, "height": 200} for i in images],
        "annotations": anns,
        "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(n_cats)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _pycocotools_ap(gt: COCO, results: list) -> tuple:
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return 100 * ev.stats[0], 100 * ev.stats[1]


def _random_layout(rng, n_images: int, n_cats: int = 3):
    anns, results, aid = [], [], 1
    for img in range(1, n_images + 1):
        for _ in range(rng.integers(1, 6)):
            x, y, w, h = *rng.uniform(0, 150, 2), *rng.uniform(10, 50, 2)
            cat = int(rng.integers(1, n_cats + 1))
            anns.append(
                {
                    "id": aid,
                    "image_id": img,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            aid += 1
            if rng.random() < 0.8:  # a detection near the cell, sometimes with the wrong class
                jitter = rng.normal(0, 4, 4)
                c = cat if rng.random() < 0.8 else int(rng.integers(1, n_cats + 1))
                results.append(
                    {
                        "image_id": img,
                        "category_id": c,
                        "score": float(rng.random()),
                        "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                    }
                )
        for _ in range(rng.integers(0, 3)):  # background detections
            results.append(
                {
                    "image_id": img,
                    "category_id": int(rng.integers(1, n_cats + 1)),
                    "score": float(rng.random()),
                    "bbox": [*rng.uniform(0, 150, 2), *rng.uniform(10, 50, 2)],
                }
            )
    return anns, results


def test_hand_built_two_images():
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [10, 10, 40, 40],
            "area": 1600,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 2,
            "category_id": 1,
            "bbox": [10, 10, 40, 40],
            "area": 1600,
            "iscrowd": 0,
        },
    ]
    gt = _coco([1, 2], anns, n_cats=1)
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [120, 120, 40, 40], "score": 0.8},
    ]
    m = match_images(gt, results)
    # both images: one hit at rank 1 then a miss -> recall 0.5 at precision 1 -> AP 51/101
    assert average_precision(m)["AP"] == pytest.approx(100 * 51 / 101)
    assert average_precision(m)["AP"] == pytest.approx(_pycocotools_ap(gt, results)[0])
    assert average_precision(m, np.array([1, 0]))["AP"] == pytest.approx(100.0)
    assert average_precision(m, np.array([3, 0]))["AP50"] == pytest.approx(100.0)
    assert average_precision(m, np.array([0, 2]))["AP"] == 0.0


def test_identity_and_duplicates_equal_pycocotools():
    rng = np.random.default_rng(0)
    anns, results = _random_layout(rng, 12)
    gt = _coco(range(1, 13), anns)
    m = match_images(gt, results)
    ap, ap50 = _pycocotools_ap(gt, results)
    assert average_precision(m)["AP"] == pytest.approx(ap, abs=1e-9)
    assert average_precision(m)["AP50"] == pytest.approx(ap50, abs=1e-9)
    # a resample with repeats == pycocotools on a set where the drawn images are copied
    counts = np.bincount(rng.integers(0, 12, 12), minlength=12)
    new_anns, new_res, images, aid = [], [], [], 1
    for i, c in enumerate(counts):
        for k in range(c):
            new_id = 1000 * (k + 1) + i + 1
            images.append(new_id)
            for a in anns:
                if a["image_id"] == i + 1:
                    new_anns.append({**a, "id": aid, "image_id": new_id})
                    aid += 1
            new_res += [{**r, "image_id": new_id} for r in results if r["image_id"] == i + 1]
    dup_ap, dup_ap50 = _pycocotools_ap(_coco(images, new_anns), new_res)
    assert average_precision(m, counts)["AP"] == pytest.approx(dup_ap, abs=1e-6)
    assert average_precision(m, counts)["AP50"] == pytest.approx(dup_ap50, abs=1e-6)


def test_paired_bootstrap_intervals():
    rng = np.random.default_rng(1)
    anns, results = _random_layout(rng, 20)
    gt = _coco(range(1, 21), anns)
    good = match_images(gt, results)
    worse = match_images(gt, [r for r in results if r["score"] > 0.5])
    same = paired_bootstrap([(good, good)], samples=50)
    assert same["AP"] == (0.0, 0.0, 0.0)
    diff = paired_bootstrap([(good, worse), (good, worse)], samples=200, seed=3)
    full = average_precision(good)["AP"] - average_precision(worse)["AP"]
    assert diff["AP"][0] == pytest.approx(full)
    assert 0 < diff["AP"][1] <= full <= diff["AP"][2]
    assert diff == paired_bootstrap([(good, worse)], samples=200, seed=3)  # same draws


def test_empty_predictions_and_mismatched_images():
    rng = np.random.default_rng(2)
    anns, results = _random_layout(rng, 5)
    gt = _coco(range(1, 6), anns)
    empty = match_images(gt, [])
    assert average_precision(empty) == {"AP": 0.0, "AP50": 0.0}
    other = match_images(_coco(range(1, 5), [a for a in anns if a["image_id"] < 5]), [])
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap([(empty, other)], samples=5)
    with pytest.raises(ValueError, match="no images"):
        match_images(_coco([], []), [])


def test_ground_truth_of_a_dataset_without_json(tmp_path):
    """A dataset registered from dicts (no json_file) is converted to COCO for the bootstrap."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from studies.ablation.bootstrap import ground_truth

    record = {"file_name": str(tmp_path / "a.png"), "image_id": 7, "height": 50, "width": 60}
    record["annotations"] = [{"bbox": [5, 5, 20, 20], "bbox_mode": 0, "category_id": 0}]
    DatasetCatalog.register("bootstrap_dicts", lambda: [record])
    MetadataCatalog.get("bootstrap_dicts").set(thing_classes=["cell"])
    try:
        gt = ground_truth("bootstrap_dicts")
        assert gt.getImgIds() == [7] and len(gt.getAnnIds()) == 1
        assert gt.loadAnns(gt.getAnnIds())[0]["bbox"] == [5, 5, 15, 15]  # XYXY -> XYWH
    finally:
        DatasetCatalog.remove("bootstrap_dicts")
        MetadataCatalog.remove("bootstrap_dicts")
