"""Test helpers shared by the test modules: paths, tiny configs, hand-built inputs.

Import them as ``from helpers import ...`` (pytest puts this folder on ``sys.path``); fixtures
live in ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import torch
from detectron2.structures import Boxes, Instances

import bmc_detectron  # noqa: F401  (registers the components)
from bmc_detectron.config import get_bmc_cfg

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def tiny_cfg(opts: Sequence = ()):
    """R-18, 32-channel neck, 1-conv head, small anchors: a model that runs in milliseconds."""
    cfg = get_bmc_cfg()
    cfg.merge_from_file(str(CONFIGS / "cpu" / "Base-BMC-RetinaNet-CPU.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.RESNETS.DEPTH",
            18,
            "MODEL.FPN.OUT_CHANNELS",
            32,
            "MODEL.BMC.NECK.SE_REDUCTION",
            4,
            "MODEL.RETINANET.NUM_CONVS",
            1,
            "MODEL.RETINANET.NUM_CLASSES",
            3,
            "MODEL.ANCHOR_GENERATOR.SIZES",
            [[8], [16], [32], [64], [128]],
            "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
            [[1.0]],
            *opts,
        ]
    )
    return cfg


def make_inputs(sizes: Sequence[int] = (64, 64), boxes: Sequence[List] = ((), ())) -> List[dict]:
    """Random images with the given gt boxes ([x0, y0, x1, y1, cls] rows; empty = no gt)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for size, bx in zip(sizes, boxes):
        img = (torch.rand(3, size, size, generator=g) * 255).to(torch.uint8)
        inst = Instances((size, size))
        t = torch.tensor([b[:4] for b in bx], dtype=torch.float32).reshape(-1, 4)
        inst.gt_boxes = Boxes(t)
        inst.gt_classes = torch.tensor([int(b[4]) for b in bx], dtype=torch.int64)
        out.append({"image": img, "instances": inst, "height": size, "width": size})
    return out
