"""Class-agnostic detection: merged datasets, their COCO ground truth and the config switch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.structures import Boxes, BoxMode, Instances

from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.data.agnostic import register_agnostic_dataset
from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.data.datasets import unregister_dataset
from bmc_detectron.engine import main
from bmc_detectron.evaluation import BMCCOCOEvaluator
from tests.helpers import CONFIGS, register_synthetic

AGNOSTIC = CONFIGS / "cpu" / "agnostic"


@pytest.fixture
def src(tmp_path, monkeypatch):
    """A 3-image synthetic marrow dataset 'agn_src'; merged jsons go to tmp_path/generated."""
    monkeypatch.setenv("BMC_DATASETS", str(tmp_path / "generated"))
    register_synthetic(tmp_path, "agn_src", 3, 64)
    yield tmp_path
    for name in ("agn_src", "agn_src_agnostic", "agn_dicts", "agn_dicts_agnostic"):
        unregister_dataset(name)


def _xyxy(rec):
    return [
        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in rec["annotations"]
    ]


def test_merged_dataset_keeps_boxes_with_one_class(src):
    name = register_agnostic_dataset("agn_src")
    assert name == "agn_src_agnostic"
    assert register_agnostic_dataset("agn_src") == register_agnostic_dataset(name) == name
    source, merged = DatasetCatalog.get("agn_src"), DatasetCatalog.get(name)
    assert len({a["category_id"] for r in source for a in r["annotations"]}) > 1
    assert {a["category_id"] for r in merged for a in r["annotations"]} == {0}
    assert [_xyxy(r) for r in merged] == [_xyxy(r) for r in source]
    assert [r["image_id"] for r in merged] == [r["image_id"] for r in source]
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["cell"] and meta.source_classes == MARROW_ABBRS
    assert Path(meta.json_file).parent == src / "generated" / "agnostic"
    data = json.loads(Path(meta.json_file).read_text())
    assert [c["id"] for c in data["categories"]] == [1]
    assert {a["category_id"] for a in data["annotations"]} == {1}
    # the source is untouched
    assert len(MetadataCatalog.get("agn_src").thing_classes) == 11


def test_coco_evaluator_uses_the_merged_ground_truth(src):
    name = register_agnostic_dataset("agn_src")
    dicts = DatasetCatalog.get(name)  # writes the merged json
    evaluator = BMCCOCOEvaluator(name, output_dir=str(src / "eval"))
    assert evaluator._coco_api.getCatIds() == [1]
    evaluator.reset()
    for rec in dicts:  # perfect class-0 detections: AP 100 only against merged ground truth
        inst = Instances((rec["height"], rec["width"]))
        inst.pred_boxes = Boxes(torch.tensor(_xyxy(rec), dtype=torch.float32))
        inst.scores = torch.ones(len(inst))
        inst.pred_classes = torch.zeros(len(inst), dtype=torch.int64)
        evaluator.process([{"image_id": rec["image_id"]}], [{"instances": inst}])
    results = evaluator.evaluate()["bbox"]
    assert results["AP"] == pytest.approx(100.0) and results["AP50-cell"] == pytest.approx(100.0)


def test_merged_json_follows_a_changed_source(src):
    name = register_agnostic_dataset("agn_src")
    before = sum(len(r["annotations"]) for r in DatasetCatalog.get(name))
    json_file = Path(MetadataCatalog.get("agn_src").json_file)
    data = json.loads(json_file.read_text())
    data["annotations"] = data["annotations"][1:]
    json_file.write_text(json.dumps(data))
    later = os.path.getmtime(MetadataCatalog.get(name).json_file) + 10
    os.utime(json_file, (later, later))
    assert sum(len(r["annotations"]) for r in DatasetCatalog.get(name)) == before - 1


def test_source_without_json_gives_merged_dicts(src):
    rec = {"file_name": "x.png", "image_id": 1, "height": 8, "width": 8}
    rec["annotations"] = [{"bbox": [1, 1, 3, 3], "bbox_mode": 1, "category_id": 1}]
    DatasetCatalog.register("agn_dicts", lambda: [rec])
    MetadataCatalog.get("agn_dicts").set(thing_classes=["a", "b"])
    name = register_agnostic_dataset("agn_dicts")
    assert MetadataCatalog.get(name).get("json_file") is None
    assert DatasetCatalog.get(name)[0]["annotations"][0]["category_id"] == 0
    assert rec["annotations"][0]["category_id"] == 1


def test_config_switch_replaces_datasets_and_needs_one_class():
    config = str(AGNOSTIC / "retinanet_R_18_full_agnostic_bccd_cpu.yaml")
    cfg = build_cfg(config)
    assert cfg.DATASETS.TRAIN == ("bccd_trainval_agnostic",)
    assert cfg.DATASETS.TEST == ("bccd_test_agnostic",)
    assert MetadataCatalog.get("bccd_test_agnostic").thing_classes == ["cell"]
    with pytest.raises(ConfigError, match="set MODEL.RETINANET.NUM_CLASSES 1 \\(it is 3\\)"):
        build_cfg(config, ["MODEL.RETINANET.NUM_CLASSES", 3])
    classifier = str(CONFIGS / "recognition" / "cell_classifier_R_18_pbc_cpu.yaml")
    with pytest.raises(ConfigError, match="CLASS_AGNOSTIC is for detectors"):
        build_cfg(classifier, ["BMC.DATA.CLASS_AGNOSTIC", True])
    # a saved config (already merged names) builds again
    again = build_cfg(config, ["DATASETS.TEST", "('bccd_test_agnostic',)"])
    assert again.DATASETS.TEST == ("bccd_test_agnostic",)


def test_train_net_trains_and_evaluates_a_class_agnostic_detector(src):
    out = src / "run"
    opts = "DATASETS.TRAIN ('agn_src',) DATASETS.TEST ('agn_src',) INPUT.MIN_SIZE_TRAIN (64,) "
    opts += "INPUT.MAX_SIZE_TRAIN 64 INPUT.MIN_SIZE_TEST 64 INPUT.MAX_SIZE_TEST 64 "
    opts += "SOLVER.IMS_PER_BATCH 2 SOLVER.MAX_ITER 2 SOLVER.WARMUP_ITERS 1 "
    opts += "MODEL.RETINANET.SCORE_THRESH_TEST 0.0 "  # detections from an untrained model
    opts += f"DATALOADER.NUM_WORKERS 0 OUTPUT_DIR {out}"
    config = str(AGNOSTIC / "retinanet_R_18_full_agnostic_synth_cpu.yaml")
    main(default_argument_parser().parse_args(["--config-file", config, *opts.split()]))
    metrics = json.loads((out / "inference" / "agn_src_agnostic" / "coco_metrics.json").read_text())
    assert metrics["dataset"] == "agn_src_agnostic"
    assert "AP50-cell" in metrics["bbox"] and "AP50-Prim" not in metrics["bbox"]
    assert metrics["bbox"]["AP"] is not None  # evaluated against the merged ground truth
