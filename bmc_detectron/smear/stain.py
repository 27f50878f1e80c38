"""Stain space: colour deconvolution to haematoxylin / eosin / DAB optical densities and back
(Ruifrok & Johnston 2001, the matrix of scikit-image's ``rgb2hed``), the H&E jitter used for
training (:class:`RandomStainJitter`), hue / saturation shifts, and Reinhard normalisation.

Images are uint8 (H, W, 3) in ``"RGB"`` or ``"BGR"`` order (``channel_order``). Optical density is
``-ln((I + 1) / 256)``, so it is finite at 0 and the round trip is exact before rounding; stain
concentrations are not clipped at 0, so a shift followed by the opposite shift returns the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import transforms as T

# Rows: the RGB optical density of one unit of haematoxylin, eosin and DAB (Ruifrok & Johnston).
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
# The stain normalisations a field can be given before detection (the count's
# ``--stain-normalize``, the robustness study's measures).
STAIN_METHODS = ("reinhard",)
# A pixel is nucleus-stained above this haematoxylin concentration (the HED space below): nuclei
# stained blue-purple read 1-3, background and red cells below 0.5.
NUCLEUS_HAEMATOXYLIN = 1.0


def _to_rgb(image: np.ndarray, channel_order: str) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    return image[..., ::-1] if channel_order == "BGR" else image


def _to_uint8(rgb: np.ndarray, channel_order: str) -> np.ndarray:
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[..., ::-1] if channel_order == "BGR" else out)


def rgb2hed(image: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """(H, W, 3) float32 stain concentrations (haematoxylin, eosin, DAB) of a uint8 image."""
    rgb = _to_rgb(image, channel_order).astype(np.float64)
    od = -np.log((rgb + 1.0) / 256.0)
    return (od @ HED_FROM_RGB).astype(np.float32)


def nucleus_mask(image: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """(H, W) True where a pixel is stained like a nucleus (haematoxylin above
    :data:`NUCLEUS_HAEMATOXYLIN`): the cheap nucleus-stain proxy of the field checks and of the
    slides' counting zone."""
    return rgb2hed(image, channel_order)[..., 0] > NUCLEUS_HAEMATOXYLIN


def hed2rgb(hed: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """The uint8 image of stain concentrations from :func:`rgb2hed` (rounded and clipped)."""
    od = np.asarray(hed, np.float64) @ RGB_FROM_HED
    return _to_uint8(256.0 * np.exp(-od) - 1.0, channel_order)


def stain_shift(
    image: np.ndarray,
    h_scale: float = 1.0,
    h_shift: float = 0.0,
    e_scale: float = 1.0,
    e_shift: float = 0.0,
    channel_order: str = "RGB",
) -> np.ndarray:
    """Scale and shift the haematoxylin and eosin concentrations: ``H' = H * h_scale + h_shift``,
    ``E' = E * e_scale + e_shift`` (optical-density units; DAB unchanged). uint8 in, uint8 out."""
    hed = rgb2hed(image, channel_order)
    hed[..., 0] = hed[..., 0] * h_scale + h_shift
    hed[..., 1] = hed[..., 1] * e_scale + e_shift
    return hed2rgb(hed, channel_order)


def hue_shift(image: np.ndarray, degrees: float, channel_order: str = "RGB") -> np.ndarray:
    """Rotate the hue by ``degrees`` (HSV, OpenCV's 0..180 hue scale of uint8 images)."""
    code = cv2.COLOR_RGB2HSV if channel_order == "RGB" else cv2.COLOR_BGR2HSV
    back = cv2.COLOR_HSV2RGB if channel_order == "RGB" else cv2.COLOR_HSV2BGR
    hsv = cv2.cvtColor(np.ascontiguousarray(image), code).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + int(round(degrees / 2.0))) % 180
    return cv2.cvtColor(hsv.astype(np.uint8), back)


def saturation_scale(image: np.ndarray, factor: float, channel_order: str = "RGB") -> np.ndarray:
    """Multiply the HSV saturation by ``factor`` (clipped to the uint8 range)."""
    code = cv2.COLOR_RGB2HSV if channel_order == "RGB" else cv2.COLOR_BGR2HSV
    back = cv2.COLOR_HSV2RGB if channel_order == "RGB" else cv2.COLOR_HSV2BGR
    hsv = cv2.cvtColor(np.ascontiguousarray(image), code).astype(np.float32)
    hsv[..., 1] = np.clip(np.rint(hsv[..., 1] * factor), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), back)


