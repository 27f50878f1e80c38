"""The synthetic marrow-smear generator: determinism, tight boxes, class mix, COCO output, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.data.synthetic import (
    CLASS_FREQUENCIES,
    default_cells_per_image,
    default_scale,
    generate_dataset,
    generate_image,
    image_rng,
)
from bmc_detectron.tools.synthetic import main

NUM_CLASSES = len(MARROW_ABBRS)


def _one_hot(cls: int) -> np.ndarray:
    p = np.zeros(NUM_CLASSES)
    p[cls] = 1.0
    return p


def _single_cells(cls: int, n: int, seed: int = 0):
    """``n`` lone cells of one class on a clean white canvas: (image, box) pairs."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, cls, i])
        img, boxes, classes = generate_image(
            rng, 128, 128, (1, 1), class_probs=_one_hot(cls), clean=True
        )
        assert classes.tolist() == [cls]
        out.append((img, boxes[0]))
    return out


def test_same_seed_same_image_and_different_seed_differs():
    a = generate_image(image_rng(7, "train", 3), 128, 160)
    b = generate_image(image_rng(7, "train", 3), 128, 160)
    c = generate_image(image_rng(8, "train", 3), 128, 160)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert a[0].shape == (128, 160, 3) and a[0].dtype == np.uint8
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("height,width", [(256, 256), (480, 640)])
def test_boxes_valid_and_cell_counts(height, width):
    scale = default_scale(height, width)
    lo, hi = default_cells_per_image(height, width, scale)
    for i in range(3):
        img, boxes, classes = generate_image(image_rng(0, "t", i), height, width, (lo, hi), scale)
        assert img.shape == (height, width, 3)
        assert boxes.shape == (len(classes), 4) and boxes.dtype == np.float32
        assert lo <= len(classes) <= hi
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= width)
        assert np.all(boxes[:, 3] <= height)
        sizes = boxes[:, 2:] - boxes[:, :2]
        assert np.all(sizes > 0)
        assert np.all(sizes.max(axis=1) >= 0.6 * 18 * scale)  # no sliver of a cell
        assert np.all(sizes.max(axis=1) <= 1.4 * 48 * scale)
        assert classes.min() >= 0 and classes.max() < NUM_CLASSES


def test_default_size_rules():
    assert default_scale(256, 256) == 1.0
    assert default_cells_per_image(256, 256, 1.0) == (6, 14)
    scale = default_scale(480, 640)
    assert 1.2 < scale < 1.5  # cells grow with the image, but less than the image does
    lo, hi = default_cells_per_image(480, 640, scale)
    assert lo > 6 and hi > 14


@pytest.mark.parametrize("cls", range(NUM_CLASSES))
def test_box_is_tight_around_a_lone_cell(cls):
    for img, box in _single_cells(cls, 3):
        drawn = (img < 255).any(axis=2)
        rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
        expected = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        assert box.tolist() == expected, MARROW_ABBRS[cls]


