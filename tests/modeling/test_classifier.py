"""The recognition stage: crop mapper, cell classifier, classification metrics, PBC marrow data
and the train_net entry point for the classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from PIL import Image

from bmc_detectron.config import ConfigError, build_cfg, get_bmc_cfg
from bmc_detectron.data.checks import DatasetError
from bmc_detectron.data.classes import MARROW_ABBRS, OTHER
from bmc_detectron.data.crop_mapper import CellCropMapper, crop_records, jitter_box
from bmc_detectron.data.datasets import (
    PBC_WBC_CLASSES,
    unregister_dataset,
)
from bmc_detectron.data.pbc import PBC_MARROW_CLASSES, pbc_marrow_class, pbc_marrow_coco
from bmc_detectron.engine import BMCClassifierTrainer, main, trainer_class
from bmc_detectron.engine.classifier_trainer import (
    choose_open_set_threshold,
    crop_outputs,
    dataset_logits,
    fit_open_set_statistics,
    load_crop_records,
)
from bmc_detectron.engine.loading import load_model
from bmc_detectron.evaluation import ClassificationEvaluator, classification_metrics
from bmc_detectron.evaluation.open_set import open_set_score, read_threshold
from bmc_detectron.modeling import classifier_class_names
from bmc_detectron.modeling.classifier import dihedral_views
from bmc_detectron.tools import open_set_threshold as open_set_tool
from bmc_detectron.utils.io import file_sha256
from tests.helpers import CONFIGS, register_synthetic

PBC_CPU = str(CONFIGS / "recognition" / "cell_classifier_R_18_pbc_cpu.yaml")
SYNTH_CPU = str(CONFIGS / "recognition" / "cell_classifier_R_18_synth_cpu.yaml")


def tiny_classifier_cfg(num_classes: int = 3, crop: int = 32, *opts):
    """R-18 classifier on ``crop`` px crops, no dataset."""
    cfg = get_bmc_cfg()
    cfg.merge_from_file(PBC_CPU)
    cfg.merge_from_list(["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    cfg.merge_from_list(["MODEL.BMC.CLASSIFIER.NUM_CLASSES", num_classes, *opts])
    cfg.merge_from_list(["MODEL.BMC.CLASSIFIER.CROP_SIZE", crop])
    return cfg


# ---- crops ----------------------------------------------------------------------------------


def _gradient_png(path, w=60, h=40):
    """RGB image with R = 4x, G = 4y, B = 100 (every pixel tells where it is)."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([4 * x, 4 * y, np.full_like(x, 100)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def test_test_crop_repeats_the_border_and_keeps_the_box(tmp_path):
    rgb = _gradient_png(tmp_path / "g.png")
    mapper = CellCropMapper(False, crop_size=20, crop_margin=0.5, image_format="BGR")
    # box 10x10 at the top-left corner; margin 0.5 -> 20 px square from (-5, -5): scale 1
    rec = {"file_name": str(tmp_path / "g.png"), "box": [0, 0, 10, 10], "label": 2}
    out = mapper(rec)
    assert out["label"] == 2 and out["image"].dtype == torch.uint8
    crop = out["image"].permute(1, 2, 0).numpy()[..., ::-1]  # BGR -> RGB
    assert crop.shape == (20, 20, 3)
    np.testing.assert_array_equal(crop[5:, 5:], rgb[:15, :15])  # the box and its context
    np.testing.assert_array_equal(crop[:5, :5], np.broadcast_to(rgb[0, 0], (5, 5, 3)))
    np.testing.assert_array_equal(crop[:5, 5:], np.broadcast_to(rgb[0, :15], (5, 15, 3)))
    # bottom-right corner: replicated last row / column
    rec["box"] = [50, 30, 60, 40]
    crop = mapper(rec)["image"].permute(1, 2, 0).numpy()[..., ::-1]
    np.testing.assert_array_equal(crop[:15, :15], rgb[25:, 45:])
    np.testing.assert_array_equal(crop[15:, 15:], np.broadcast_to(rgb[-1, -1], (5, 5, 3)))