class StainTransform(T.Transform):
    """:func:`stain_shift` as a detectron2 transform (boxes and masks unchanged)."""

    def __init__(
        self,
        h_scale: float,
        h_shift: float,
        e_scale: float,
        e_shift: float,
        image_format: str = "BGR",
    ):
        """
        Args:
            h_scale, h_shift, e_scale, e_shift: see :func:`stain_shift`.
            image_format: channel order of the images, ``cfg.INPUT.FORMAT`` ("BGR" or "RGB").
        """
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8:
            raise ValueError(f"StainTransform expects uint8 images, got {img.dtype}")
        return stain_shift(
            img, self.h_scale, self.h_shift, self.e_scale, self.e_shift, self.image_format
        )

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> T.Transform:
        """The opposite transform (exact up to rounding and clipping)."""
        return StainTransform(
            1.0 / self.h_scale,
            -self.h_shift / self.h_scale,
            1.0 / self.e_scale,
            -self.e_shift / self.e_scale,
            self.image_format,
        )


class RandomStainJitter(T.Augmentation):
    """H&E jitter (Tellez et al. 2018): each of H and E is scaled by a factor drawn from
    ``[1 - scale_range, 1 + scale_range]`` and shifted by one drawn from ``[-shift_range,
    shift_range]``, independently per image."""

    def __init__(self, scale_range: float, shift_range: float, image_format: str = "BGR"):
        super().__init__()
        if not 0.0 <= scale_range < 1.0 or shift_range < 0.0:
            raise ValueError("RandomStainJitter: need 0 <= scale_range < 1 and shift_range >= 0")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        a, b = self.scale_range, self.shift_range
        h_scale, e_scale = np.random.uniform(1.0 - a, 1.0 + a, size=2)
        h_shift, e_shift = np.random.uniform(-b, b, size=2)
        return StainTransform(
            float(h_scale), float(h_shift), float(e_scale), float(e_shift), self.image_format
        )


def lab_stats(image: np.ndarray, channel_order: str = "RGB") -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of an image in CIE L*a*b* (L 0..100)."""
    rgb = np.ascontiguousarray(_to_rgb(image, channel_order)).astype(np.float32) / 255.0
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    return lab.mean(axis=0), lab.std(axis=0)


@dataclass(frozen=True)
class ReinhardTarget:
    """Target L*a*b* statistics for :func:`reinhard_normalize` (mean over a set of images of
    their per-image means and standard deviations)."""

    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    @classmethod
    def from_images(
        cls, images: Iterable[np.ndarray], channel_order: str = "RGB"
    ) -> ReinhardTarget:
        stats = [lab_stats(im, channel_order) for im in images]
        if not stats:
            raise ValueError("ReinhardTarget.from_images: no images")
        mean = np.mean([m for m, _ in stats], axis=0)
        std = np.mean([s for _, s in stats], axis=0)
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


def reinhard_normalize(
    image: np.ndarray, target: ReinhardTarget, channel_order: str = "RGB"
) -> np.ndarray:
    """Reinhard et al. (2001) colour transfer: shift and scale each L*a*b* channel of ``image``
    to the mean and standard deviation of ``target``; uint8 out, same channel order."""
    rgb = np.ascontiguousarray(_to_rgb(image, channel_order)).astype(np.float32) / 255.0
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    mean = lab.reshape(-1, 3).mean(axis=0)
    std = np.maximum(lab.reshape(-1, 3).std(axis=0), 1e-6)
    lab = (lab - mean) / std * np.asarray(target.std, np.float32) + np.asarray(
        target.mean, np.float32
    )
    lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
    out = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0
    return _to_uint8(out, channel_order)


def stain_jitter_augmentations(limits: Sequence[float], image_format: str) -> list:
    """``[RandomStainJitter]`` for ``BMC.AUG.STAIN_HED`` = ``[scale_range, shift_range]``;
    ``[]`` when the key is empty."""
    if len(limits) == 0:
        return []
    if len(limits) != 2:
        raise ValueError("BMC.AUG.STAIN_HED: expected [] or [scale_range, shift_range]")
    return [RandomStainJitter(float(limits[0]), float(limits[1]), image_format)]
