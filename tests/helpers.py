"""Test helpers shared by the test modules: paths, tiny configs, hand-built inputs.

Import them as ``from helpers import ...`` (pytest puts this folder on ``sys.path``); fixtures
live in ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Sequence, Tuple, Union

import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes, Instances
from torch.utils._python_dispatch import TorchDispatchMode

import bmc_detectron  # noqa: F401  (registers the components)
from bmc_detectron.config import get_bmc_cfg
from bmc_detectron.modeling.assigners import AnchorLayout

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


def sgd_steps(model, batch: List[dict], steps: int, lr: float = 0.01) -> List[float]:
    """Train ``model`` on one batch for ``steps`` SGD steps; the total loss of each step. Losses
    are normalised by each step's own positive count (not detectron2's slow EMA of it, which
    starts at 100), so successive steps compare; every loss must come out float32."""
    from detectron2.utils.events import EventStorage

    if hasattr(model, "_ema_update"):
        model._ema_update = lambda name, value, *args, **kwargs: value
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    history = []
    model.train()
    with EventStorage():
        for _ in range(steps):
            losses = model(batch)
            assert {v.dtype for v in losses.values()} == {torch.float32}
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.item())
    return history


# ---------------------------------------------------------------- assigner layouts and cases

#: a zero-area prediction far away: IoU 0 with every gt
FAR = [500.0, 500.0, 500.0, 500.0]


def row_layout(n: int = 8, stride: int = 10) -> AnchorLayout:
    """n square anchors of side ``stride`` centred at x = 5, 15, ..., y = 5 (one level, A = 1)."""
    xs = torch.arange(n, dtype=torch.float32) * stride + stride / 2
    boxes = torch.stack([xs - 5, torch.zeros(n), xs + 5, torch.full((n,), 10.0)], dim=1)
    return AnchorLayout(boxes, [n], 1, [stride])


def square_grid_layout(side: int = 8, stride: float = 10.0) -> AnchorLayout:
    """side x side anchors of side ``stride`` centred at stride/2, 3 stride/2, ... in x and y,
    row-major (one level, A = 1)."""
    return grid_layout([(stride, side)], [stride])


def grid_layout(
    grids: Sequence[Tuple[float, int]], sizes_per_level: Sequence[Union[float, Sequence[float]]]
) -> AnchorLayout:
    """Square anchors on n x n grids, level after level, in detectron2's (H, W, A) order.

    Args:
        grids: [(stride, n)] of each level; location (i, j) of a level of stride s is centred at
            (s j + s / 2, s i + s / 2), and anchor index inside the level is (i n + j) A + a.
        sizes_per_level: each level's anchor side, or its A anchor sides (A the same on every
            level).
    """
    boxes, num_loc = [], 1
    for (stride, n), sizes in zip(grids, sizes_per_level):
        sides = torch.tensor(sizes if isinstance(sizes, (tuple, list)) else [sizes]).float()
        num_loc = len(sides)
        c = (torch.arange(n, dtype=torch.float32) + 0.5) * stride
        ys, xs = torch.meshgrid(c, c, indexing="ij")
        ctr = torch.stack([xs.flatten(), ys.flatten()], dim=1)[:, None, :]  # (n * n, 1, 2)
        half = sides[None, :, None] / 2  # (1, A, 1)
        boxes.append(torch.cat([ctr - half, ctr + half], dim=2).reshape(-1, 4))
    counts = [n * n * num_loc for _, n in grids]
    return AnchorLayout(torch.cat(boxes), counts, num_loc, [int(s) for s, _ in grids])


def small_layout(a1: Sequence[float] = (16,), a2: Sequence[float] = (32,)) -> AnchorLayout:
    """Two levels: stride 8 on a 4x4 grid (anchor sides ``a1``), stride 16 on a 2x2 grid (``a2``).

    With A = 1 the level-0 anchor at column j, row i is 4 i + j (centres 4, 12, 20, 28) and the
    level-1 anchors are 16 + 2 i + j (centres 8, 24)."""
    return grid_layout([(8, 4), (16, 2)], [tuple(a1), tuple(a2)])


def d2_layout(size: int = 320) -> AnchorLayout:
    """detectron2's RetinaNet anchors (9 per location, P3-P7) of a size x size image."""
    strides = [8, 16, 32, 64, 128]
    gen = DefaultAnchorGenerator(
        sizes=[[s * 4, s * 5, s * 6] for s in strides],
        aspect_ratios=[[0.5, 1.0, 2.0]],
        strides=strides,
        offset=0.0,
    )
    feats = [torch.zeros(1, 1, -(-size // s), -(-size // s)) for s in strides]
    boxes = [b.tensor for b in gen(feats)]
    return AnchorLayout(torch.cat(boxes), [len(b) for b in boxes], 9, strides)


def random_image(
    layout: AnchorLayout, num_gt: int, num_classes: int = 11, seed: int = 0
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gt_boxes (G, 4), gt_classes (G,), logits (R, K), decoded boxes (R, 4)): random gts of
    sides 20-70 px in [0, 320]^2, random logits, and the anchors jittered by 6 px as predictions.
    """
    g = torch.Generator().manual_seed(seed)
    r = len(layout.boxes)
    xy = torch.rand(num_gt, 2, generator=g) * 250
    gt = torch.cat([xy, xy + 20 + torch.rand(num_gt, 2, generator=g) * 50], dim=1)
    classes = torch.randint(0, num_classes, (num_gt,), generator=g)
    logits = torch.randn(r, num_classes, generator=g)
    boxes = layout.boxes + torch.randn(r, 4, generator=g) * 6
    return gt, classes, logits, boxes


def check_valid(result, num_anchors: int, num_gt: int) -> None:
    """An assigner's result has the contract's dtypes and shapes, labels in {0, 1}, valid gts."""
    assert result.labels.dtype == torch.int8 and result.matched_idxs.dtype == torch.int64
    assert result.labels.shape == (num_anchors,) == result.matched_idxs.shape
    assert set(result.labels.unique().tolist()) <= {0, 1}
    assert int(result.matched_idxs.min()) >= 0 and int(result.matched_idxs.max()) < num_gt


class OpCounter(TorchDispatchMode):
    """Counts the aten ops run inside it and the largest number of elements any of them returns.

    Op counts replace wall-clock limits: an assigner whose op count does not grow with the number
    of gts has no Python loop over gts, whatever the machine's load.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def op_count(fn: Callable[..., object], *args: object) -> int:
    """Number of aten ops ``fn(*args)`` runs (after one warm-up call)."""
    fn(*args)
    with OpCounter() as counter:
        fn(*args)
    return counter.ops


def register_synthetic(root: Path, name: str, num_images: int = 3, size: int = 64) -> Path:
    """Generate ``num_images`` synthetic marrow smears under ``root`` and register them as
    ``name`` (11 marrow classes); returns the json. Unregister with ``unregister_dataset``."""
    from bmc_detectron.data.classes import marrow_metadata
    from bmc_detectron.data.datasets import register_coco_dataset
    from bmc_detectron.data.synthetic import generate_dataset

    json_file = generate_dataset(root, name, num_images, seed=0, height=size, width=size)
    register_coco_dataset(name, json_file, root / name, marrow_metadata())
    return json_file


def pyramid_features(
    strides: Sequence[int], size: Tuple[int, int] = (64, 64), channels: int = 4
) -> List[torch.Tensor]:
    """One image's random (1, C, H / s, W / s) maps per stride (seeded: the same each call)."""
    torch.manual_seed(1)
    return [torch.randn(1, channels, size[0] // s, size[1] // s) for s in strides]


def detections(boxes, scores, classes, size: Tuple[int, int] = (64, 64)):
    """An image's detections (``pred_boxes``, ``scores``, ``pred_classes``) from plain lists."""
    det = Instances(size)
    det.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    det.scores = torch.tensor(scores)
    det.pred_classes = torch.tensor(classes)
    return det
