"""Training augmentation for stained smears: flips, 90-degree rotations and stain jitter.

Smears have no canonical orientation, so every flip and quarter turn is a valid sample; brightness,
contrast and saturation jitter imitate staining and illumination differences between slides.
"""

from __future__ import annotations

from typing import List

import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from bmc_detectron.smear.stain import stain_jitter_augmentations


class Rot90Transform(T.Transform):
    """Rotate by ``k`` quarter turns counter-clockwise (exact, no interpolation)."""

    def __init__(self, h: int, w: int, k: int):
        """
        Args:
            h, w: size of the input image.
            k: number of counter-clockwise quarter turns, 1..3.
        """
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k, axes=(0, 1)))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        x, y = coords[:, 0].copy(), coords[:, 1].copy()
        if self.k == 1:
            coords[:, 0], coords[:, 1] = y, self.w - x
        elif self.k == 2:
            coords[:, 0], coords[:, 1] = self.w - x, self.h - y
        elif self.k == 3:
            coords[:, 0], coords[:, 1] = self.h - y, x
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def inverse(self) -> T.Transform:
        h, w = (self.w, self.h) if self.k % 2 else (self.h, self.w)
        return Rot90Transform(h, w, (4 - self.k) % 4)


class RandomRot90(T.Augmentation):
    """Rotate by 0, 90, 180 or 270 degrees, chosen uniformly."""

    def get_transform(self, image: np.ndarray) -> T.Transform:
        k = int(np.random.randint(4))
        if k == 0:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        return Rot90Transform(h, w, k)


def _jitter(aug_cls, limits, key: str) -> List[T.Augmentation]:
    if len(limits) == 0:
        return []
    if len(limits) != 2 or not 0 <= limits[0] <= limits[1]:
        raise ValueError(f"{key}: expected [] or [low, high] with 0 <= low <= high")
    return [aug_cls(float(limits[0]), float(limits[1]))]


def smear_augmentations(aug, prefix: str = "BMC.AUG") -> List[T.Augmentation]:
    """Flips, quarter turns and stain jitter from a config node with the keys of ``BMC.AUG``
    (``HFLIP``, ``VFLIP``, ``ROT90``, ``BRIGHTNESS``, ``CONTRAST``, ``SATURATION``).

    ``prefix`` names the node in error messages (``BMC.CLASSIFIER_AUG`` for the cell crops).
    """
    augs: List[T.Augmentation] = []
    if aug.HFLIP:
        augs.append(T.RandomFlip(prob=0.5, horizontal=True, vertical=False))
    if aug.VFLIP:
        augs.append(T.RandomFlip(prob=0.5, horizontal=False, vertical=True))
    if aug.ROT90:
        augs.append(RandomRot90())
    augs += _jitter(T.RandomBrightness, aug.BRIGHTNESS, f"{prefix}.BRIGHTNESS")
    augs += _jitter(T.RandomContrast, aug.CONTRAST, f"{prefix}.CONTRAST")
    augs += _jitter(T.RandomSaturation, aug.SATURATION, f"{prefix}.SATURATION")
    return augs


def build_bmc_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """detectron2's resize (and INPUT.RANDOM_FLIP), then the smear augmentations of ``BMC.AUG``,
    then the H&E stain jitter of ``BMC.AUG.STAIN_HED`` (when set).

    At test time only the resize is applied.
    """
    augs = utils.build_augmentation(cfg, is_train)
    if not is_train:
        return augs
    stain = stain_jitter_augmentations(cfg.BMC.AUG.STAIN_HED, cfg.INPUT.FORMAT)
    return augs + smear_augmentations(cfg.BMC.AUG) + stain
