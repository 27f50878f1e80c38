"""The training data's profile: statistics, file round trip, the ``estimate_scale --dataset``
command, the trainer's hook, where the count finds it."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bmc_detectron.config import build_cfg
from bmc_detectron.pipeline.model_scale import locate_profile
from bmc_detectron.smear import PROFILE_FILE, TrainingProfile
from bmc_detectron.smear.profile import box_diameters, red_cell_class, sample_indices
from bmc_detectron.tools import estimate_scale
from tests.helpers import CONFIGS
from tests.pipeline.helpers import smear_bgr, write_profile

DET_CONFIG = str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> TrainingProfile:
    folder = tmp_path_factory.mktemp("profile")
    write_profile(folder)
    return TrainingProfile.load(folder / PROFILE_FILE)


def test_profile_round_trip_and_dataset_statistics(tmp_path, profile):
    again = TrainingProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    again.save(tmp_path / PROFILE_FILE)
    for p in (again, TrainingProfile.load(tmp_path / PROFILE_FILE)):
        assert p.to_dict()["ood"] == profile.to_dict()["ood"] and p.image_size == (256, 256)
        assert p.microns_per_pixel == 0.2 and p.reinhard == profile.reinhard
    assert 28 < profile.rbc_diameter_px < 40  # synthetic red cells are 14-18 px at scale 1
    assert sample_indices(10, 4) == [0, 3, 6, 9] and sample_indices(3, 0) == [0, 1, 2]
    assert red_cell_class(["WBC", "RBC", "Platelets"]) == 1 and red_cell_class(["cell"]) is None
    boxes = np.array([[0, 5, 20, 25], [10, 10, 30, 32], [40, 40, 49, 60]])
    np.testing.assert_allclose(box_diameters(boxes, 64, 64), [22, 20])
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="bad.json"):
        TrainingProfile.load(tmp_path / "bad.json")


def test_profile_command_and_red_cell_boxes(tmp_path, capsys):
    from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset

    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    images, anns = [], []
    for i in range(3):
        cv2.imwrite(str(root / "img" / f"{i}.png"), smear_bgr(i, 120, 1.0))
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 120, "width": 120})
        for k in range(3):  # red-cell boxes of 16 px, away from the border
            x = 10 + 30 * k
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1})
            anns[-1].update(bbox=[x, 20, 16, 15], area=240, iscrowd=0)
    coco = {"images": images, "annotations": anns}
    coco["categories"] = [{"id": 1, "name": "RBC"}, {"id": 2, "name": "WBC"}]
    (root / "ann.json").write_text(json.dumps(coco))
    register_coco_dataset("scale_profile_tiny", root / "ann.json", root / "img", {})
    out = tmp_path / "model" / PROFILE_FILE
    try:
        argv = ["--dataset", "scale_profile_tiny", "--output", str(out)]
        assert estimate_scale.main([*argv, "--microns-per-pixel", "0.25"]) == 0
    finally:
        unregister_dataset("scale_profile_tiny")
    profile = TrainingProfile.load(out)
    assert profile.rbc_box_diameter_px == 16.0 and profile.rbc_class == "RBC"
    assert profile.microns_per_pixel == 0.25 and profile.source["images_measured"] == 3
    assert "3 of 3 images" in capsys.readouterr().out
    assert estimate_scale.main(["--dataset", "scale_profile_tiny"]) == 2  # no --output


def test_trainer_writes_the_profile_beside_the_weights(tmp_path):
    from bmc_detectron.data.classes import marrow_metadata
    from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
    from bmc_detectron.data.synthetic import generate_dataset
    from bmc_detectron.engine.trainer import write_training_profile

    json_file = generate_dataset(tmp_path / "d", "train", 2, seed=0, height=96, width=96)
    register_coco_dataset(
        "scale_train_tiny", json_file, tmp_path / "d" / "train", marrow_metadata()
    )
    opts = ["DATASETS.TRAIN", "('scale_train_tiny',)", "OUTPUT_DIR", str(tmp_path / "out")]
    opts += ["BMC.DATA.MICRONS_PER_PIXEL", "0.3"]
    try:
        path = write_training_profile(build_cfg(DET_CONFIG, opts))
        off = write_training_profile(build_cfg(DET_CONFIG, [*opts, "BMC.DATA.PROFILE_IMAGES", "0"]))
    finally:
        unregister_dataset("scale_train_tiny")
    assert path == tmp_path / "out" / PROFILE_FILE and off is None
    profile = TrainingProfile.load(path)
    assert profile.microns_per_pixel == 0.3 and profile.image_size == (96, 96)


def test_locate_profile_prefers_the_explicit_file(tmp_path, profile):
    beside = tmp_path / "m"
    beside.mkdir()
    profile.save(beside / PROFILE_FILE)
    assert locate_profile(None, str(beside / "w.pth"))[1] == str(beside / PROFILE_FILE)
    assert locate_profile(None, str(tmp_path / "w.pth")) == (None, None)
    meta = type("D", (), {"meta": {"training_profile": profile.to_dict()}})()
    found, where = locate_profile(None, None, str(tmp_path / "d.onnx"), meta)
    assert found.to_dict() == profile.to_dict() and "sidecar" in where
    with pytest.raises(FileNotFoundError):
        locate_profile(str(tmp_path / "missing.json"))
