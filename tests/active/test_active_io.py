"""Label Studio / LabelMe round trips and the validated merge of corrected annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from bmc_detectron.active.formats import (
    Labelled,
    image_name_candidates,
    label_studio_task,
    labelme_file,
    read_label_studio,
)
from bmc_detectron.data.convert import labelme_to_coco
from bmc_detectron.tools import merge_labels

BOXES = [("A", (3.3, 4.7, 20.1, 30.9), 0.91), ("B", (40.0, 10.0, 63.5, 47.25), 0.42)]


def _image(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)
    return path


def _as_export(task: Dict) -> Dict:
    """What Label Studio exports after an expert accepted the prediction."""
    return {
        "id": 7,
        "data": task["data"],
        "annotations": [{"result": task["predictions"][0]["result"]}],
    }


def test_label_studio_round_trip() -> None:
    item = Labelled("f1.png", 64, 48, list(BOXES))
    task = label_studio_task(item, "/data/local-files/?d=pool/f1.png", "m1", 0.7)
    region = task["predictions"][0]["result"][0]
    assert region["type"] == "rectanglelabels" and region["original_width"] == 64
    assert 0 <= region["value"]["x"] <= 100 and region["value"]["rectanglelabels"] == ["A"]
    assert task["predictions"][0]["model_version"] == "m1"
    items, notes = read_label_studio([_as_export(task), {"data": {"image": "x.png"}}], "ls.json")
    assert len(items) == 1 and len(notes) == 1  # the task without annotation is left out
    assert items[0].image == "f1.png" and (items[0].width, items[0].height) == (64, 48)
    for (label, box, _), (label2, box2, _) in zip(BOXES, items[0].boxes):
        assert label == label2 and box2 == pytest.approx(box, abs=1e-2)


def test_image_name_candidates() -> None:
    assert image_name_candidates("/data/upload/3/8f1e2a3b-x.png") == ["8f1e2a3b-x.png", "x.png"]
    assert image_name_candidates("http://h/files/a%20b.png") == ["a b.png"]


def test_labelme_round_trip(tmp_path: Path) -> None:
    _image(tmp_path / "f1.png")
    doc = labelme_file(Labelled("f1.png", 64, 48, list(BOXES)), "f1.png")
    (tmp_path / "f1.json").write_text(json.dumps(doc))
    coco = labelme_to_coco(tmp_path, classes=["A", "B"])
    got = [a["bbox"] for a in coco["annotations"]]
    want = [[x0, y0, x1 - x0, y1 - y0] for _, (x0, y0, x1, y1), _ in BOXES]
    np.testing.assert_allclose(got, want, atol=1e-3)


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    """Images root with a.png (labelled in base.json), b.png and c.png (unlabelled)."""
    root = tmp_path / "images"
    for name in ("a.png", "b.png", "c.png"):
        _image(root / name)
    base = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 1, 5, 5],
                "area": 25,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}],
    }
    (tmp_path / "base.json").write_text(json.dumps(base))
    return tmp_path


def _ls_file(path: Path, image: str, boxes: List) -> Path:
    task = label_studio_task(
        Labelled(image, 64, 48, boxes), f"/data/upload/1/0badc0de-{image}", "m"
    )
    path.write_text(json.dumps([_as_export(task)]))
    return path


def _merge(tmp: Path, *inputs: Path, out: str = "merged.json", base: str = "base.json") -> int:
    argv = ["--base", str(tmp / base), "--images-root", str(tmp / "images"), "--round", "2"]
    argv += ["--annotator", "dr_x", *map(str, inputs), "--output", str(tmp / out)]
    return merge_labels.main(argv)


def test_merge_provenance_and_idempotence(pool: Path) -> None:
    ls = _ls_file(pool / "ls.json", "b.png", BOXES)
    fix_a = pool / "a_fix.json"
    fix_a.write_text(json.dumps(labelme_file(Labelled("a.png", 64, 48, BOXES[:1]), "a.png")))
    assert _merge(pool, ls, fix_a) == 0
    merged = json.loads((pool / "merged.json").read_text())
    by_name = {im["file_name"]: im for im in merged["images"]}
    assert sorted(by_name) == ["a.png", "b.png"]
    assert by_name["a.png"]["id"] == 1 and by_name["b.png"]["id"] == 2
    assert by_name["b.png"]["bmc_provenance"]["source"] == "ls.json"
    prov = by_name["a.png"]["bmc_provenance"]
    assert (prov["round"], prov["annotator"], prov["source"]) == (2, "dr_x", "a_fix.json")
    assert len(prov["source_sha256"]) == 64 and "bmc_provenance" not in merged["images"][2:]
    assert merged["info"]["bmc_rounds"][0]["round"] == 2
    per_image = [sum(a["image_id"] == i for a in merged["annotations"]) for i in (1, 2)]
    assert per_image == [1, 2]  # a.png's old box replaced by the correction
    assert _merge(pool, ls, fix_a, out="again.json", base="merged.json") == 0
    assert json.loads((pool / "again.json").read_text()) == merged


def test_merge_rejects_bad_inputs(pool: Path, capsys) -> None:
    good = _ls_file(pool / "good.json", "b.png", BOXES)
    unknown = _ls_file(pool / "unknown.json", "c.png", [("Z", (1, 1, 9, 9), None)])
    outside = _ls_file(pool / "outside.json", "nope.png", BOXES)
    twice = _ls_file(pool / "twice.json", "b.png", BOXES[:1])
    assert _merge(pool, good, unknown, outside, twice) == 2
    err = capsys.readouterr().err
    assert "unknown.json" in err and "'Z'" in err
    assert "outside.json" in err and "not in the pool" in err
    assert "twice.json" in err and "also corrected" in err
    assert not (pool / "merged.json").exists()
