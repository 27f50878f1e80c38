"""One stage or two (``evaluation.count``, ``studies.stages``): hand-built cases with
known AP, accuracy on matched cells, percentage error and M:E error; the tool end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from bmc_detectron.evaluation.count import evaluate_cells
from bmc_detectron.pipeline import Cell, CellCounter, Detections, Lineage
from bmc_detectron.structures.boxes import box_iou
from bmc_detectron.structures.matching import match_by_score
from studies.stages import compare_stages
from studies.stages.systems import System, compare_systems
from tests.pipeline.helpers import DiscDetector, channel_classifier, disc_field

LINEAGE = Lineage(myeloid=("A",), erythroid=("B",))


def tiny_coco() -> Dict:
    """Two 64x64 images: image 1 has an A and a B cell, image 2 an A and two B cells."""
    boxes = {1: [(0, 0, "A"), (20, 20, "B")], 2: [(0, 0, "A"), (20, 20, "B"), (40, 40, "B")]}
    cats = {"A": 1, "B": 2}
    anns = []
    for image_id, cells in boxes.items():
        for x, y, cls in cells:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cats[cls],
                    "bbox": [x, y, 10, 10],
                    "area": 100,
                    "iscrowd": 0,
                }
            )
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 64, "width": 64} for i in (1, 2)],
        "annotations": anns,
        "categories": [{"id": v, "name": k} for k, v in cats.items()],
    }


def cell(x: float, y: float, det: float, label: str, prob: float) -> Cell:
    """A 10x10 cell at (x, y)."""
    return Cell((x, y, x + 10, y + 10), det, "cell", label, prob)


def hand_cells() -> Dict[int, List[Cell]]:
    """Image 1: the B cell is called A (detector score 0.95, probability 0.5); image 2: right,
    plus an A false positive scoring 0.3 (below the count threshold)."""
    return {
        1: [cell(0, 0, 0.9, "A", 0.9), cell(20, 20, 0.95, "A", 0.5)],
        2: [
            cell(0, 0, 0.9, "A", 1.0),
            cell(20, 20, 0.9, "B", 1.0),
            cell(40, 40, 0.9, "B", 1.0),
            cell(60, 60, 0.3, "A", 1.0),
        ],
    }


def test_match_by_score_takes_highest_score_first_and_best_iou():
    gts = np.array([[0, 0, 10, 10], [4, 0, 14, 10]], dtype=float)
    preds = np.array([[1, 0, 11, 10], [4, 0, 14, 10], [50, 50, 60, 60]], dtype=float)
    scores = np.array([0.5, 0.9, 0.8])
    # the second prediction scores highest and takes gt 1; the first falls back to gt 0
    assert match_by_score(box_iou(preds, gts), scores, 0.5).tolist() == [[1, 1], [0, 0]]
    assert match_by_score(box_iou(preds, np.zeros((0, 4))), scores, 0.5).tolist() == []


@pytest.mark.parametrize(
    "score, ap_a",
    [
        ("product", 100.0),  # 0.95 x 0.5 ranks the false A below both true ones
        ("detector", 200 / 3),  # 0.95 ranks it first: precision 1/2 then 2/3 -> 2/3 everywhere
    ],
)
def test_detection_ap_per_class_and_agnostic(score, ap_a):
    r = evaluate_cells(hand_cells(), tiny_coco(), score, lineage=LINEAGE)
    ap_b = 100 * 67 / 101  # 2 of 3 B cells found, none wrong: recall points 0 .. 0.66
    per_class = r["detection"]["per_class"]
    assert per_class["A"]["AP"] == pytest.approx(ap_a)
    assert per_class["A"]["AP50"] == pytest.approx(ap_a)
    assert per_class["B"]["AP"] == pytest.approx(ap_b)
    assert r["detection"]["AP"] == pytest.approx((ap_a + ap_b) / 2)
    # every box found, the only false one scores lowest
    assert r["agnostic"]["AP"] == pytest.approx(100.0)
    assert r["agnostic"]["AP50"] == pytest.approx(100.0)


def test_matched_accuracy_and_count_errors():
    r = evaluate_cells(hand_cells(), tiny_coco(), "product", lineage=LINEAGE)
    m = r["matching"]
    assert (m["predicted"], m["ground_truth"], m["matched"]) == (5, 5, 5)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["recall"] == m["precision"] == 1.0
    c = r["counts"]["certain"]
    assert (c["counted"], c["uncertain"], c["true_counted"]) == (5, 0, 5)
    assert c["true_percent"] == pytest.approx({"A": 40.0, "B": 60.0})
    assert c["percent"] == pytest.approx({"A": 60.0, "B": 40.0})
    assert c["mae_pooled"] == pytest.approx(20.0)
    assert c["mae_per_image"] == pytest.approx(25.0)  # image 1: 50 points off, image 2: 0
    assert c["true_me"]["ratio"] == pytest.approx(2 / 3)
    assert c["me"]["ratio"] == pytest.approx(1.5)
    assert c["me_abs_error"] == pytest.approx(1.5 - 2 / 3)
    # image 1 has no predicted erythroid cell: only image 2 (0.5 vs 0.5) has both ratios
    assert c["me_abs_error_per_image"] == pytest.approx(0.0)
    assert c["images_with_me"] == 1
    assert r["counts"]["all"]["mae_pooled"] == pytest.approx(20.0)


def test_uncertain_cells_left_out_or_counted():
    r = evaluate_cells(hand_cells(), tiny_coco(), "product", uncertain_below=0.6, lineage=LINEAGE)
    m = r["matching"]
    assert m["accuracy"] == pytest.approx(0.8)
    assert (m["matched_certain"], m["accuracy_certain"]) == (4, 1.0)
    certain, every = r["counts"]["certain"], r["counts"]["all"]
    assert (certain["counted"], certain["uncertain"]) == (4, 1)
    assert certain["mae_pooled"] == pytest.approx(10.0)  # 50 / 50 against 40 / 60
    assert certain["me_abs_error"] == pytest.approx(1.0 - 2 / 3)
    assert (every["counted"], every["uncertain"]) == (5, 0)
    assert every["mae_pooled"] == pytest.approx(20.0)


def test_no_prediction_gives_zero_ap_and_nan_accuracy():
    r = evaluate_cells({1: [], 2: []}, tiny_coco(), "detector", lineage=LINEAGE)
    assert r["detection"]["AP"] == 0.0 and r["agnostic"]["AP50"] == 0.0
    assert r["matching"]["matched"] == 0 and np.isnan(r["matching"]["accuracy"])
    assert r["counts"]["certain"]["counted"] == 0


class ColourDetector(DiscDetector):
    """Multi-class stand-in: the disc boxes, each in the class of its centre colour."""

    class_names = ["A", "B", "C"]

    def __call__(self, image: np.ndarray) -> Detections:
        dets = super().__call__(image)
        classes = []
        for x0, y0, x1, y1 in dets.boxes:
            bgr = image[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            classes.append(int(np.argmax(bgr)))
        return Detections(dets.boxes, dets.scores, classes)


@pytest.fixture
def disc_dataset(tmp_path: Path):
    """A registered COCO dataset of two disc fields (classes A, B, C)."""
    fields = [
        [(16, 16, 8, "A"), (44, 20, 9, "B"), (30, 46, 8, "C")],
        [(14, 40, 8, "B"), (46, 46, 9, "B"), (40, 12, 7, "A")],
    ]
    cats = {"A": 1, "B": 2, "C": 3}
    images, anns = [], []
    for i, discs in enumerate(fields, start=1):
        image, boxes = disc_field(64, 64, discs)
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
        images.append({"id": i, "file_name": f"{i}.png", "height": 64, "width": 64})
        for (x0, y0, x1, y1), disc in zip(boxes.tolist(), discs):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cats[disc[3]],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    coco = {"images": images, "annotations": anns}
    coco["categories"] = [{"id": v, "name": k} for k, v in cats.items()]
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    name = "test_compare_stages_discs"
    register_coco_instances(name, {}, str(tmp_path / "coco.json"), str(tmp_path))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def disc_systems() -> List[System]:
    one = CellCounter(ColourDetector(), score_threshold=0.05)
    two = CellCounter(DiscDetector(), channel_classifier(), score_threshold=0.05)
    return [System("one-stage", one), System("two-stage", two)]


def test_compare_systems_on_a_registered_dataset(disc_dataset):
    result = compare_systems(disc_dataset, disc_systems())
    assert (result["images"], result["ground_truth_cells"]) == (2, 6)
    assert result["classes"] == ["A", "B", "C"]
    for name, score in (("one-stage", "detector"), ("two-stage", "product")):
        r = result["systems"][name]
        assert r["score"] == score
        assert r["detection"]["AP"] == pytest.approx(100.0)
        assert r["agnostic"]["AP"] == pytest.approx(100.0)
        assert r["matching"]["accuracy"] == 1.0 and r["matching"]["matched"] == 6
        assert r["counts"]["certain"]["mae_pooled"] == pytest.approx(0.0)
        assert r["counts"]["certain"]["mae_per_image"] == pytest.approx(0.0)


def test_compare_stages_tool_end_to_end(disc_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compare_stages, "build_systems", lambda args: disc_systems())
    out, report = tmp_path / "out", tmp_path / "docs" / "RESULTS_stages.md"
    argv = ["--dataset", disc_dataset, "--output", str(out), "--report", str(report)]
    for flag in ("one-stage", "detector", "classifier"):
        argv += [f"--{flag}-config", f"{flag}.yaml", f"--{flag}-weights", f"{flag}.pth"]
    argv += ["--train-command", "python train_net.py --config-file X"]
    assert compare_stages.main(argv) == 0
    result = json.loads((out / "compare_stages.json").read_text())
    assert set(result["systems"]) == {"one-stage", "two-stage"}
    assert result["systems"]["two-stage"]["detection"]["AP"] == pytest.approx(100.0)
    assert result["systems"]["one-stage"]["counts"]["certain"]["me_abs_error"] is None
    page = report.read_text()
    assert page.startswith("# One stage or two: measured")
    assert "| two-stage | 100.0 | 100.0 |" in page
    assert "python train_net.py --config-file X" in page
    assert "--train-command" not in page.split("compare_stages ", 1)[1]
    assert "wrote" in capsys.readouterr().out