def test_boxes_tight_among_touching_and_border_cells():
    touching_border = 0
    for i in range(6):
        img, boxes, _ = generate_image(image_rng(1, "crowd", i), 160, 160, (12, 16), clean=True)
        drawn = (img < 255).any(axis=2)
        covered = np.zeros_like(drawn)
        for x0, y0, x1, y1 in boxes.astype(int):
            covered[y0:y1, x0:x1] = True
        assert not np.any(drawn & ~covered)  # nothing drawn outside the boxes
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            # each edge of a box touches a drawn pixel
            assert drawn[y0, x0:x1].any() and drawn[y1 - 1, x0:x1].any()
            assert drawn[y0:y1, x0].any() and drawn[y0:y1, x1 - 1].any()
            others = np.zeros_like(drawn)
            for j, (a0, b0, a1, b1) in enumerate(boxes.astype(int)):
                if j != k:
                    others[b0:b1, a0:a1] = True
            ring = np.zeros_like(drawn)
            ring[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
            ring[y0:y1, x0:x1] = False
            assert not np.any(drawn & ring & ~others)  # just outside the box: background
            touching_border += int(x0 == 0 or y0 == 0 or x1 == 160 or y1 == 160)
    assert touching_border > 0  # cut cells are kept, with their visible box


def test_overlap_is_bounded():
    for i in range(8):
        _, boxes, _ = generate_image(image_rng(2, "crowd", i), 128, 128, (14, 14))
        for k in range(len(boxes)):
            for j in range(k + 1, len(boxes)):
                a, b = boxes[k], boxes[j]
                iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
                ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
                inter = iw * ih
                area_a = (a[2] - a[0]) * (a[3] - a[1])
                area_b = (b[2] - b[0]) * (b[3] - b[1])
                assert inter / (area_a + area_b - inter) <= 0.3 + 1e-6


def test_class_frequencies_follow_the_differential():
    counts = np.zeros(NUM_CLASSES)
    for i in range(32):
        _, _, classes = generate_image(image_rng(3, "freq", i), 256, 256)
        counts += np.bincount(classes, minlength=NUM_CLASSES)
    assert counts.sum() >= 300
    freq = counts / counts.sum()
    expected = np.asarray(CLASS_FREQUENCIES)
    assert abs(expected.sum() - 1.0) < 1e-9
    assert np.all(np.abs(freq - expected) < 0.05), np.round(freq, 3)
    assert np.argmax(freq) == MARROW_ABBRS.index("Red")


def _mean_rgb(img: np.ndarray) -> np.ndarray:
    drawn = (img < 255).any(axis=2)
    return img[drawn].astype(np.float64).mean(axis=0)


def test_classes_differ_in_size_and_colour():
    cells = {c: _single_cells(c, 10, seed=5) for c in range(NUM_CLASSES)}
    inner = {c: [b for _, b in v if b.min() > 0 and b.max() < 128] for c, v in cells.items()}
    diam = {MARROW_ABBRS[c]: np.mean([b[2:] - b[:2] for b in v]) for c, v in inner.items()}
    for small in ("Lym", "Red"):
        for large in ("Prim", "Mono", "Promy", "Myelo"):
            assert diam[small] < 0.75 * diam[large], (small, large, diam)
    colour = {MARROW_ABBRS[c]: np.mean([_mean_rgb(i) for i, _ in v], 0) for c, v in cells.items()}
    blue_minus_red = {k: v[2] - v[0] for k, v in colour.items()}
    assert blue_minus_red["Plas"] > 40 and blue_minus_red["Prim"] > 20
    assert blue_minus_red["Eosl"] < -20  # orange-red granules
    assert blue_minus_red["Plas"] > max(blue_minus_red[k] for k in ("Lobu", "Rods", "Late"))
    # the pyknotic nucleus of a nucleated red cell is darker than a blast's fine chromatin
    darkest = {
        MARROW_ABBRS[c]: np.mean([np.percentile(i[(i < 255).any(2)].sum(1), 10) for i, _ in v])
        for c, v in cells.items()
    }
    assert darkest["Red"] < darkest["Prim"] - 60


def test_scale_sets_the_cell_size():
    def mean_size(scale: float) -> float:
        sizes = []
        for i in range(4):
            _, boxes, _ = generate_image(image_rng(4, "s", i), 320, 320, (6, 6), scale, clean=True)
            inside = (
                (boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 2] < 320) & (boxes[:, 3] < 320)
            )
            sizes.extend((boxes[inside, 2:] - boxes[inside, :2]).max(axis=1))
        return float(np.mean(sizes))

    assert 1.7 < mean_size(2.0) / mean_size(1.0) < 2.3
    assert 25 < mean_size(1.0) < 36  # about MEAN_CELL_DIAMETER (29 px) at scale 1


