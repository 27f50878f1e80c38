"""Converters: VOC on the shared BCCD data, YOLO on the shared PBC data, hand-built edge cases."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from bmc_detectron.data.convert import (
    labelme_to_coco,
    read_image_list,
    voc_to_coco,
    write_json_atomic,
    yolo_to_coco,
)
from bmc_detectron.data.paths import shared_datasets_root
from bmc_detectron.tools.convert import main

BCCD_CLASSES = ["RBC", "WBC", "Platelets"]
PBC_CLASSES = [
    "Basophil",
    "Eosinophil",
    "Erythroblast",
    "Ig",
    "Lymphocyte",
    "Monocyte",
    "Neutrophil",
]


@pytest.fixture(scope="module")
def bccd() -> Path:
    root = shared_datasets_root() / "bccd"
    assert (root / "Annotations").is_dir(), f"shared BCCD data missing at {root}"
    return root


@pytest.fixture(scope="module")
def pbc() -> Path:
    root = shared_datasets_root() / "pbc_wbc"
    assert (root / "train" / "labels").is_dir(), f"shared PBC data missing at {root}"
    return root


def _image(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 120, 140)).save(path)
    return path


def _voc(path: Path, filename: str, objects, size=(64, 48)) -> Path:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )
    return path


def _per_class(coco: dict) -> dict:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = {n: 0 for n in names.values()}
    for a in coco["annotations"]:
        counts[names[a["category_id"]]] += 1
    return counts


# ---------------------------------------------------------------- VOC / BCCD (real data)


def test_voc_bccd_all_reports_and_drops_the_two_degenerate_boxes(bccd, caplog):
    with caplog.at_level(logging.WARNING):
        coco = voc_to_coco(bccd / "Annotations", bccd / "JPEGImages", BCCD_CLASSES)
    # README: RBC 4155, WBC 372, Platelets 361; two RBC boxes are single points.
    assert len(coco["images"]) == 364
    assert _per_class(coco) == {"RBC": 4153, "WBC": 372, "Platelets": 361}
    assert len(coco["annotations"]) == 4886
    report = coco["info"]["report"]
    dropped = [(Path(d["file"]).name, d["box"], d["reason"]) for d in report["dropped"]]
    assert dropped == [
        ("BloodImage_00338.xml", [504.0, 337.0, 504.0, 337.0], "zero_area"),
        ("BloodImage_00343.xml", [181.0, 329.0, 181.0, 329.0], "zero_area"),
    ]
    assert report["clipped"] == [] and report["empty_images"] == []
    assert report["counts"]["dropped"] == 2
    assert "BloodImage_00338.xml: dropped RBC box [504, 337, 504, 337]: zero" in caplog.text
    assert [c["name"] for c in coco["categories"]] == BCCD_CLASSES
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    # BloodImage_00000.xml, first object: WBC xmin 260 ymin 177 xmax 491 ymax 376 (1-based).
    first = coco["annotations"][0]
    assert coco["images"][0] == {
        "id": 1,
        "file_name": "BloodImage_00000.jpg",
        "width": 640,
        "height": 480,
    }
    assert first["image_id"] == 1 and first["category_id"] == 2
    assert first["bbox"] == [259.0, 176.0, 232.0, 200.0] and first["area"] == 46400.0
    assert first["iscrowd"] == 0 and first["id"] == 1


@pytest.mark.parametrize(
    "split, n_images, counts",
    [
        ("trainval", 292, {"RBC": 3348, "WBC": 301, "Platelets": 292}),
        ("test", 72, {"RBC": 805, "WBC": 71, "Platelets": 69}),
        ("train", 205, {"RBC": 2381, "WBC": 214, "Platelets": 209}),
        ("val", 87, {"RBC": 967, "WBC": 87, "Platelets": 83}),
    ],
)
def test_voc_bccd_imagesets_splits(bccd, split, n_images, counts):
    ids = read_image_list(bccd / "ImageSets" / "Main" / f"{split}.txt")
    coco = voc_to_coco(bccd / "Annotations", bccd / "JPEGImages", BCCD_CLASSES, ids)
    assert len(coco["images"]) == n_images
    assert _per_class(coco) == counts
    assert sorted(Path(im["file_name"]).stem for im in coco["images"]) == sorted(ids)


def test_voc_unknown_class_names_the_file(tmp_path):
    _image(tmp_path / "img" / "a.png")
    xml = _voc(
        tmp_path / "ann" / "a.xml", "a.png", [("RBC", (2, 2, 9, 9)), ("Blast", (3, 3, 8, 8))]
    )
    with pytest.raises(ValueError, match=re.escape(f"{xml}: unknown class 'Blast'")):
        voc_to_coco(tmp_path / "ann", tmp_path / "img", classes=["RBC"])
    inferred = voc_to_coco(tmp_path / "ann", tmp_path / "img")  # no classes: sorted names found
    assert [c["name"] for c in inferred["categories"]] == ["Blast", "RBC"]


def test_voc_box_policy_clip_drop_and_report(tmp_path, caplog):
    _image(tmp_path / "img" / "a.png", (64, 48))
    boxes = [
        ("RBC", (1, 1, 10, 10)),  # fine -> [0, 0, 10, 10]
        ("RBC", (50, 40, 65, 49)),  # 1 px past the 64x48 image: clipped
        ("WBC", (40, 30, 80, 47)),  # 16 px outside: dropped
        ("WBC", (20, 20, 20, 30)),  # zero width: dropped
        ("WBC", (30, 30, 25, 40)),  # negative width: dropped
    ]
    xml = _voc(tmp_path / "ann" / "a.xml", "a.png", boxes)
    with caplog.at_level(logging.WARNING):
        coco = voc_to_coco(tmp_path / "ann", tmp_path / "img", ["RBC", "WBC"])
    assert [a["bbox"] for a in coco["annotations"]] == [
        [0.0, 0.0, 10.0, 10.0],
        [49.0, 39.0, 15.0, 9.0],
    ]
    report = coco["info"]["report"]
    assert [(d["box"], d["reason"]) for d in report["dropped"]] == [
        ([40.0, 30.0, 80.0, 47.0], "outside"),
        ([20.0, 20.0, 20.0, 30.0], "zero_area"),
        ([30.0, 30.0, 25.0, 40.0], "zero_area"),
    ]
    assert [d["box"] for d in report["clipped"]] == [[50.0, 40.0, 65.0, 49.0]]
    assert f"{xml}: dropped WBC box [40, 30, 80, 47]: lies outside the 64x48 image" in caplog.text
    assert f"{xml}: dropped WBC box [20, 20, 20, 30]: zero or negative area" in caplog.text


def test_voc_bad_files_name_the_file(tmp_path):
    _voc(tmp_path / "ann" / "a.xml", "missing.png", [("RBC", (1, 1, 5, 5))])
    (tmp_path / "img").mkdir()
    with pytest.raises(ValueError, match=r"a\.xml: image file not found"):
        voc_to_coco(tmp_path / "ann", tmp_path / "img")
    (tmp_path / "ann" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"a\.xml: not valid XML"):
        voc_to_coco(tmp_path / "ann", tmp_path / "img")
    with pytest.raises(ValueError, match=r"b\.xml: annotation file not found"):
        voc_to_coco(tmp_path / "ann", tmp_path / "img", image_ids=["b"])


# ---------------------------------------------------------------- YOLO / PBC (real data)


@pytest.mark.parametrize("split, per_type", [("train", 150), ("val", 30)])
def test_yolo_pbc_counts_and_sizes(pbc, split, per_type):
    root = pbc / split
    coco = yolo_to_coco(root / "images", root / "labels", PBC_CLASSES)
    n = per_type
    assert len(coco["images"]) == 10 * n and len(coco["annotations"]) == 10 * n
    # Ig = promyelocyte + myelocyte + metamyelocyte; Neutrophil = band + segmented.
    assert _per_class(coco) == dict(zip(PBC_CLASSES, [n, n, n, 3 * n, n, n, 2 * n]))
    assert {(im["width"], im["height"]) for im in coco["images"]} == {(360, 363)}
    assert coco["info"]["report"]["dropped"] == [] and coco["info"]["report"]["notes"] == []


def test_yolo_pbc_exact_box(pbc):
    root = pbc / "train"
    coco = yolo_to_coco(root / "images", root / "labels", PBC_CLASSES, image_ids=["BA_114542"])
    # BA_114542.txt: "0 0.511111 0.498623 0.350000 0.347107" in a 360x363 image
    (ann,) = coco["annotations"]
    assert ann["category_id"] == 1
    assert ann["bbox"] == pytest.approx([120.99996, 118.00023, 126.0, 125.99984], abs=1e-4)


def test_yolo_hand_built_cases(tmp_path, caplog):
    img, lab = tmp_path / "images", tmp_path / "labels"
    _image(img / "a.png", (100, 50))
    _image(img / "b.png", (100, 50))  # no label file: kept, no boxes
    lab.mkdir()
    (lab / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.1 0.2 0.3 0.2 0.2 0.6\n")
    (lab / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with caplog.at_level(logging.WARNING):
        coco = yolo_to_coco(img, lab, ["A", "B"])
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.png"]
    assert [(a["category_id"], a["bbox"]) for a in coco["annotations"]] == [
        (2, [40.0, 15.0, 20.0, 20.0]),
        (1, [10.0, 10.0, 20.0, 20.0]),  # polygon (0.1,0.2) (0.3,0.2) (0.2,0.6) -> its box
    ]
    notes = coco["info"]["report"]["notes"]
    assert any("a.txt:3: polygon converted to its bounding box" in n for n in notes)
    assert any("b.png: no label file b.txt" in n for n in notes)
    assert any("orphan.txt: label file without an image" in n for n in notes)
    assert coco["info"]["report"]["empty_images"] == ["b.png"]
    (lab / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ValueError, match=r"a\.txt:2: unknown class id 2"):
        yolo_to_coco(img, lab, ["A", "B"])


def test_yolo_corrupt_image_names_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "x.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"x\.jpg: unreadable or corrupt image"):
        yolo_to_coco(tmp_path / "images", tmp_path / "labels", ["A"])


# ---------------------------------------------------------------- LabelMe (hand-built)


def _labelme(path: Path, image_path: str, shapes, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "version": "5.2.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageWidth": size[0],
        "imageHeight": size[1],
    }
    path.write_text(json.dumps(data))
    return path


def _shape(label, points, kind):
    return {"label": label, "points": points, "shape_type": kind, "group_id": None, "flags": {}}


def test_labelme_rectangles_polygons_and_skipped_shapes(tmp_path, caplog):
    _image(tmp_path / "a.jpg", (64, 48))
    shapes = [
        _shape("Lym", [[30.5, 40.0], [10.0, 20.0]], "rectangle"),  # lower-right corner first
        _shape("Mono", [[5, 5], [25, 8], [15, 30]], "polygon"),
        _shape("Lym", [[10, 10], [20, 10]], "circle"),
        _shape("Lym", [[3, 3]], "point"),
        _shape("Mono", [[40, 10], [100, 30]], "rectangle"),  # far outside the 64 px width
        _shape("Mono", [[40, 10], [40, 30]], "rectangle"),  # zero width
    ]
    src = _labelme(tmp_path / "a.json", "a.jpg", shapes)
    with caplog.at_level(logging.WARNING):
        coco = labelme_to_coco(tmp_path)
    assert coco["images"] == [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}]
    assert [c["name"] for c in coco["categories"]] == ["Lym", "Mono"]
    assert coco["categories"][0]["full_name"] == "lymphocyte"
    assert [(a["category_id"], a["bbox"]) for a in coco["annotations"]] == [
        (1, [10.0, 20.0, 20.5, 20.0]),
        (2, [5.0, 5.0, 20.0, 25.0]),
    ]
    report = coco["info"]["report"]
    assert [(d["reason"], d["box"]) for d in report["dropped"]] == [
        ("outside", [40.0, 10.0, 100.0, 30.0]),
        ("zero_area", [40.0, 10.0, 40.0, 30.0]),
    ]
    assert report["notes"] == [
        f"{src}: polygon 1 (Mono) converted to its bounding box",
        f"{src}: shape 2 (Lym) of type 'circle' skipped",
        f"{src}: shape 3 (Lym) of type 'point' skipped",
    ]
    assert f"{src}: shape 2 (Lym) of type 'circle' skipped" in caplog.text


def test_labelme_image_dir_and_unknown_class(tmp_path):
    _image(tmp_path / "images" / "b.png", (32, 32))
    src = _labelme(
        tmp_path / "ann" / "b.json",
        "..\\somewhere\\b.png",  # Windows path from another machine: only the base name is used
        [_shape("Eosl", [[1, 1], [9, 9]], "rectangle")],
        size=(32, 32),
    )
    coco = labelme_to_coco(tmp_path / "ann", tmp_path / "images", classes=["Lym", "Eosl"])
    assert coco["images"][0]["file_name"] == "b.png"
    assert coco["annotations"][0]["category_id"] == 2
    with pytest.raises(ValueError, match=re.escape(f"{src}: unknown class 'Eosl'")):
        labelme_to_coco(tmp_path / "ann", tmp_path / "images", classes=["Lym"])
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(ValueError, match=re.escape(f"{src}: image file 'b.png' not found")):
        labelme_to_coco(tmp_path / "ann", tmp_path / "images")


# ---------------------------------------------------------------- writing and CLI


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "sub" / "x.json"
    write_json_atomic({"a": 1}, out)
    assert json.loads(out.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        write_json_atomic({"a": {1, 2}}, out)  # a set is not json
    seen = []

    def failing_fsync(fd):  # the new content is half-way on disk when this fails
        seen.append(sorted(p.name for p in out.parent.iterdir()))
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic({"b": 2}, out)
    assert len(seen[0]) == 2 and seen[0][1] == "x.json"  # a temp file existed next to it
    assert json.loads(out.read_text()) == {"a": 1}
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.json"]


def test_cli_voc_image_list_and_errors(bccd, tmp_path, capsys):
    out = tmp_path / "test.json"
    argv = ["voc", "--images", str(bccd / "JPEGImages"), "--annotations", str(bccd / "Annotations")]
    lst = str(bccd / "ImageSets" / "Main" / "test.txt")
    rc = main(argv + ["--out", str(out), "--classes", "RBC,WBC,Platelets", "--image-list", lst])
    assert rc == 0
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == 72 and len(coco["annotations"]) == 945
    assert "72 images, 945 boxes" in capsys.readouterr().out
    assert main(argv + ["--out", str(out), "--classes", "RBC,WBC"]) == 2
    assert "unknown class 'Platelets'" in capsys.readouterr().err
    assert json.loads(out.read_text()) == coco  # the failed run left the old file intact
    rc = main(
        ["yolo", "--images", str(tmp_path), "--annotations", str(tmp_path), "--out", str(out)]
    )
    assert rc == 2 and "--classes is required" in capsys.readouterr().err