def test_box_jitter_stays_near_the_box():
    rng = np.random.RandomState(0)
    box = np.array([100.0, 100.0, 140.0, 120.0])  # w 40, h 20
    boxes = np.stack([jitter_box(box, 0.1, rng) for _ in range(500)])
    cx, cy = boxes[:, [0, 2]].mean(1), boxes[:, [1, 3]].mean(1)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert np.abs(cx - 120).max() <= 4.0 and np.abs(cy - 110).max() <= 2.0
    assert w.min() >= 36.0 and w.max() <= 44.0 and h.min() >= 18.0 and h.max() <= 22.0
    assert np.abs(cx - 120).max() > 3.0 and w.std() > 1.0  # it does move and resize
    np.testing.assert_array_equal(jitter_box(box, 0.0, rng), box)


def test_training_crops_are_augmented_but_keep_size_and_label(tmp_path):
    _gradient_png(tmp_path / "g.png")
    cfg = tiny_classifier_cfg(3, 24)
    mapper = CellCropMapper(cfg, True)
    rec = {"file_name": str(tmp_path / "g.png"), "box": [20, 10, 40, 30], "label": 1}
    np.random.seed(0)
    crops = [mapper(rec)["image"] for _ in range(8)]
    assert all(c.shape == (3, 24, 24) and c.dtype == torch.uint8 for c in crops)
    assert any(not torch.equal(crops[0], c) for c in crops[1:])


def test_crop_records_one_per_box_and_clear_errors():
    dicts = [
        {
            "file_name": "a.png",
            "image_id": 1,
            "height": 9,
            "width": 9,
            "annotations": [
                {"bbox": [1, 1, 4, 4], "bbox_mode": 1, "category_id": 0},
                {"bbox": [2, 2, 3, 3], "bbox_mode": 1, "category_id": 2, "iscrowd": 1},
                {"bbox": [0, 0, 5, 2], "bbox_mode": 1, "category_id": 1},
            ],
        },
        {"file_name": "b.png", "image_id": 2, "annotations": []},
    ]
    recs = crop_records(dicts, "d", 3)
    assert [(r["file_name"], r["label"]) for r in recs] == [("a.png", 0), ("a.png", 1)]
    assert recs[1]["box"] == [0.0, 0.0, 5.0, 2.0]  # XYWH -> XYXY
    dicts[0]["annotations"][0]["category_id"] = 7
    with pytest.raises(DatasetError, match=r"a\.png: unknown class: category_id 7"):
        crop_records(dicts, "d", 3)
    with pytest.raises(DatasetError, match="d: no annotated cells"):
        crop_records(dicts[1:], "d", 3)


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    mapper = CellCropMapper(False, crop_size=32, crop_margin=0.1)
    with pytest.raises(DatasetError, match=r"bad\.png: cannot read image"):
        mapper({"file_name": str(bad), "box": [0, 0, 4, 4], "label": 0})


# ---- metrics ---------------------------------------------------------------------------------


def test_metrics_exact_values_with_an_absent_class():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    preds = [0, 0, 1, 1, 2, 2, 2, 2, 3]
    m = classification_metrics(labels, preds, ["A", "B", "C", "D"])
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 3, 1], [0, 0, 0, 0]]
    assert m["accuracy"] == pytest.approx(6 / 9)
    a, b, c, d = (m["per_class"][k] for k in "ABCD")
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((1.0, 2 / 3, 0.8))
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((0.75, 0.75, 0.75))
    assert [a["support"], b["support"], c["support"], d["support"]] == [3, 2, 4, 0]
    assert (d["precision"], d["recall"], d["f1"], d["predicted"]) == (0.0, None, None, 1)
    assert d["absent"] and not a["absent"]
    assert m["absent_classes"] == ["D"]
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 0.75) / 3)
    assert m["macro_precision"] == pytest.approx(0.75)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 0.75) / 3)
    never = classification_metrics([0, 1], [0, 0], ["A", "B"])["per_class"]["B"]
    assert (never["precision"], never["recall"], never["f1"]) == (0.0, 0.0, 0.0)


