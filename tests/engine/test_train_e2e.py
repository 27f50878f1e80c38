"""End to end: train on tiny synthetic smears, evaluate with COCOEvaluator, resume, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from bmc_detectron.config import build_cfg
from bmc_detectron.data.datasets import unregister_dataset
from bmc_detectron.data.synthetic import generate_dataset
from bmc_detectron.engine import BMCTrainer
from bmc_detectron.tools import visualize as demo
from tests.helpers import CONFIGS

ITERS = 160
AP50_FLOOR = 60.0  # an untrained model scores ~0; measured 98.5 after 160 iterations (1 thread)


def register_cell_dataset(name: str, json_file, image_root) -> None:
    """The synthetic smears with every class merged into one "cell" class (class-agnostic
    detection, the first stage of detect-then-recognise), learnable in a few CPU seconds."""

    def load():
        dicts = load_coco_json(str(json_file), str(image_root))
        for d in dicts:
            for a in d["annotations"]:
                a["category_id"] = 0
        return dicts

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(thing_classes=["cell"], evaluator_type="coco")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    json_file = generate_dataset(root, "train", 8, seed=3, height=128, width=128)
    register_cell_dataset("e2e_train", json_file, root / "train")
    out = tmp_path_factory.mktemp("out")
    cfg = build_cfg(
        str(CONFIGS / "cpu" / "retinanet_R_18_PAN_SE_cpu.yaml"),
        [
            "MODEL.RETINANET.NUM_CLASSES",
            1,
            "DATASETS.TRAIN",
            "('e2e_train',)",
            "DATASETS.TEST",
            "('e2e_train',)",
            "INPUT.MIN_SIZE_TRAIN",
            "(128,)",
            "INPUT.MAX_SIZE_TRAIN",
            128,
            "INPUT.MIN_SIZE_TEST",
            128,
            "INPUT.MAX_SIZE_TEST",
            128,
            "MODEL.FPN.OUT_CHANNELS",
            64,
            "MODEL.RESNETS.NORM",
            "GN",
            "SOLVER.IMS_PER_BATCH",
            4,
            "SOLVER.BASE_LR",
            0.01,
            "SOLVER.WARMUP_ITERS",
            20,
            "SOLVER.MAX_ITER",
            ITERS,
            "SOLVER.STEPS",
            f"({ITERS - 20},)",
            "SOLVER.CHECKPOINT_PERIOD",
            ITERS // 2,
            "DATALOADER.NUM_WORKERS",
            0,
            "OUTPUT_DIR",
            str(out),
            "BMC.AUG.ROT90",
            False,
            "BMC.AUG.VFLIP",
            False,
        ],
    )
    trainer = BMCTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    yield cfg, out, root, BMCTrainer.test(cfg, trainer.model)
    unregister_dataset("e2e_train")


def _losses(out: Path):
    rows = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
    return [r["total_loss"] for r in rows if "total_loss" in r]


def test_loss_falls_and_ap_clears_the_floor(tiny_run):
    cfg, out, _, results = tiny_run
    losses = _losses(out)
    assert len(losses) >= 4 and losses[-1] < 0.5 * losses[0], losses
    bbox = results["bbox"]
    assert bbox["AP50"] > AP50_FLOOR, bbox
    saved = json.loads((out / "inference" / "e2e_train" / "coco_metrics.json").read_text())
    assert saved["bbox"]["AP"] == pytest.approx(bbox["AP"])
    assert saved["bbox"]["AP50-cell"] == pytest.approx(bbox["AP50"])


def test_training_writes_the_data_profile_beside_the_weights(tiny_run):
    _, out, _, _ = tiny_run
    profile = json.loads((out / "training_profile.json").read_text())
    assert profile["image_size"] == [128, 128] and profile["source"]["datasets"] == ["e2e_train"]
    assert profile["rbc_diameter_px"] > 0 and len(profile["reinhard"]["mean"]) == 3


def test_resume_continues_from_the_last_checkpoint(tiny_run):
    cfg, out, _, _ = tiny_run
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = ITERS + 2
    trainer = BMCTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == ITERS  # picked up model_final / last_checkpoint
    trainer.train()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"


def _train(cfg, out: Path, max_iter: int, resume: bool) -> List[str]:
    cfg = cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = str(out), max_iter, (max_iter - 1,)
    cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.WARMUP_ITERS = 1, 1
    cfg.BMC.CHECKPOINTS_TO_KEEP = 2
    cfg.BMC.DATA.PROFILE_IMAGES = 0
    trainer = BMCTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return sorted(p.name for p in out.glob("model_*.pth"))


def test_only_the_newest_periodic_checkpoints_are_kept(tiny_run, tmp_path):
    cfg = tiny_run[0]
    # A checkpoint after every iteration, 2 kept; model_final.pth always stays.
    kept = ["model_0000002.pth", "model_0000003.pth", "model_final.pth"]
    assert _train(cfg, tmp_path, 4, resume=False) == kept
    # Resumed, the earlier run's checkpoints count too: they go first.
    kept = ["model_0000004.pth", "model_0000005.pth", "model_final.pth"]
    assert _train(cfg, tmp_path, 6, resume=True) == kept
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"


def test_demo_writes_drawings_and_json(tiny_run, tmp_path):
    cfg, out, root, _ = tiny_run
    images = sorted((root / "train").glob("*.png"))[:2]
    code = demo.main(
        [
            "--config-file",
            str(CONFIGS / "cpu" / "retinanet_R_18_PAN_SE_cpu.yaml"),
            "--input",
            str(images[0]),
            str(root / "train" / "00000[1].png"),
            "--output",
            str(tmp_path / "vis"),
            "--confidence-threshold",
            "0.2",
            *[str(x) for x in _cfg_overrides(cfg, out)],
        ]
    )
    assert code == 0
    payload = json.loads((tmp_path / "vis" / "detections.json").read_text())
    assert [Path(p["file"]).name for p in payload["images"]] == [p.name for p in images]
    assert all((tmp_path / "vis" / f"{p.stem}_det.png").is_file() for p in images)
    assert any(img["detections"] for img in payload["images"])


def _cfg_overrides(cfg, out: Path):
    return [
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
        "MODEL.FPN.OUT_CHANNELS",
        64,
        "MODEL.RESNETS.NORM",
        "GN",
        "INPUT.MIN_SIZE_TEST",
        128,
        "INPUT.MAX_SIZE_TEST",
        128,
        "DATASETS.TEST",
        "('e2e_train',)",
        "MODEL.RETINANET.NUM_CLASSES",
        1,
    ]


def test_demo_reports_unreadable_images(tiny_run, tmp_path):
    cfg, out, root, _ = tiny_run
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    code = demo.main(
        [
            "--config-file",
            str(CONFIGS / "cpu" / "retinanet_R_18_PAN_SE_cpu.yaml"),
            "--input",
            str(bad),
            str(root / "train" / "000000.png"),
            "--output",
            str(tmp_path / "vis"),
            *[str(x) for x in _cfg_overrides(cfg, out)],
        ]
    )
    assert code == 1
    payload = json.loads((tmp_path / "vis" / "detections.json").read_text())
    assert payload["failed"][0]["file"] == str(bad)
    assert len(payload["images"]) == 1
    assert demo.main(["--config-file", "x.yaml", "--input", "nope/*.png", "--output", "o"]) == 2
