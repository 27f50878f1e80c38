"""Training augmentation for stained smears: flips, 90-degree rotations, stain jitter, and the
scale and image quality of any microscope.

Smears have no canonical orientation, so every flip and quarter turn is a valid sample; brightness,
contrast and saturation jitter imitate staining and illumination differences between slides.

Any microscope (issue 31): the same cell is 40 px or 300 px across and sharp or soft, so the
detector's training may also see (all off by default, keys of ``BMC.AUG``):

- ``SCALE_RANGE``: the image resized by a factor drawn log-uniformly from ``[low, high]`` (boxes
  follow exactly), then ``SCALE_CROP``: a random crop of at most that side, which bounds the cost
  of the enlarged images;
- ``BLUR_SIGMA``: a Gaussian blur (soft optics, focus);
- ``RESOLUTION_LOSS``: downsampled by a factor from ``[low, high]`` and back up to its size, as a
  20x / 40x slide scanner samples the slide more coarsely than an oil-immersion camera;
- ``JPEG_QUALITY``: JPEG compressed at a quality from ``[low, high]`` and decoded again;

each of the last three applied to an image with probability ``DEGRADE_PROB``.
"""

from __future__ import annotations

from typing import List, Sequence

import cv2
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


class PhotometricTransform(T.Transform):
    """A transform that changes pixels only: coordinates and segmentations stay as they are."""

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> T.Transform:
        return T.NoOpTransform()


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    return np.ascontiguousarray(image)


class ResolutionLossTransform(PhotometricTransform):
    """Downsample by ``factor`` (area average) and upsample back to the same size (bilinear)."""

    def __init__(self, factor: float):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        img = _as_uint8(img)
        h, w = img.shape[:2]
        small = (max(1, round(w / self.factor)), max(1, round(h / self.factor)))
        low = cv2.resize(img, small, interpolation=cv2.INTER_AREA)
        return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR).reshape(img.shape)


class GaussianBlurTransform(PhotometricTransform):
    """Gaussian blur of standard deviation ``sigma`` pixels."""

    def __init__(self, sigma: float):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if self.sigma <= 0:
            return img
        img = _as_uint8(img)
        return cv2.GaussianBlur(img, (0, 0), float(self.sigma)).reshape(img.shape)


