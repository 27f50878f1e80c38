"""The trainer refuses bad data before training starts, with messages naming the file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bmc_detectron.config import ConfigError, build_cfg, get_bmc_cfg
from bmc_detectron.data.checks import DatasetError
from bmc_detectron.data.classes import marrow_metadata
from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.data.synthetic import generate_dataset
from bmc_detectron.engine import BMCTrainer
from tests.helpers import CONFIGS, REPO

CPU = str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")


@pytest.fixture
def synth(tmp_path):
    json_file = generate_dataset(tmp_path, "train", 3, seed=0, height=64, width=64)
    register_coco_dataset("bad_train", json_file, tmp_path / "train", marrow_metadata())
    yield tmp_path
    unregister_dataset("bad_train")


def _cfg(*opts):
    return build_cfg(CPU, ["DATASETS.TRAIN", "('bad_train',)", "DATALOADER.NUM_WORKERS", 0, *opts])


def test_corrupt_image_fails_at_loader_build_time(synth):
    victim = synth / "train" / "000001.png"
    victim.write_bytes(victim.read_bytes()[:60])  # truncated PNG
    with pytest.raises(DatasetError, match="000001.png"):
        BMCTrainer.build_train_loader(_cfg())


def test_class_count_mismatch_is_reported(synth):
    with pytest.raises(ConfigError, match="11 classes but MODEL.RETINANET.NUM_CLASSES is 3"):
        BMCTrainer.build_train_loader(_cfg("MODEL.RETINANET.NUM_CLASSES", 3))


def test_unregistered_dataset_is_reported():
    cfg = build_cfg(CPU, ["DATASETS.TRAIN", "('no_such_set',)"])
    with pytest.raises(ConfigError, match="no_such_set.*not registered"):
        BMCTrainer.build_train_loader(cfg)


def test_train_net_prints_a_clear_error_for_an_unknown_key():
    proc = subprocess.run(
        [sys.executable, str(REPO / "train_net.py"), "--config-file", CPU, "MODEL.NOPE", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "error: command-line overrides: Non-existent key: MODEL.NOPE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mixed_precision_is_switched_off_on_cpu():
    cfg = build_cfg(str(REPO / "configs" / "retinanet_R_50_full_1x.yaml"), ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.DEVICE == "cpu" and not cfg.SOLVER.AMP.ENABLED
    raw = get_bmc_cfg()
    raw.merge_from_file(str(REPO / "configs" / "retinanet_R_50_full_1x.yaml"))
    assert raw.SOLVER.AMP.ENABLED  # the R-50 configs train in mixed precision on CUDA