def test_evaluator_writes_json_csv_png(tmp_path):
    ev = ClassificationEvaluator("clf_eval_test", ["A", "B", "C"], output_dir=str(tmp_path))
    ev.reset()
    ev.process([{"label": 0}, {"label": 1}], [{"pred_class": 0}, {"pred_class": 0}])
    ev.process([{"label": 1}], [{"pred_class": 1}])
    res = ev.evaluate()["classification"]
    assert res["accuracy"] == pytest.approx(2 / 3)
    assert res["f1-A"] == pytest.approx(2 / 3) and "f1-C" not in res  # C is absent
    data = json.loads((tmp_path / "classification_metrics.json").read_text())
    assert data["dataset"] == "clf_eval_test" and data["absent_classes"] == ["C"]
    assert data["per_class"]["C"]["f1"] is None and data["per_class"]["C"]["support"] == 0
    csv = (tmp_path / "confusion_matrix.csv").read_text().splitlines()
    assert csv == ["true\\predicted,A,B,C", "A,1,0,0", "B,1,1,0", "C,0,0,0"]
    with Image.open(tmp_path / "confusion_matrix.png") as im:
        assert im.format == "PNG" and min(im.size) > 200
    MetadataCatalog.remove("clf_eval_test")


# ---- model -----------------------------------------------------------------------------------


