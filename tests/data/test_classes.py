"""The class list: 11 trainable marrow classes (ids 0-10), Baso (11, the PBC classifier's 12th
output) and "Other" appended as id 12."""

from __future__ import annotations

import json

import cv2
import numpy as np

from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.data.classes import (
    KNOWN_ABBRS,
    KNOWN_CLASSES,
    KNOWN_COLORS,
    MARROW_ABBRS,
    MARROW_CLASSES,
    OTHER,
    coco_categories,
    marrow_metadata,
)
from bmc_detectron.data.convert import labelme_to_coco
from bmc_detectron.data.pbc import PBC_MARROW_CLASSES
from bmc_detectron.data.split import class_names
from bmc_detectron.deploy.sidecar import class_colors
from bmc_detectron.pipeline.drawing import UNCERTAIN_COLOR, class_info
from bmc_detectron.structures.differential import DEFAULT_LINEAGE
from tests.helpers import CONFIGS

MARROW_ORDER = [
    "Prim",
    "Lym",
    "Mono",
    "Plas",
    "Red",
    "Promy",
    "Myelo",
    "Late",
    "Rods",
    "Lobu",
    "Eosl",
]


def test_other_is_appended_last_and_marrow_ids_stay():
    assert MARROW_ABBRS == MARROW_ORDER  # public ids 0-10 unchanged
    assert KNOWN_CLASSES[: len(MARROW_CLASSES)] == MARROW_CLASSES
    assert KNOWN_ABBRS.index("Baso") == 11 == PBC_MARROW_CLASSES.index("Baso")
    assert KNOWN_ABBRS.index("Other") == 12 and KNOWN_CLASSES[-1] is OTHER
    assert len(set(KNOWN_ABBRS)) == len(KNOWN_ABBRS)
    assert OTHER.color not in [c.color for c in MARROW_CLASSES]
    assert OTHER.color != UNCERTAIN_COLOR and len(set(KNOWN_COLORS)) == len(KNOWN_COLORS)


def test_models_and_datasets_keep_the_11_marrow_classes():
    assert len(marrow_metadata()["thing_classes"]) == 11
    assert [c["name"] for c in coco_categories()] == MARROW_ORDER
    for config in (
        "Base-BMC-RetinaNet.yaml",
        "recognition/cell_classifier_R_18_synth_cpu.yaml",
    ):
        cfg = get_bmc_cfg()
        cfg.merge_from_file(str(CONFIGS / config))
        n = (
            cfg.MODEL.BMC.CLASSIFIER.NUM_CLASSES
            if "classifier" in config
            else cfg.MODEL.RETINANET.NUM_CLASSES
        )
        assert n == len(MARROW_CLASSES) == 11, config
    assert "Other" not in DEFAULT_LINEAGE["myeloid"] + DEFAULT_LINEAGE["erythroid"]


def test_other_has_its_name_and_colour_on_the_page_and_in_reports():
    info = class_info(["Prim", "Other", "Baso", "xyz"])
    assert info["Other"] == (OTHER.name, OTHER.color)
    assert info["Prim"] == (MARROW_CLASSES[0].name, MARROW_CLASSES[0].color)
    assert info["Baso"][0] == "basophil" and info["xyz"][0] == "xyz"
    assert class_colors(["Lym", "Other"]) == [MARROW_CLASSES[1].color, OTHER.color]


def test_annotation_tools_know_other(tmp_path):
    assert class_names({"name": "Other"}) == (OTHER.name, "Other")
    assert class_names({"name": OTHER.name}) == (OTHER.name, "Other")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    shape = {"label": "Other", "points": [[1, 1], [9, 9]], "shape_type": "rectangle"}
    labelme = {"shapes": [shape], "imagePath": "a.png", "imageWidth": 32, "imageHeight": 32}
    (tmp_path / "a.json").write_text(json.dumps(labelme))
    coco = labelme_to_coco(tmp_path, tmp_path, classes=["Lym", "Other"])
    assert coco["categories"][1] == {
        "id": 2,
        "name": "Other",
        "supercategory": "cell",
        "full_name": OTHER.name,
    }
