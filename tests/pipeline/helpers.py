"""Stand-ins for the counting pipeline's tests: disc fields, a disc detector, a colour classifier.

The detector finds the discs *visible* in the image it is given (connected components of the
non-background pixels), so on a tile it returns each disc's box clipped to the tile: exactly what
the tiling merge has to undo. The classifier calls a crop's class from the colour at its centre.
Synthetic smears and a training profile of them serve the scale and stain tests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch

from bmc_detectron.data.synthetic import generate_image
from bmc_detectron.pipeline import CellClassifier, Detections
from bmc_detectron.smear import PROFILE_FILE, TrainingProfile, profile_from_records
from bmc_detectron.smear.ranges import TrainingRanges
from bmc_detectron.smear.stain import ReinhardTarget

BACKGROUND = 235
# BGR colours of the stand-in classes: the dominant channel is the class index.
CLASS_COLORS = {"A": (200, 40, 40), "B": (40, 200, 40), "C": (40, 40, 200)}


def disc_field(
    height: int, width: int, discs: Sequence[Tuple[float, float, float, str]]
) -> Tuple[np.ndarray, np.ndarray]:
    """A BGR field with filled discs (cx, cy, r, class); returns it and each disc's true box.

    True boxes are the discs' pixel extents in XYXY with exclusive ends, as the detector reports.
    """
    image = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    boxes = []
    for cx, cy, r, cls in discs:
        mask = np.zeros((height, width), dtype=np.uint8)
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, thickness=-1)
        image[mask > 0] = CLASS_COLORS.get(cls, (90, 90, 90))
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return image, np.array(boxes, dtype=np.float32).reshape(-1, 4)


class DiscDetector:
    """Class-agnostic stand-in detector: the boxes of the connected disc blobs it sees."""

    class_names = ["cell"]

    def __init__(self, score: float = 0.9) -> None:
        self.score = score
        self.calls: List[Tuple[int, int]] = []

    def __call__(self, image: np.ndarray) -> Detections:
        self.calls.append(image.shape[:2])
        mask = (np.abs(image.astype(np.int16) - BACKGROUND).max(axis=2) > 20).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:]]
        return Detections(boxes, [self.score] * (n - 1), [0] * (n - 1))


# the stand-in of the scale tests was "trained" on discs this wide (px in its input)
TRAINED_PX = 30.0


class SelectiveDetector:
    """Finds the disc blobs whose size in its input is within [low, high] px, scoring 1 at
    ``TRAINED_PX`` and 0.5 at the edges of a +-10 px band (lower beyond it), or ``score``: as a
    trained detector finds cells only near the size it was trained at."""

    min_size = 0
    class_names = ["cell"]

    def __init__(self, low: float = 20.0, high: float = 40.0, score: float = 0.0) -> None:
        self.low, self.high, self.score = low, high, score
        self.inputs: list = []

    def __call__(self, image: np.ndarray) -> Detections:
        self.inputs.append(image.shape[:2])
        mask = (np.abs(image.astype(np.int16) - BACKGROUND).max(axis=2) > 60).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes, scores = [], []
        for x, y, w, h, _ in stats[1:]:
            size = math.sqrt(w * h)
            if self.low <= size <= self.high:
                boxes.append([x, y, x + w, y + h])
                peaked = max(0.05, 1.0 - 0.05 * abs(size - TRAINED_PX))
                scores.append(self.score or peaked)
        return Detections(boxes, scores, [0] * len(boxes))


# the pixel size of the scale tests' training images
MODEL_MPP = 0.2


def probe_profile() -> TrainingProfile:
    """Training images of 480 px at :data:`MODEL_MPP` whose cells were :data:`TRAINED_PX`
    across (no red cells measured)."""
    ranges = TrainingRanges(lab_mean=[], lab_std=[], rbc_diameter_px=float("nan"))
    profile = TrainingProfile(
        ranges,
        ReinhardTarget((0, 0, 0), (1, 1, 1)),
        image_size=(480, 480),
        microns_per_pixel=MODEL_MPP,
    )
    profile.cell_diameter_px = {"n": 100, "median": TRAINED_PX}
    return profile


def disc_fields(diameters: Sequence[float], n: int = 4, size: int = 480) -> list:
    """``n`` fields of discs with the given diameters (cycled over a grid), jittered by seed."""
    fields = []
    step = int(max(diameters) * 1.6)
    for seed in range(n):
        rng = np.random.default_rng(seed)
        discs, i = [], 0
        for cy in range(step // 2, size - step // 2, step):
            for cx in range(step // 2, size - step // 2, step):
                r = diameters[i % len(diameters)] / 2
                jx, jy = rng.integers(-3, 4, 2)
                discs.append((cx + jx, cy + jy, r, "A"))
                i += 1
        fields.append(disc_field(size, size, discs)[0])
    return fields


class ChannelModel(torch.nn.Module):
    """``predict_crops``: softmax over the centre pixel's channels (3 classes); records calls.
    ``predict_logits``: the channels / temperature (energy 5.6 for a grey (90, 90, 90) centre,
    10.0 for a class colour)."""

    def __init__(self, temperature: float = 20.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.batches: List[torch.Tensor] = []

    def predict_logits(self, crops: torch.Tensor) -> torch.Tensor:
        assert crops.dtype == torch.uint8 and crops.ndim == 4 and crops.shape[1] == 3
        self.batches.append(crops.clone())
        s = crops.shape[-1]
        return crops[:, :, s // 2, s // 2].float() / self.temperature

    def predict_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.predict_logits(crops), dim=1)


def channel_classifier(input_format: str = "BGR", crop_size: int = 16) -> CellClassifier:
    """A :class:`CellClassifier` around :class:`ChannelModel` (classes A, B, C in BGR order)."""
    names = ["A", "B", "C"] if input_format == "BGR" else ["C", "B", "A"]
    return CellClassifier(
        ChannelModel(),
        names,
        crop_size=crop_size,
        crop_margin=0.25,
        input_format=input_format,
        identity={"weights_sha256": "stand-in"},
    )


def save_random_detector(path: Path, opts: Sequence[str] = ()) -> Path:
    """Weights of a randomly initialised ``retinanet_R_18_FPN_cpu`` detector, as a .pth."""
    from detectron2.modeling import build_model

    from bmc_detectron.config import build_cfg
    from tests.helpers import CONFIGS

    torch.manual_seed(0)
    cfg = build_cfg(
        str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml"), ["MODEL.DEVICE", "cpu", *opts]
    )
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


# Synthetic smears drawn at twice the generator's scale: red cells about 33 px wide (at 17 px
# the classical estimate loses about a pixel to the blurred cell edge, 6 % of the diameter).
SCALE = 2.0


def smear_bgr(seed: int, size: int = 256, scale: float = SCALE) -> np.ndarray:
    """A square synthetic smear (BGR) drawn at ``scale``."""
    rgb = generate_image(np.random.default_rng(seed), size, size, (3, 6), scale)[0]
    return np.ascontiguousarray(rgb[:, :, ::-1])


def write_profile(folder: Path, n: int = 12, mpp: float | None = 0.2) -> TrainingProfile:
    """A profile of ``n`` synthetic 256 px training smears, saved in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        path = folder / f"train{i}.png"
        cv2.imwrite(str(path), smear_bgr(100 + i))
        records.append({"file_name": str(path), "height": 256, "width": 256})
    profile = profile_from_records(records, max_images=n, microns_per_pixel=mpp)
    profile.save(folder / PROFILE_FILE)
    return profile
