"""Helpers of the analysis tests: the tiny CPU model's overrides and a tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset
from bmc_detectron.data.synthetic import generate_dataset

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = str(REPO / "configs" / "cpu" / "retinanet_R_18_FPN_cpu.yaml")

#: overrides that shrink the R-18 CPU config to a model that runs in a blink at 128 px
TINY = {
    "MODEL.DEVICE": "cpu",
    "INPUT.MIN_SIZE_TEST": "128",
    "INPUT.MAX_SIZE_TEST": "128",
    "MODEL.FPN.OUT_CHANNELS": "32",
    "MODEL.RETINANET.NUM_CONVS": "1",
    "MODEL.RETINANET.NUM_CLASSES": "11",
    "DATALOADER.NUM_WORKERS": "0",
    "MODEL.RETINANET.SCORE_THRESH_TEST": "0.0",
    "TEST.DETECTIONS_PER_IMAGE": "30",
}


def tiny_opts() -> List[str]:
    """:data:`TINY` as a KEY VALUE list."""
    return [item for pair in TINY.items() for item in pair]


def register_tiny_synth(root: Path, name: str, seed: int = 3) -> Tuple[str, Path]:
    """Two 96 x 96 synthetic smears under ``root``, registered as COCO dataset ``name``."""
    json_file = generate_dataset(root, "test", 2, seed=seed, height=96, width=96)
    unregister_dataset(name)
    register_coco_dataset(name, json_file, root / "test")
    return name, json_file
