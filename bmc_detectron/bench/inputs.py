"""Inputs of the measurements: image records, resized latency inputs, random training batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import Boxes, Instances

from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.utils.io import list_images, write_png_atomic

#: Sides (px) of the random gt boxes: the range of cell sizes at the test resolution.
BOX_SIZES = (12.0, 96.0)
RECORD_KEYS = ("file_name", "image_id", "height", "width")


def default_input_size(cfg: CfgNode) -> Tuple[int, int]:
    """(MIN_SIZE_TEST, MAX_SIZE_TEST): the test size of a landscape image."""
    return int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST)


@dataclass(frozen=True)
class TimingInputs:
    """The images a latency measurement runs on and how often: ``num_images`` images (per model
    and round) of ``input_size`` (H, W; None: the config's test size) from the folder ``images``
    or else the registered ``dataset`` (neither: random images), ``rounds`` interleaved rounds
    after ``warmup`` untimed calls per model. With ``own_size`` (several models side by side,
    no ``input_size``) each model gets the images at its own config's test size, as its data
    loader would give them (models of different input resolutions compared at their cost)."""

    input_size: Tuple[int, int] | None = None
    images: str | None = None
    dataset: str | None = None
    num_images: int = 10
    rounds: int = 6
    warmup: int = 3
    own_size: bool = False

    def size(self, cfg: CfgNode) -> Tuple[int, int]:
        """``input_size``, else ``cfg``'s test size (:func:`default_input_size`)."""
        return tuple(self.input_size) if self.input_size else default_input_size(cfg)

    @property
    def source(self) -> str | None:
        """The image folder, else the dataset (None: random images)."""
        return self.images or self.dataset


def image_records(images: str | None, dataset: str | None) -> List[dict]:
    """detectron2 records (file_name, image_id, height, width) of the images of a folder
    (:data:`bmc_detectron.utils.io.IMAGE_SUFFIXES`) or, without one, of a registered dataset;
    [] when neither is given."""
    if images:
        files = list_images(images)
        if not files:
            raise FileNotFoundError(f"{images}: no images")
        out = []
        for i, path in enumerate(files):
            h, w = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2]
            out.append({"file_name": str(path), "image_id": i, "height": h, "width": w})
        return out
    if dataset:
        prepare_dataset(dataset)
        return [{k: r[k] for k in RECORD_KEYS} for r in DatasetCatalog.get(dataset)]
    return []


def random_image_folder(folder: Path, num: int, input_size: Tuple[int, int]) -> List[dict]:
    """Write ``num`` random-noise PNGs of ``input_size`` (H, W) to ``folder``; their records."""
    rng = np.random.default_rng(0)
    for i in range(num):
        write_png_atomic(folder / f"{i:04d}.png", rng.integers(0, 256, (*input_size, 3), np.uint8))
    return image_records(str(folder), None)


def latency_inputs(
    records: Sequence[dict], num: int, input_size: Tuple[int, int], image_format: str
) -> List[dict]:
    """``num`` model inputs of exactly ``input_size`` (H, W): the images of ``records`` (cycled)
    resized, or random images when ``records`` is empty."""
    h, w = input_size
    out = []
    g = torch.Generator().manual_seed(0)
    for i in range(num):
        if records:
            img = read_image(records[i % len(records)]["file_name"], format=image_format)
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            tensor = torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))
        else:
            tensor = (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8)
        out.append({"image": tensor, "height": h, "width": w})
    return out


def random_gt_boxes(
    num: int,
    height: int,
    width: int,
    generator: torch.Generator,
    sizes: Tuple[float, float] = BOX_SIZES,
) -> torch.Tensor:
    """(num, 4) XYXY boxes inside the image, sides uniform in ``sizes`` (clipped to the image)."""
    lo, hi = sizes
    wh = lo + (hi - lo) * torch.rand(num, 2, generator=generator)
    wh = torch.minimum(wh, torch.tensor([width - 1.0, height - 1.0]))
    xy = torch.rand(num, 2, generator=generator) * (torch.tensor([width, height]) - wh)
    return torch.cat([xy, xy + wh], dim=1)


def random_batch(
    num_images: int,
    height: int,
    width: int,
    num_gts: int,
    num_classes: int,
    seed: int = 0,
    box_sizes: Tuple[float, float] = BOX_SIZES,
) -> List[Dict[str, object]]:
    """Training inputs: random uint8 images of ``height x width`` with ``num_gts`` random gt
    boxes of random classes each."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(num_images):
        image = (torch.rand(3, height, width, generator=g) * 255).to(torch.uint8)
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(random_gt_boxes(num_gts, height, width, g, box_sizes))
        inst.gt_classes = torch.randint(0, num_classes, (num_gts,), generator=g)
        batch.append({"image": image, "instances": inst, "height": height, "width": width})
    return batch
