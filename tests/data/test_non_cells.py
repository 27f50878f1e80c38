"""Boxes of no whole white cell, labelled Other (data/non_cells.py): exact boxes, COCO, registry."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from bmc_detectron.data import non_cells
from bmc_detectron.data.classes import KNOWN_ABBRS
from bmc_detectron.data.crops import crop_square


def test_fragment_box_is_the_asked_corner_quadrant():
    box = np.array([10.0, 20.0, 50.0, 100.0])
    assert non_cells.fragment_box(box, 0).tolist() == [10.0, 20.0, 30.0, 60.0]
    assert non_cells.fragment_box(box, 1).tolist() == [30.0, 20.0, 50.0, 60.0]
    assert non_cells.fragment_box(box, 2).tolist() == [10.0, 60.0, 30.0, 100.0]
    assert non_cells.fragment_box(box, 3).tolist() == [30.0, 60.0, 50.0, 100.0]


def test_background_box_lies_inside_the_image_and_off_every_cell():
    rng = np.random.default_rng(0)
    cells = np.array([[0.0, 0.0, 100.0, 200.0], [150.0, 0.0, 200.0, 200.0]])
    for _ in range(50):
        box = non_cells.background_box(200, 200, cells, 20.0, 0.15, rng)
        assert box is not None
        assert np.allclose(box[2:] - box[:2], 20.0)
        square = crop_square(box, 0.15)  # what the crop shows: the box and its margin
        assert square[0] >= 0 and square[1] >= 0 and square[2] <= 200 and square[3] <= 200
        assert not non_cells.touches(square, cells)
    # the only free strip (x in 100..150) is too narrow for a 60 px window
    assert non_cells.background_box(200, 200, cells, 60.0, 0.15, rng) is None
    # a window larger than the image never fits
    assert non_cells.background_box(50, 50, np.zeros((0, 4)), 60.0, 0.0, rng) is None


def test_touching_edges_do_not_overlap():
    boxes = np.array([[10.0, 10.0, 20.0, 20.0]])
    assert not non_cells.touches(np.array([20.0, 10.0, 30.0, 20.0]), boxes)  # edge to edge
    assert non_cells.touches(np.array([19.0, 19.0, 30.0, 30.0]), boxes)
    assert not non_cells.touches(np.array([0.0, 0.0, 5.0, 5.0]), np.zeros((0, 4)))


def _rec(name, boxes, classes, size=(400, 300)):
    anns = [
        {"bbox": list(b), "bbox_mode": BoxMode.XYXY_ABS, "category_id": c}
        for b, c in zip(boxes, classes)
    ]
    return {"file_name": str(name), "width": size[0], "height": size[1], "annotations": anns}


def test_bccd_boxes_keep_red_cells_per_image_every_platelet_and_a_background(tmp_path):
    red = [[i * 30.0, 0.0, i * 30.0 + 25, 25.0] for i in range(5)]
    rec = _rec(
        tmp_path / "a.jpg", [*red, [300, 200, 360, 260], [100, 100, 110, 110]], [0] * 5 + [1, 2]
    )
    items = non_cells.bccd_non_cells([rec], np.random.default_rng(0), red_per_image=2)
    kinds = Counter(kind for _, _, kind in items)
    assert kinds == {"red cell (BCCD)": 2, "platelet (BCCD)": 1, "background (BCCD)": 1}
    platelet = [b for _, b, k in items if k == "platelet (BCCD)"][0]
    assert platelet.tolist() == [100.0, 100.0, 110.0, 110.0]
    background = [b for _, b, k in items if k == "background (BCCD)"][0]
    assert np.allclose(background[2:] - background[:2], 60.0)  # the white cells' median side
    assert not non_cells.touches(
        crop_square(background, non_cells.MARGIN), np.array([[300, 200, 360, 260]])
    )


def test_pbc_boxes_are_a_quarter_of_the_cell_or_a_window_off_it(tmp_path):
    recs = [_rec(tmp_path / f"{i}.jpg", [[150, 100, 250, 200]], [4]) for i in range(40)]
    items = non_cells.pbc_non_cells(recs, np.random.default_rng(0), share=1.0)
    kinds = Counter(kind for _, _, kind in items)
    assert set(kinds) == {"cell fragment", "background (PBC)"} and len(items) == 40
    for _, box, kind in items:
        if kind == "cell fragment":
            assert np.allclose(box[2:] - box[:2], 50.0)  # a corner quadrant of the 100 px box
        else:
            assert np.allclose(box[2:] - box[:2], 45.0)  # 0.45 of the cell's box
    assert len(non_cells.pbc_non_cells(recs, np.random.default_rng(0), share=0.0)) == 0


def test_coco_labels_every_box_other_with_paths_under_the_root(tmp_path):
    rec = _rec(tmp_path / "bccd" / "a.jpg", [], [])
    items = [(rec, np.array([1.0, 2.0, 11.0, 22.0]), "red cell (BCCD)")]
    items += [(rec, np.array([5.0, 5.0, 6.0, 6.0]), "platelet (BCCD)")]
    coco = non_cells.non_cells_coco(items, tmp_path)
    assert [c["name"] for c in coco["categories"]] == KNOWN_ABBRS
    assert coco["images"] == [{"id": 1, "file_name": "bccd/a.jpg", "width": 400, "height": 300}]
    first = coco["annotations"][0]
    assert first["category_id"] == 13 and first["bbox"] == [1.0, 2.0, 10.0, 20.0]  # Other, XYWH
    assert [a["kind"] for a in coco["annotations"]] == ["red cell (BCCD)", "platelet (BCCD)"]


def test_registered_non_cells_of_the_real_images(pbc_datasets):
    dicts = DatasetCatalog.get("marrow_non_cells_val")
    assert MetadataCatalog.get("marrow_non_cells_val").thing_classes == KNOWN_ABBRS
    labels = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert labels == {KNOWN_ABBRS.index("Other")}
    data = json.loads((pbc_datasets / "marrow_non_cells" / "annotations" / "val.json").read_text())
    kinds = Counter(a["kind"] for a in data["annotations"])
    assert set(kinds) == {
        "red cell (BCCD)",
        "platelet (BCCD)",
        "background (BCCD)",
        "background (PBC)",
        "cell fragment",
    }
    assert all(Path(d["file_name"]).is_file() for d in dicts[:20])  # under the shared root
