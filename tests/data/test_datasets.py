"""Dataset registration (user and built-in names) and the pre-training checks of dataset dicts."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from bmc_detectron.data.checks import DatasetError, check_dataset_dicts, clean_box
from bmc_detectron.data.classes import marrow_metadata
from bmc_detectron.data.datasets import (
    prepare_dataset,
    register_builtin_datasets,
    register_coco_dataset,
    unregister_dataset,
)

BUILTIN = [
    "bccd_trainval",
    "bccd_test",
    "bccd_train",
    "bccd_val",
    "pbc_wbc_train",
    "pbc_wbc_val",
    "pbc_marrow_train",
    "pbc_marrow_val",
    "bmc_synth_train",
    "bmc_synth_test",
    "marrow_real_train",
    "marrow_real_val",
    "marrow_non_cells_train",
    "marrow_non_cells_val",
]


@pytest.fixture
def names():
    """Unique dataset names for a test, unregistered afterwards."""
    made = []

    def make(stem: str) -> str:
        made.append(f"test_{stem}_{len(made)}")
        return made[-1]

    yield make
    for n in made:
        unregister_dataset(n)


@pytest.fixture
def tmp_datasets(tmp_path, monkeypatch):
    """Built-in names registered with $BMC_DATASETS in tmp_path; restored afterwards."""
    monkeypatch.setenv("BMC_DATASETS", str(tmp_path / "generated"))
    register_builtin_datasets()
    yield tmp_path / "generated"
    monkeypatch.undo()
    register_builtin_datasets()


def _image(path: Path, size=(40, 30), fmt=None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (180, 100, 120)).save(path, format=fmt)
    return str(path)


def _coco(tmp_path: Path, classes=("A", "B")) -> Path:
    _image(tmp_path / "images" / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 2,
                "bbox": [1.0, 2.0, 10.0, 8.0],
                "area": 80.0,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)],
    }
    path = tmp_path / "ann" / "a.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return path


# ---------------------------------------------------------------- register_coco_dataset


def test_register_and_load_user_dataset(tmp_path, names):
    name = names("lab")
    json_file = _coco(tmp_path)
    register_coco_dataset(name, json_file, tmp_path / "images", {"thing_colors": [(1, 2, 3)] * 2})
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco"
    assert meta.json_file == str(json_file) and meta.image_root == str(tmp_path / "images")
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 1 and dicts[0]["file_name"] == str(tmp_path / "images" / "a.png")
    (ann,) = dicts[0]["annotations"]
    assert ann["category_id"] == 1 and ann["bbox"] == [1.0, 2.0, 10.0, 8.0]
    assert ann["bbox_mode"] == BoxMode.XYWH_ABS
    assert meta.thing_classes == ["A", "B"]  # taken from the json on load
    with pytest.raises(ValueError, match=f"dataset '{name}' is already registered"):
        register_coco_dataset(name, json_file, tmp_path / "images")


def test_missing_json_is_reported_on_load_not_on_register(tmp_path, names):
    name = names("nojson")
    missing = tmp_path / "none.json"
    register_coco_dataset(name, missing, tmp_path)  # no error yet
    with pytest.raises(DatasetError, match=re.escape(f"{missing}: annotation file of dataset")):
        DatasetCatalog.get(name)


def test_missing_image_folder_bad_json_and_class_mismatch(tmp_path, names):
    json_file = _coco(tmp_path)
    name = names("noimg")
    register_coco_dataset(name, json_file, tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'nowhere'}: image folder")):
        DatasetCatalog.get(name)
    name = names("classes")
    register_coco_dataset(name, json_file, tmp_path / "images", {"thing_classes": ["A", "C"]})
    with pytest.raises(DatasetError, match=r"categories \['A', 'B'\] do not match"):
        DatasetCatalog.get(name)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    name = names("badjson")
    register_coco_dataset(name, bad, tmp_path / "images")
    with pytest.raises(DatasetError, match=re.escape(f"{bad}: not valid JSON")):
        DatasetCatalog.get(name)
    bad.write_text('{"images": []}')
    with pytest.raises(DatasetError, match=re.escape(f"{bad}: not a COCO detection file")):
        DatasetCatalog.get(name)


# ---------------------------------------------------------------- built-in datasets


def test_builtin_registration_is_idempotent():
    assert register_builtin_datasets() == BUILTIN
    before = {n: dict(MetadataCatalog.get(n).as_dict()) for n in BUILTIN}
    assert register_builtin_datasets() == BUILTIN
    assert {n: dict(MetadataCatalog.get(n).as_dict()) for n in BUILTIN} == before
    assert set(BUILTIN) <= set(DatasetCatalog.list())
    meta = MetadataCatalog.get("bccd_test")
    assert meta.thing_classes == ["RBC", "WBC", "Platelets"] and len(meta.thing_colors) == 3
    assert MetadataCatalog.get("pbc_wbc_val").thing_classes[3] == "Ig"
    synth = MetadataCatalog.get("bmc_synth_train")
    assert synth.thing_classes == marrow_metadata()["thing_classes"]
    assert synth.thing_colors == marrow_metadata()["thing_colors"]


def test_bccd_and_pbc_are_converted_once_and_cached(tmp_datasets):
    cached = tmp_datasets / "bccd" / "annotations" / "test.json"
    assert MetadataCatalog.get("bccd_test").json_file == str(cached)
    assert not cached.exists()
    dicts = DatasetCatalog.get("bccd_test")
    assert len(dicts) == 72 and sum(len(d["annotations"]) for d in dicts) == 945
    mtime = cached.stat().st_mtime_ns
    assert len(DatasetCatalog.get("bccd_test")) == 72
    assert cached.stat().st_mtime_ns == mtime  # second load reads the cache
    assert prepare_dataset("bccd_val") == tmp_datasets / "bccd" / "annotations" / "val.json"
    assert len(json.loads((tmp_datasets / "bccd/annotations/val.json").read_text())["images"]) == 87
    pbc = DatasetCatalog.get("pbc_wbc_val")
    assert len(pbc) == 300 and {d["height"] for d in pbc} == {363}


def test_missing_synthetic_data_says_how_to_generate(tmp_datasets):
    expected = tmp_datasets / "bmc_synth" / "annotations" / "train.json"
    with pytest.raises(DatasetError) as err:
        DatasetCatalog.get("bmc_synth_train")
    msg = str(err.value)
    assert msg.startswith(f"{expected}: annotation file of dataset 'bmc_synth_train' not found")
    assert "python -m bmc_detectron.tools.synthetic --output" in msg
    with pytest.raises(DatasetError, match="python -m bmc_detectron.tools.synthetic"):
        prepare_dataset("bmc_synth_test")


# ---------------------------------------------------------------- check_dataset_dicts


def _rec(path: str, boxes, size=(40, 30), cats=None, mode=BoxMode.XYXY_ABS) -> dict:
    anns = [
        {"bbox": list(b), "bbox_mode": mode, "category_id": (cats or [0] * len(boxes))[i]}
        for i, b in enumerate(boxes)
    ]
    return {"file_name": path, "width": size[0], "height": size[1], "annotations": anns}


def test_clean_box_policy():
    assert clean_box((0, 0, 10, 10), 40, 30) == ((0.0, 0.0, 10.0, 10.0), "ok")
    assert clean_box((-1, 2, 41, 31), 40, 30) == ((0.0, 2.0, 40.0, 30.0), "clipped")
    assert clean_box((-1.5, 2, 10, 10), 40, 30) == (None, "outside")
    assert clean_box((5, 5, 5, 9), 40, 30) == (None, "zero_area")
    assert clean_box((40, 5, 40.5, 9), 40, 30) == (None, "zero_area")  # nothing left after clip


def test_checks_clean_boxes_and_count_empty_images(tmp_path, caplog):
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png")
    dicts = [
        _rec(a, [(1, 1, 10, 10), (30, 20, 40.8, 30.5), (30, 20, 45, 29), (5, 5, 5, 9)]),
        _rec(b, []),
    ]
    stats = {}
    with caplog.at_level(logging.WARNING):
        out = check_dataset_dicts(dicts, "toy", num_classes=1, stats=stats)
    assert [ann["bbox"] for ann in out[0]["annotations"]] == [[1, 1, 10, 10], [30, 20, 40, 30]]
    assert len(dicts[0]["annotations"]) == 4  # input untouched
    assert len(out) == 2 and out[1]["annotations"] == []  # image without boxes kept
    assert stats == {
        "zero_area": 1,
        "outside": 1,
        "clipped": 1,
        "no_annotations": 1,
        "images": 2,
        "boxes": 2,
    }
    assert f"{a}: dropped class 0 box [30, 20, 45, 29]: lies outside the 40x30 image" in caplog.text
    assert f"{a}: dropped class 0 box [5, 5, 5, 9]: zero or negative area" in caplog.text
    assert "toy: 1 of 2 image(s) have no annotations (kept)" in caplog.text


def test_checks_xywh_boxes_are_clipped_in_their_own_mode(tmp_path):
    a = _image(tmp_path / "a.png")
    out = check_dataset_dicts([_rec(a, [(35, 25, 5.5, 5.5)], mode=BoxMode.XYWH_ABS)], "toy", 1)
    assert out[0]["annotations"][0]["bbox"] == [35, 25, 5, 5]


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda d: str(d / "missing.png"), "image file not found"),
        (lambda d: _write(d / "bad.jpg", b"\x00garbage"), "unreadable or corrupt image"),
        (lambda d: _truncated_jpeg(d / "cut.jpg"), "truncated JPEG"),
        (
            lambda d: _image(d / "big.png", size=(50, 30)),
            "image is 50x30 but the annotation records 40x30",
        ),
    ],
)
def test_checks_bad_images_name_the_file(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(DatasetError, match=re.escape(f"{path}: {problem}")):
        check_dataset_dicts([_rec(path, [(1, 1, 5, 5)])], "toy", 1)


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _truncated_jpeg(path: Path) -> str:
    Image.effect_noise((200, 150), 60).convert("RGB").save(path, format="JPEG")
    data = path.read_bytes()
    return _write(path, data[: len(data) // 2])


def test_checks_unknown_class_and_empty_dataset(tmp_path):
    a = _image(tmp_path / "a.png")
    with pytest.raises(DatasetError, match=re.escape(f"{a}: unknown class: category_id 3")):
        check_dataset_dicts([_rec(a, [(1, 1, 5, 5)], cats=[3])], "toy", num_classes=3)
    with pytest.raises(DatasetError, match=r"^toy: dataset is empty \(0 images\)$"):
        check_dataset_dicts([], "toy", num_classes=3)


def test_checks_report_every_problem_at_once(tmp_path):
    dicts = [_rec(str(tmp_path / f"m{i}.png"), []) for i in range(25)]
    with pytest.raises(DatasetError) as err:
        check_dataset_dicts(dicts, "toy", 1)
    msg = str(err.value)
    assert msg.startswith("toy: 25 problem(s):") and msg.endswith("... and 5 more")
    assert f"{tmp_path / 'm19.png'}: image file not found" in msg