def test_predict_crops_shapes_probabilities_and_empty_input():
    torch.manual_seed(0)
    model = build_model(tiny_classifier_cfg(3, 32, "MODEL.BMC.CLASSIFIER.BATCH_SIZE_TEST", 4))
    model.train()
    crops = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    probs = model.predict_crops(crops)  # 3 chunks of <= 4
    assert probs.shape == (10, 3) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(10))
    torch.testing.assert_close(model.predict_crops(crops.float()), probs)
    assert model.training  # the mode is restored
    assert model.predict_crops(torch.zeros((0, 3, 32, 32), dtype=torch.uint8)).shape == (0, 3)
    model.eval()
    out = model([{"image": c} for c in crops[:2]])
    assert out[0]["probs"].shape == (3,) and isinstance(out[0]["pred_class"], int)
    assert out[1]["score"] == pytest.approx(float(probs[1].max()), rel=1e-5)
    assert out[1]["pred_class"] == int(probs[1].argmax())
    logits = model.forward_logits(crops[:2].float())
    torch.testing.assert_close(logits.softmax(1), probs[:2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(N, 3, S, S\)"):
        model.predict_crops(torch.zeros(3, 32, 32))
    torch.testing.assert_close(model.predict_logits(crops).softmax(1), probs)
    assert model.predict_logits(crops[:0]).shape == (0, 3)


def test_the_pooled_features_feed_the_linear_layer():
    torch.manual_seed(0)
    model = build_model(tiny_classifier_cfg(3, 32, "MODEL.BMC.CLASSIFIER.BATCH_SIZE_TEST", 4))
    crops = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    logits, features = model.predict_logits_and_features(crops)  # 2 chunks of <= 4
    assert features.shape == (6, 512) and features.dtype == torch.float32
    torch.testing.assert_close(model.cls_score(features), logits)
    torch.testing.assert_close(model.predict_features(crops), features)
    torch.testing.assert_close(model.predict_logits(crops), logits)
    model.eval()  # predict_* run in eval mode (BatchNorm statistics), whatever the mode
    torch.testing.assert_close(model.forward_features(crops[:2].float()), features[:2])
    empty = model.predict_logits_and_features(crops[:0])
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 512)


def test_dihedral_views_are_the_eight_flips_and_turns():
    x = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    grids = [v.flatten().tolist() for v in dihedral_views(x, 8)]
    assert grids[:4] == [[0, 1, 2, 3], [1, 0, 3, 2], [1, 3, 0, 2], [3, 1, 2, 0]]
    assert len({tuple(g) for g in grids}) == 8  # the whole dihedral group of the square
    crops = torch.rand(2, 3, 5, 5)
    views = dihedral_views(crops, 8).unflatten(0, (8, 2))
    for k in range(4):
        torch.testing.assert_close(views[2 * k], torch.rot90(crops, k, (2, 3)))
        torch.testing.assert_close(views[2 * k + 1], torch.rot90(crops, k, (2, 3)).flip(3))
    torch.testing.assert_close(dihedral_views(x, 2), dihedral_views(x, 8)[:2])
    torch.testing.assert_close(dihedral_views(x, 1), x)
    two = torch.stack([x[0], x[0] + 10])
    assert dihedral_views(two, 2)[:, 0, 0, 0].tolist() == [0, 10, 1, 11]  # view by view
    with pytest.raises(ValueError, match="1, 2, 8"):
        dihedral_views(x, 4)


def test_test_flips_average_the_views_at_inference_only():
    torch.manual_seed(0)
    model = build_model(tiny_classifier_cfg(3, 32, "MODEL.BMC.CLASSIFIER.TEST_FLIPS", 8))
    with torch.no_grad():
        torch.nn.init.normal_(model.cls_score.weight, std=0.3)
    crops = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    logits = model.predict_logits(crops)
    for turned in (crops.flip(3), torch.rot90(crops, 1, (2, 3)), crops.flip(2)):
        torch.testing.assert_close(model.predict_logits(turned), logits, rtol=1e-4, atol=1e-4)
    model.test_flips = 1
    one_view = torch.stack([model.predict_logits(v) for v in dihedral_views(crops, 8).split(5)])
    assert (model.predict_logits(crops.flip(3)) - model.predict_logits(crops)).abs().max() > 1e-3
    torch.testing.assert_close(one_view.mean(0), logits, rtol=1e-4, atol=1e-4)
    model.test_flips = 8
    model.train()  # training sees each crop once
    assert model.forward_features(crops.float()).shape == (5, 512)
    with pytest.raises(ConfigError, match="TEST_FLIPS 3: must be 1, 2 or 8"):
        build_cfg(PBC_CPU, ["MODEL.BMC.CLASSIFIER.TEST_FLIPS", 3])


def _discs(n_per_class: int, size: int, seed: int):
    """Coloured discs (red / green / blue = class 0 / 1 / 2) on a noisy grey background, BGR."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    samples = []
    for cls in range(3):
        for _ in range(n_per_class):
            img = 120 + 30 * torch.rand(3, size, size, generator=g)
            cx, cy = (size / 2 + 4 * (torch.rand(2, generator=g) - 0.5)).tolist()
            r = size * (0.25 + 0.1 * float(torch.rand(1, generator=g)))
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
            colour = torch.full((3,), 60.0)
            colour[2 - cls] = 230.0  # BGR order: red is channel 2
            img[:, disc] = colour[:, None]
            samples.append({"image": img.to(torch.uint8), "label": cls})
    return samples


@pytest.mark.parametrize(
    "key,value", [("LOGIT_NORM_TAU", 0.0), ("LOGIT_NORM_TAU", 0.5), ("COSINE_SCALE", 16.0)]
)
def test_classifier_learns_coloured_discs(key, value):
    torch.manual_seed(0)
    model = build_model(tiny_classifier_cfg(3, 32, f"MODEL.BMC.CLASSIFIER.{key}", value))
    train, held_out = _discs(8, 32, seed=0), _discs(5, 32, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    order = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    with EventStorage():
        for _ in range(30):
            batch = [train[i] for i in torch.randperm(len(train), generator=order)[:12]]
            loss = model(batch)["loss_cls"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    probs = model.predict_crops(torch.stack([s["image"] for s in held_out]))
    accuracy = (probs.argmax(1) == torch.tensor([s["label"] for s in held_out])).float().mean()
    assert accuracy >= 0.8  # chance is 1/3


def test_logit_norm_trains_on_logits_divided_by_tau_times_their_norm():
    torch.manual_seed(0)
    tau = 0.5
    model = build_model(tiny_classifier_cfg(3, 32, "MODEL.BMC.CLASSIFIER.LOGIT_NORM_TAU", tau))
    batch = _discs(2, 32, seed=0)
    model.train()
    with EventStorage():
        loss = model(batch)["loss_cls"]
        logits = model.forward_logits(model._stack(batch)).float()
    labels = torch.tensor([s["label"] for s in batch])
    scaled = logits / (tau * logits.norm(dim=1, keepdim=True))
    smoothing = model.label_smoothing  # the PBC config's 0.1
    expected = F.cross_entropy(scaled, labels, label_smoothing=smoothing)
    assert torch.allclose(loss, expected, atol=1e-5)
    plain = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    assert not torch.allclose(loss, plain, atol=1e-3)
    with pytest.raises(ValueError, match="logit_norm_tau must be >= 0"):
        build_model(tiny_classifier_cfg(3, 32, "MODEL.BMC.CLASSIFIER.LOGIT_NORM_TAU", -1.0))


def test_a_cosine_layer_gives_the_scaled_cosines_of_features_and_class_weights():
    torch.manual_seed(0)
    model = build_model(tiny_classifier_cfg(3, 32, "MODEL.BMC.CLASSIFIER.COSINE_SCALE", 16.0))
    model.eval()
    crops = torch.stack([s["image"] for s in _discs(1, 32, seed=2)]).float()
    with torch.no_grad():
        features = model.forward_features(crops)
        logits = model.forward_logits(crops)
    weight = model.cls_score.weight
    expected = 16.0 * torch.stack(
        [F.cosine_similarity(features, weight[k].expand_as(features), dim=1) for k in range(3)], 1
    )
    assert torch.allclose(logits, expected, atol=1e-5) and logits.abs().max() <= 16.0
    assert torch.allclose(model.predict_logits(crops), expected, atol=1e-5)
    with pytest.raises(ValueError, match="cosine_scale must be >= 0"):
        build_model(tiny_classifier_cfg(3, 32, "MODEL.BMC.CLASSIFIER.COSINE_SCALE", -1.0))


def test_training_labels_outside_the_classes_are_an_error():
    model = build_model(tiny_classifier_cfg(3, 32))
    with pytest.raises(ValueError, match=r"labels \[5\] outside \[0, 3\)"):
        model([{"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "label": 5}])


def test_class_names_and_config_errors():
    cfg = tiny_classifier_cfg(3, 32, "MODEL.BMC.CLASSIFIER.CLASS_NAMES", ["a", "b", "c"])
    assert classifier_class_names(cfg) == ["a", "b", "c"]
    assert build_model(cfg).class_names == ["a", "b", "c"]
    cfg = build_cfg(PBC_CPU)
    assert classifier_class_names(cfg) == list(PBC_MARROW_CLASSES)
    with pytest.raises(ConfigError, match="12 classes but MODEL.BMC.CLASSIFIER.NUM_CLASSES is 5"):
        classifier_class_names(build_cfg(PBC_CPU, ["MODEL.BMC.CLASSIFIER.NUM_CLASSES", 5]))
    with pytest.raises(ConfigError, match="CLASS_NAMES.*2 names but NUM_CLASSES is 12"):
        build_cfg(PBC_CPU, ["MODEL.BMC.CLASSIFIER.CLASS_NAMES", ["a", "b"]])
    with pytest.raises(ConfigError, match="IN_FEATURE 'res4'.*OUT_FEATURES"):
        build_cfg(PBC_CPU, ["MODEL.BMC.CLASSIFIER.IN_FEATURE", "res4"])
    with pytest.raises(ConfigError, match="BOX_JITTER"):
        build_cfg(PBC_CPU, ["BMC.CLASSIFIER_AUG.BOX_JITTER", 0.7])


# ---- PBC with marrow class ids ---------------------------------------------------------------


def test_pbc_prefixes_map_to_marrow_classes():
    expected = dict(PMY="Promy", MY="Myelo", MMY="Late", BNE="Rods", SNE="Lobu", EO="Eosl")
    expected.update(ERB="Red", LY="Lym", MO="Mono", BA="Baso")
    for prefix, name in expected.items():
        assert PBC_MARROW_CLASSES[pbc_marrow_class(f"/x/{prefix}_123.jpg")] == name
    assert PBC_MARROW_CLASSES == (*MARROW_ABBRS, "Baso")  # ids are the marrow ids
    with pytest.raises(DatasetError, match=r"NEU_7\.jpg: unknown PBC cell-type prefix 'NEU'"):
        pbc_marrow_class("images/NEU_7.jpg")


def _fake_pbc(root, files):
    for split, name, yolo_id in files:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (36, 36), (200, 150, 160)).save(root / split / "images" / f"{name}.jpg")
        (root / split / "labels" / f"{name}.txt").write_text(f"{yolo_id} 0.5 0.5 0.4 0.4\n")


def test_pbc_conversion_merges_splits_and_checks_labels(tmp_path):
    _fake_pbc(tmp_path, [("train", "MY_1", 3), ("train_extra", "BA_2", 0), ("train", "LY_3", 4)])
    coco = pbc_marrow_coco(tmp_path, ("train", "train_extra"), PBC_WBC_CLASSES)
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    got = {names[a["image_id"]]: a["category_id"] - 1 for a in coco["annotations"]}
    idx = PBC_MARROW_CLASSES.index
    assert got == {
        "train/images/MY_1.jpg": idx("Myelo"),
        "train/images/LY_3.jpg": idx("Lym"),
        "train_extra/images/BA_2.jpg": idx("Baso"),
    }
    assert [c["name"] for c in coco["categories"]] == list(PBC_MARROW_CLASSES)
    _fake_pbc(tmp_path, [("val", "MO_9", 4)])  # a monocyte labelled Lymphocyte
    with pytest.raises(DatasetError, match=r"MO_9\.jpg: labelled Lymphocyte.*means Monocyte"):
        pbc_marrow_coco(tmp_path, ("val",), PBC_WBC_CLASSES)
    _fake_pbc(tmp_path, [("odd", "XX_1", 0)])
    with pytest.raises(DatasetError, match=r"XX_1\.jpg: unknown PBC cell-type prefix"):
        pbc_marrow_coco(tmp_path, ("odd",), PBC_WBC_CLASSES)


def test_real_pbc_val_has_marrow_ids(pbc_datasets):
    dicts = DatasetCatalog.get("pbc_marrow_val")
    meta = MetadataCatalog.get("pbc_marrow_val")
    counts = np.bincount([a["category_id"] for d in dicts for a in d["annotations"]], None, 12)
    assert len(dicts) == 300 and meta.absent_classes == ["Prim", "Plas"]
    assert counts[PBC_MARROW_CLASSES.index("Prim")] == counts[3] == 0
    assert sorted(set(counts.tolist())) == [0, 30]  # 30 of each of the 10 present types


# ---- train_net ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_synth(tmp_path):
    register_synthetic(tmp_path, "clf_tiny_train", 3, 64)
    register_synthetic(tmp_path, "clf_tiny_test", 2, 64)
    yield tmp_path
    unregister_dataset("clf_tiny_train")
    unregister_dataset("clf_tiny_test")


def _opts(out, *extra):
    opts = "DATASETS.TRAIN ('clf_tiny_train',) DATASETS.TEST ('clf_tiny_test',) "
    opts += "MODEL.BMC.CLASSIFIER.CROP_SIZE 32 SOLVER.IMS_PER_BATCH 4 SOLVER.MAX_ITER 2 "
    opts += "SOLVER.WARMUP_ITERS 1 DATALOADER.NUM_WORKERS 0"
    return [*opts.split(), "OUTPUT_DIR", str(out), *extra]


def test_train_net_main_trains_evaluates_and_resumes(tiny_synth):
    out = tiny_synth / "run"
    metrics_file = out / "inference" / "clf_tiny_test" / "classification_metrics.json"
    parse = default_argument_parser().parse_args
    main(parse(["--config-file", SYNTH_CPU, *map(str, _opts(out))]))
    assert (out / "model_final.pth").is_file()
    assert (out / "inference" / "clf_tiny_test" / "confusion_matrix.png").is_file()
    n_cells = len(
        json.loads((tiny_synth / "annotations" / "clf_tiny_test.json").read_text())["annotations"]
    )
    assert json.loads(metrics_file.read_text())["num_samples"] == n_cells
    # the open-set threshold is chosen on DATASETS.TEST[0] and stored beside the weights
    stored = read_threshold(out / "model_final.pth", file_sha256(out / "model_final.pth"))
    assert (stored.dataset, stored.crops, stored.score) == ("clf_tiny_test", n_cells, "knn")
    assert stored.statistics is not None  # the training crops' kNN bank, beside the weights
    assert stored.known_lost <= 0.05 == stored.max_known_lost
    # --resume continues from the last checkpoint
    cfg = build_cfg(SYNTH_CPU, _opts(out, "SOLVER.MAX_ITER", 4))
    assert trainer_class(cfg) is BMCClassifierTrainer
    trainer = BMCClassifierTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    trainer.train()
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 3
    final = json.loads(metrics_file.read_text())
    # --eval-only with the final weights gives the metrics of the end of training
    args = parse(["--config-file", SYNTH_CPU, "--eval-only", *map(str, _opts(out))])
    args.opts += ["MODEL.WEIGHTS", str(out / "model_final.pth")]
    res = main(args)["classification"]
    assert res["accuracy"] == pytest.approx(final["accuracy"])
    assert res["macro_f1"] == pytest.approx(final["macro_f1"])


def test_the_open_set_threshold_flags_at_most_the_share_asked_for(tiny_synth, capsys):
    opts = _opts(tiny_synth, "MODEL.BMC.CLASSIFIER.OPEN_SET_MAX_KNOWN_LOST", 0.25)
    cfg = build_cfg(SYNTH_CPU, [*opts, "MODEL.BMC.CLASSIFIER.OPEN_SET_SCORE", "max_softmax"])
    torch.manual_seed(0)
    weights = tiny_synth / "random.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    path = choose_open_set_threshold(cfg, str(weights))
    assert path == tiny_synth / "random.open_set.json"
    stored = read_threshold(weights)
    logits, labels = dataset_logits(cfg, load_model(cfg, str(weights)), "clf_tiny_test")
    assert len(labels) == stored.crops and logits.shape == (stored.crops, 11)
    scores = np.sort(open_set_score(logits, "max_softmax"))
    assert stored.threshold == scores[int(0.25 * len(scores))]
    assert stored.known_lost == np.mean(scores < stored.threshold) <= 0.25
    # on two datasets: the lower of their thresholds, so neither loses more than asked
    model = load_model(cfg, str(weights))
    per_set = {}
    for name in ("clf_tiny_test", "clf_tiny_train"):
        logits, _ = dataset_logits(cfg, model, name)
        per_set[name] = open_set_score(logits, "max_softmax")
    choose_open_set_threshold(cfg, str(weights), ["clf_tiny_test", "clf_tiny_train"])
    both = read_threshold(weights)
    assert both.threshold == min(np.sort(s)[int(0.25 * len(s))] for s in per_set.values())
    assert both.dataset == "clf_tiny_test, clf_tiny_train"
    assert both.crops == sum(len(s) for s in per_set.values())
    assert both.known_lost == max(np.mean(s < both.threshold) for s in per_set.values()) <= 0.25
    with pytest.raises(ConfigError, match="OPEN_SET_SCORE 'odin'"):
        build_cfg(SYNTH_CPU, [*opts, "MODEL.BMC.CLASSIFIER.OPEN_SET_SCORE", "odin"])
    # the command does the same for a model trained before
    argv = ["--config-file", SYNTH_CPU, "--weights", str(weights), "--max-known-lost", "0"]
    argv += ["--score", "max_softmax"]
    assert open_set_tool.main([*argv, *map(str, opts)]) == 0
    assert read_threshold(weights).threshold == scores[0]  # nothing flagged
    missing = ["--config-file", SYNTH_CPU, "--weights", str(tiny_synth / "none.pth")]
    assert open_set_tool.main(missing) == 2
    assert "none.pth: classifier weights not found" in capsys.readouterr().err


def test_the_feature_statistics_leave_the_classifiers_own_other_class_out(tiny_synth):
    """The kNN bank describes the known cell types: crops the classifier learns as its Other
    class (boxes of no whole cell) are not in it."""
    names = [*MARROW_ABBRS[:10], OTHER.abbr]  # the synthetic data's class 10 named Other here
    source = "clf_tiny_train"
    DatasetCatalog.register("clf_tiny_train_other", lambda: DatasetCatalog.get(source))
    MetadataCatalog.get("clf_tiny_train_other").set(thing_classes=names)
    try:
        opts = _opts(tiny_synth, "MODEL.BMC.CLASSIFIER.CLASS_NAMES", json.dumps(names))
        opts += ["DATASETS.TRAIN", "('clf_tiny_train_other',)"]
        cfg = build_cfg(SYNTH_CPU, [*opts, "MODEL.BMC.CLASSIFIER.OPEN_SET_FIT_CROPS", 10000])
        labels = [r["label"] for r in load_crop_records(cfg, cfg.DATASETS.TRAIN)]
        assert 0 < labels.count(10) < len(labels)
        torch.manual_seed(0)
        stats = fit_open_set_statistics(cfg, build_model(cfg).eval())
        assert stats.crops == len(labels) - labels.count(10)
    finally:
        DatasetCatalog.remove("clf_tiny_train_other")
        MetadataCatalog.remove("clf_tiny_train_other")


def test_a_dataset_may_have_the_classifiers_first_classes(tiny_synth):
    names = [*MARROW_ABBRS, "Baso"]  # the 11-class synthetic data, a 12-class classifier
    opts = _opts(tiny_synth, "MODEL.BMC.CLASSIFIER.NUM_CLASSES", 12)
    cfg = build_cfg(SYNTH_CPU, [*opts, "MODEL.BMC.CLASSIFIER.CLASS_NAMES", json.dumps(names)])
    assert {r["label"] for r in load_crop_records(cfg, ["clf_tiny_train"])} <= set(range(11))
    shuffled = [names[1], names[0], *names[2:]]
    cfg = build_cfg(SYNTH_CPU, [*opts, "MODEL.BMC.CLASSIFIER.CLASS_NAMES", json.dumps(shuffled)])
    with pytest.raises(ConfigError, match="must be the classifier's first ones"):
        load_crop_records(cfg, ["clf_tiny_train"])


def test_classes_of_the_data_must_match_the_classifier(tiny_synth):
    cfg = build_cfg(SYNTH_CPU, _opts(tiny_synth, "MODEL.BMC.CLASSIFIER.NUM_CLASSES", 3))
    with pytest.raises(ConfigError, match="11 classes but MODEL.BMC.CLASSIFIER.NUM_CLASSES is 3"):
        BMCClassifierTrainer.build_train_loader(cfg)
    victim = tiny_synth / "clf_tiny_train" / "000001.png"
    victim.write_bytes(victim.read_bytes()[:60])
    with pytest.raises(DatasetError, match=r"000001\.png"):
        BMCClassifierTrainer.build_train_loader(build_cfg(SYNTH_CPU, _opts(tiny_synth)))


def test_the_knn_threshold_is_the_default_and_stores_its_statistics(tiny_synth):
    opts = _opts(tiny_synth, "MODEL.BMC.CLASSIFIER.OPEN_SET_MAX_KNOWN_LOST", 0.25)
    cfg = build_cfg(SYNTH_CPU, [*opts, "MODEL.BMC.CLASSIFIER.OPEN_SET_FIT_CROPS", 7])
    assert cfg.MODEL.BMC.CLASSIFIER.OPEN_SET_SCORE == "knn"
    torch.manual_seed(0)
    weights = tiny_synth / "random.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    choose_open_set_threshold(cfg, str(weights))
    assert (tiny_synth / "random.open_set.npz").is_file()
    stored = read_threshold(weights)
    stats = stored.statistics
    # 7 of the training crops in the bank, k = min(OPEN_SET_KNN_K, 7)
    assert stored.score == "knn" and stats.crops == 7 and stats.k == 7
    assert stats.arrays["bank"].shape == (7, 512)
    model = load_model(cfg, str(weights))
    _, features = crop_outputs(cfg, model, load_crop_records(cfg, ["clf_tiny_test"]))
    scores = np.sort(stats.scores(features))
    assert stored.crops == len(scores) and stored.threshold == scores[int(0.25 * len(scores))]
    assert stored.known_lost == np.mean(scores < stored.threshold) <= 0.25
