"""Seeded stratified split, class distribution table / CSV / PNG, and the split command."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from bmc_detectron.data.classes import coco_categories
from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.data.split import class_distribution, format_table, parse_ratio, split_coco
from bmc_detectron.tools.split import main


def _toy_coco() -> dict:
    """22 images: 10 with only A, 5 with A+B, 2 with C, 5 without boxes (A: 15, B: 5, C: 2).

    Rarest-class groups and 4:1 cuts: C 2 -> 1/1 (at least one each side), B 5 -> 4/1,
    A 10 -> 8/2, empty 5 -> 4/1; so train has A 12, B 4, C 1 and test A 3, B 1, C 1.
    """
    images, anns = [], []
    contents = [["A"]] * 10 + [["A", "B"]] * 5 + [["C"]] * 2 + [[]] * 5
    ids = {"A": 1, "B": 2, "C": 3}
    for i, labels in enumerate(contents, start=1):
        images.append({"id": i, "file_name": f"{i:03d}.png", "width": 50, "height": 40})
        for label in labels:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": ids[label],
                    "bbox": [1.0, 1.0, 5.0, 5.0],
                    "area": 25.0,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": v, "name": k} for k, v in ids.items()]
    return {
        "info": {"description": "toy"},
        "images": images,
        "annotations": anns,
        "categories": cats,
    }


def _counts(coco: dict) -> dict:
    out = {}
    for a in coco["annotations"]:
        out[a["category_id"]] = out.get(a["category_id"], 0) + 1
    return out


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_is_stratified_with_exact_counts(seed):
    coco = _toy_coco()
    train, test = split_coco(coco, (4, 1), seed)
    assert len(train["images"]) == 17 and len(test["images"]) == 5
    assert _counts(train) == {1: 12, 2: 4, 3: 1}
    assert _counts(test) == {1: 3, 2: 1, 3: 1}
    train_ids = {im["id"] for im in train["images"]}
    test_ids = {im["id"] for im in test["images"]}
    assert train_ids.isdisjoint(test_ids) and train_ids | test_ids == set(range(1, 23))
    assert {a["image_id"] for a in train["annotations"]} <= train_ids
    assert sum(1 for i in test_ids if i > 17) == 1  # one of the 5 empty images
    assert train["categories"] == coco["categories"] == test["categories"]
    assert test["info"] == {
        "description": "toy",
        "split": {"part": "test", "ratio": [4, 1], "seed": seed, "method": "rarest-class"},
    }
    assert len(coco["images"]) == 22  # input untouched


def test_split_is_reproducible_per_seed():
    coco = _toy_coco()

    def test_ids(seed):
        return sorted(im["id"] for im in split_coco(coco, (4, 1), seed)[1]["images"])

    assert test_ids(0) == test_ids(0)
    assert split_coco(coco, seed=3) == split_coco(coco, seed=3)
    assert len({tuple(test_ids(s)) for s in range(6)}) > 1  # the seed changes the choice


def test_ratio_parsing_and_extremes():
    assert parse_ratio("4:1") == (4, 1) and parse_ratio("7:3") == (7, 3)
    for bad in ("4", "a:b", "0:0", "-1:2"):
        with pytest.raises(ValueError, match=f"ratio '{bad}'"):
            parse_ratio(bad)
    train, test = split_coco(_toy_coco(), (1, 0))
    assert len(train["images"]) == 22 and test["images"] == []


def test_class_distribution_uses_marrow_names():
    cats = coco_categories()
    anns = [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 1, "category_id": 11}]
    train = {"images": [], "annotations": anns, "categories": cats}
    test = {"images": [], "annotations": anns[:1], "categories": cats}
    rows = class_distribution({"train": train, "test": test})
    assert rows[0] == {
        "class": "blast / primitive cell",
        "abbreviation": "Prim",
        "train count": 1,
        "test count": 1,
        "total": 2,
    }
    assert rows[10] == {
        "class": "eosinophil",
        "abbreviation": "Eosl",
        "train count": 1,
        "test count": 0,
        "total": 1,
    }
    assert rows[-1] == {
        "class": "total",
        "abbreviation": "",
        "train count": 2,
        "test count": 1,
        "total": 3,
    }
    assert len(rows) == 12
    table = format_table(rows).splitlines()
    assert table[0].split() == ["class", "abbreviation", "train", "count", "test", "count", "total"]
    assert table[2].split()[-5:] == ["cell", "Prim", "1", "1", "2"]


def test_cli_split_writes_jsons_csv_and_png(tmp_path, capsys):
    src = tmp_path / "all.json"
    src.write_text(json.dumps(_toy_coco()))
    out = tmp_path / "out"
    assert main(["--json", str(src), "--ratio", "4:1", "--seed", "0", "--out", str(out)]) == 0
    train = json.loads((out / "train.json").read_text())
    test = json.loads((out / "test.json").read_text())
    assert (train, test) == split_coco(_toy_coco(), (4, 1), 0)
    assert (out / "class_distribution.csv").read_text() == (
        "class,abbreviation,train count,test count,total\n"
        "A,A,12,3,15\nB,B,4,1,5\nC,C,1,1,2\ntotal,,17,5,22\n"
    )
    with Image.open(out / "class_distribution.png") as im:
        assert im.format == "PNG" and im.width >= 600
    printed = capsys.readouterr().out
    assert "images: train 17, test 5" in printed and "total" in printed


def test_cli_stats_only_for_a_registered_dataset(tmp_path, capsys):
    src = tmp_path / "all.json"
    src.write_text(json.dumps(_toy_coco()))
    register_coco_dataset("test_split_toy", src, tmp_path)
    try:
        assert main(["--dataset", "test_split_toy", "--stats-only"]) == 0
    finally:
        unregister_dataset("test_split_toy")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["class", "abbreviation", "test_split_toy", "count", "total"]
    assert [ln.split() for ln in lines[2:6]] == [
        ["A", "A", "15", "15"],
        ["B", "B", "5", "5"],
        ["C", "C", "2", "2"],
        ["total", "22", "22"],
    ]
    assert lines[6] == "images: test_split_toy 22"
    assert not list(tmp_path.glob("class_distribution*"))  # no --out: nothing written


def test_cli_errors_name_the_problem(tmp_path, capsys):
    missing = tmp_path / "missing.json"
    assert main(["--json", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert f"{missing}: COCO json not found" in capsys.readouterr().err
    assert main(["--dataset", "no_such_dataset", "--stats-only"]) == 2
    assert "dataset 'no_such_dataset' is not registered" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert main(["--json", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "cannot split a dataset without images" in capsys.readouterr().err