class JpegTransform(PhotometricTransform):
    """JPEG encode at ``quality`` (1-100) and decode; ``image_format`` (``"BGR"``/``"RGB"``) says
    which channel is red, so the chroma is that of the true colours."""

    def __init__(self, quality: int, image_format: str = "BGR"):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        img = _as_uint8(img)
        colour = img.ndim == 3 and img.shape[2] == 3
        swap = colour and self.image_format == "RGB"
        src = img[:, :, ::-1] if swap else img
        ok, data = cv2.imencode(".jpg", src, [cv2.IMWRITE_JPEG_QUALITY, int(self.quality)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out = cv2.imdecode(data, cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
        out = out[:, :, ::-1] if swap else out
        return np.ascontiguousarray(out).reshape(img.shape)


def _draw(low: float, high: float, log: bool = False) -> float:
    if log:
        return float(np.exp(np.random.uniform(np.log(low), np.log(high))))
    return float(np.random.uniform(low, high))


class RandomScale(T.Augmentation):
    """Resize by a factor drawn log-uniformly from ``[low, high]`` (each side rounded to whole
    pixels; boxes scaled by the same new-over-old sizes)."""

    def __init__(self, low: float, high: float):
        super().__init__()
        if not 0 < low <= high:
            raise ValueError(f"RandomScale: need 0 < low <= high, got [{low}, {high}]")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        s = _draw(self.low, self.high, log=True)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if (nh, nw) == (h, w):
            return T.NoOpTransform()
        return T.ResizeTransform(h, w, nh, nw)


class RandomDegradation(T.Augmentation):
    """With probability ``prob``, a :class:`ResolutionLossTransform` (``kind="resolution"``),
    :class:`GaussianBlurTransform` (``"blur"``) or :class:`JpegTransform` (``"jpeg"``) whose
    parameter is drawn uniformly from ``[low, high]``."""

    KINDS = ("resolution", "blur", "jpeg")

    def __init__(
        self, kind: str, low: float, high: float, prob: float = 0.5, image_format: str = "BGR"
    ):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"RandomDegradation: kind must be one of {self.KINDS}, got {kind!r}")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        if np.random.rand() >= self.prob:
            return T.NoOpTransform()
        value = _draw(self.low, self.high)
        if self.kind == "resolution":
            return ResolutionLossTransform(value)
        if self.kind == "blur":
            return GaussianBlurTransform(value)
        return JpegTransform(int(round(value)), self.image_format)


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


def _range(limits: Sequence[float], key: str, low: float, high: float) -> List[float]:
    """``[]`` or ``[a, b]`` with ``low <= a <= b <= high``; ValueError naming ``key``."""
    if len(limits) == 0:
        return []
    if len(limits) != 2 or not low <= limits[0] <= limits[1] <= high:
        raise ValueError(f"{key}: expected [] or [low, high] with {low} <= low <= high <= {high}")
    return [float(limits[0]), float(limits[1])]


def scale_augmentations(aug, prefix: str = "BMC.AUG") -> List[T.Augmentation]:
    """The scale jitter of ``SCALE_RANGE`` and the crop of ``SCALE_CROP`` (module doc)."""
    augs: List[T.Augmentation] = []
    limits = _range(aug.SCALE_RANGE, f"{prefix}.SCALE_RANGE", 1e-3, 1e3)
    if limits:
        augs.append(RandomScale(*limits))
    crop = int(aug.SCALE_CROP)
    if crop < 0:
        raise ValueError(f"{prefix}.SCALE_CROP: expected a side in pixels >= 0, got {crop}")
    if crop:
        augs.append(T.RandomCrop("absolute", (crop, crop)))
    return augs


def degradation_augmentations(
    aug, image_format: str, prefix: str = "BMC.AUG"
) -> List[T.Augmentation]:
    """Blur, resolution loss and JPEG of ``BLUR_SIGMA``, ``RESOLUTION_LOSS``, ``JPEG_QUALITY``,
    each with probability ``DEGRADE_PROB``, in the order optics -> sampling -> file."""
    prob = float(aug.DEGRADE_PROB)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{prefix}.DEGRADE_PROB: expected a probability in [0, 1], got {prob}")
    keys = (
        ("blur", "BLUR_SIGMA", 0.0, 100.0),
        ("resolution", "RESOLUTION_LOSS", 1.0, 100.0),
        ("jpeg", "JPEG_QUALITY", 1.0, 100.0),
    )
    augs: List[T.Augmentation] = []
    for kind, key, low, high in keys:
        limits = _range(getattr(aug, key), f"{prefix}.{key}", low, high)
        if limits and prob > 0:
            augs.append(RandomDegradation(kind, *limits, prob=prob, image_format=image_format))
    return augs


def build_bmc_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """detectron2's resize (and INPUT.RANDOM_FLIP), the scale jitter and crop, the smear
    augmentations of ``BMC.AUG``, the H&E stain jitter of ``BMC.AUG.STAIN_HED`` (when set), then
    the scanner degradations (module doc).

    At test time only the resize is applied.
    """
    augs = utils.build_augmentation(cfg, is_train)
    if not is_train:
        return augs
    aug = cfg.BMC.AUG
    stain = stain_jitter_augmentations(aug.STAIN_HED, cfg.INPUT.FORMAT)
    return (
        augs
        + scale_augmentations(aug)
        + smear_augmentations(aug)
        + stain
        + degradation_augmentations(aug, cfg.INPUT.FORMAT)
    )