def _files(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_generate_dataset_writes_loadable_deterministic_coco(tmp_path):
    json_path = generate_dataset(tmp_path / "a", "val", 3, seed=11, height=96, width=128)
    assert json_path == tmp_path / "a" / "annotations" / "val.json"
    generate_dataset(tmp_path / "b", "val", 3, seed=11, height=96, width=128)
    generate_dataset(tmp_path / "c", "val", 3, seed=12, height=96, width=128)
    files_a = _files(tmp_path / "a")
    assert sorted(files_a) == ["annotations/val.json"] + [f"val/{i:06d}.png" for i in range(3)]
    assert files_a == _files(tmp_path / "b")  # byte-identical, no temp files left
    assert files_a["annotations/val.json"] != _files(tmp_path / "c")["annotations/val.json"]

    from pycocotools.coco import COCO

    coco = COCO(str(json_path))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) > 0
    assert sorted(coco.getCatIds()) == list(range(1, NUM_CLASSES + 1))
    for ann in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 96
        assert ann["area"] == pytest.approx(w * h) and ann["iscrowd"] == 0
    img = cv2.imread(str(tmp_path / "a" / "val" / coco.loadImgs(1)[0]["file_name"]))
    assert img.shape == (96, 128, 3)

    from detectron2.data.datasets import load_coco_json

    records = load_coco_json(str(json_path), str(tmp_path / "a" / "val"), "bmc_synth_test_tmp")
    assert len(records) == 3
    n_ann = sum(len(r["annotations"]) for r in records)
    assert n_ann == len(coco.getAnnIds())
    for r in records:
        assert Path(r["file_name"]).is_file() and (r["height"], r["width"]) == (96, 128)
        assert all(0 <= a["category_id"] < NUM_CLASSES for a in r["annotations"])


def test_cli_writes_both_splits(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["--out", str(out), "--num-train", "2", "--num-test", "1", "--size", "64"]
    assert main([*args, "--width", "96", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    for split in ("train", "test"):  # each split's json, named where it was written
        assert printed.count(f" -> {out / 'annotations' / f'{split}.json'}\n") == 1
    assert sorted(_files(out)) == [
        "annotations/test.json",
        "annotations/train.json",
        "test/000000.png",
        "train/000000.png",
        "train/000001.png",
    ]
    train = json.loads((out / "annotations" / "train.json").read_text())
    assert [(i["height"], i["width"]) for i in train["images"]] == [(64, 96)] * 2
    assert {a["image_id"] for a in train["annotations"]} <= {1, 2}
    assert "train: 2 images" in printed


def _arrays_digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_fixed_seed_gives_pinned_bytes(tmp_path):
    """A fixed seed gives these exact images, boxes, classes and files (pinned before a move)."""
    smear = generate_image(image_rng(5, "pin", 0), 96, 128)
    clean = generate_image(np.random.default_rng(5), 96, 96, (3, 5), clean=True)
    assert _arrays_digest(smear) == (
        "5286d63bf0219792c95b68592946b5a1defe116be45410aaef68d53a13a7aa82"
    )
    assert _arrays_digest(clean) == (
        "e742a897b9c446677ef1a16898f6811938ddbf63cca4618e413a8877b67520a0"
    )
    generate_dataset(tmp_path, "pin", 2, seed=5, height=64, width=80)
    h, images = hashlib.sha256(), hashlib.sha256()
    for name, data in sorted(_files(tmp_path).items()):
        h.update(name.encode())
        h.update(data)
        if name.endswith(".png"):
            images.update(name.encode())
            images.update(data)
    # the PNGs alone: unchanged since the json gained info["profile"] (issue 31)
    assert images.hexdigest() == (
        "0ea131f10ce4318fa033b0046d358db8ad1b16d5bedce51b39f8c5be0b7163c5"
    )
    # every file, the json included (re-pinned when info["profile"] was added, issue 31)
    assert h.hexdigest() == "fcf96abfce6d8ad66b5ec7708853e3cc8a276d6c62582801e83b91cd23db0d49"
