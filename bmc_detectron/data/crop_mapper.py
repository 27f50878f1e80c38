"""Samples of the cell classifier: one crop per annotated box of a detection dataset.

:func:`crop_records` turns detectron2 dataset dicts (one per image) into one record per
annotation; :class:`CellCropMapper` reads the image with detectron2's ``read_image`` and cuts the
crop with :func:`bmc_detectron.data.crops.crop_boxes`, the function the count pipeline uses on
detector boxes, so training and test crops agree. In training the box is jittered first
(``BMC.CLASSIFIER_AUG.BOX_JITTER``: detector boxes are never exact), then the crop gets the smear
augmentation (flips, quarter turns, stain jitter; ``BMC.CLASSIFIER_AUG``).
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from bmc_detectron.data.augment import smear_augmentations
from bmc_detectron.data.checks import DatasetError
from bmc_detectron.data.crops import crop_boxes

#: decoded images a mapper keeps (bytes): the 400 composite training fields take about 300 MB
CACHE_BYTES = 512 * 2**20


def crop_records(dicts: Sequence[dict], dataset_name: str, num_classes: int) -> List[dict]:
    """One record per (non-crowd) annotation of ``dicts``.

    Each record has ``file_name``, ``image_id``, ``height``, ``width``, ``box`` (XYXY pixels),
    ``label`` (the ``category_id``) and ``cells_in_image`` (the image's records). Raises
    :class:`DatasetError` naming the file for a class outside ``[0, num_classes)``, and naming
    the dataset when it has no box at all.
    """
    records = []
    for rec in dicts:
        first = len(records)
        for ann in rec.get("annotations", []):
            if ann.get("iscrowd", 0):
                continue
            label = ann.get("category_id")
            if not isinstance(label, numbers.Integral) or not 0 <= label < num_classes:
                raise DatasetError(
                    f"{rec.get('file_name')}: unknown class: category_id {label!r} is outside "
                    f"[0, {num_classes}) (MODEL.BMC.CLASSIFIER.NUM_CLASSES)"
                )
            mode = ann.get("bbox_mode", BoxMode.XYWH_ABS)
            box = BoxMode.convert(list(ann["bbox"]), mode, BoxMode.XYXY_ABS)
            records.append(
                {
                    "file_name": rec["file_name"],
                    "image_id": rec.get("image_id"),
                    "height": rec.get("height"),
                    "width": rec.get("width"),
                    "box": [float(v) for v in box],
                    "label": int(label),
                }
            )
        for r in records[first:]:
            r["cells_in_image"] = len(records) - first
    if not records:
        raise DatasetError(f"{dataset_name}: no annotated cells to crop (0 boxes)")
    return records


def jitter_box(box: Sequence[float], amount: float, rng: Optional[np.random.RandomState] = None):
    """A randomly moved and resized copy of a box, as a detector might have found it.

    Args:
        box: (4,) XYXY box.
        amount: the centre moves by up to ``amount`` times the box's width (x) and height (y);
            width and height are each scaled by a factor in ``[1 - amount, 1 + amount]``.
        rng: random state (default: numpy's global one, which detectron2 seeds per worker).

    Returns:
        (4,) float64 XYXY box.
    """
    rng = np.random if rng is None else rng
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    dx, dy, sw, sh = rng.uniform(-amount, amount, size=4)
    cx, cy = (x0 + x1) / 2 + dx * w, (y0 + y1) / 2 + dy * h
    w, h = w * (1 + sw), h * (1 + sh)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class CellCropMapper:
    """Maps a :func:`crop_records` record to the classifier's input.

    Returns ``{"image": (3, S, S) uint8 tensor in INPUT.FORMAT, "label": int, "file_name",
    "image_id", "box"}`` with S = ``MODEL.BMC.CLASSIFIER.CROP_SIZE``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        crop_size: int,
        crop_margin: float,
        image_format: str = "BGR",
        box_jitter: float = 0.0,
        augmentations: Sequence[T.Augmentation] = (),
        cache_bytes: int = CACHE_BYTES,
    ):
        """
        Args:
            is_train: jitter the box and augment the crop (else the exact box, no augmentation).
            crop_size, crop_margin: as :func:`bmc_detectron.data.crops.crop_boxes`.
            image_format: channel order of the crops (detectron2's ``INPUT.FORMAT``).
            box_jitter: see :func:`jitter_box` (training only).
            augmentations: applied to each crop in training.
            cache_bytes: decoded images of more than one cell (a record's ``cells_in_image``)
                are kept, least recently used first out, up to this many bytes: a field holds
                many cells, and decoding it again for each crop cost more than the classifier's
                step on the composite fields.
        """
        self.is_train = is_train
        self.crop_size, self.crop_margin = int(crop_size), float(crop_margin)
        self.image_format = image_format
        self.box_jitter = float(box_jitter) if is_train else 0.0
        self.augmentations = T.AugmentationList(list(augmentations) if is_train else [])
        self.cache_bytes = int(cache_bytes)
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._held = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, object]:
        clf, aug = cfg.MODEL.BMC.CLASSIFIER, cfg.BMC.CLASSIFIER_AUG
        return {
            "is_train": is_train,
            "crop_size": clf.CROP_SIZE,
            "crop_margin": clf.CROP_MARGIN,
            "image_format": cfg.INPUT.FORMAT,
            "box_jitter": aug.BOX_JITTER,
            "augmentations": smear_augmentations(aug, "BMC.CLASSIFIER_AUG") if is_train else [],
        }

    def _read(self, file_name: str, keep: bool) -> np.ndarray:
        if file_name in self._images:
            self._images.move_to_end(file_name)
            return self._images[file_name]
        try:
            image = utils.read_image(file_name, format=self.image_format)
        except Exception as e:  # PIL / OS errors of many types
            raise DatasetError(
                f"{file_name}: cannot read image ({type(e).__name__}: {e})"
            ) from None
        if not keep:
            return image
        self._images[file_name] = image
        self._held += image.nbytes
        while self._held > self.cache_bytes and len(self._images) > 1:
            self._held -= self._images.popitem(last=False)[1].nbytes
        return image

    def __call__(self, record: dict) -> dict:
        image = self._read(record["file_name"], record.get("cells_in_image", 2) > 1)
        box = np.asarray(record["box"], dtype=np.float64)
        if self.box_jitter > 0:
            box = jitter_box(box, self.box_jitter)
        crop = crop_boxes(image, box[None], self.crop_size, self.crop_margin)[0]
        aug_input = T.AugInput(crop)
        self.augmentations(aug_input)
        chw = np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))
        return {
            "image": torch.as_tensor(chw),
            "label": int(record["label"]),
            "file_name": record["file_name"],
            "image_id": record.get("image_id"),
            "box": [float(v) for v in record["box"]],
        }
