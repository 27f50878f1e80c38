"""Cell crops: the input of the recognition stage (detect first, then recognise).

Training (the classifier's dataset mapper) and inference (the count pipeline, the ONNX runtime)
cut crops with the same function, so a classifier sees at test time what it saw in training.

A crop is the square centred on the box, of side ``max(w, h) * (1 + 2 * margin)`` (the box plus a
context margin on every side), resized to ``size x size``. Where the square leaves the image, the
image's edge pixels are repeated (``cv2.BORDER_REPLICATE``), so a cell on the border gives a crop
of the same size as any other.
"""

from __future__ import annotations

import cv2
import numpy as np


def crop_square(box: np.ndarray, margin: float) -> np.ndarray:
    """The (4,) XYXY square region a crop covers: the box centre, side max(w, h)(1 + 2 margin)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0) * (1.0 + 2.0 * margin)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def crop_boxes(image: np.ndarray, boxes: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Crops of ``boxes`` from ``image``.

    Args:
        image: (H, W, C) uint8 image (any channel order; the crops keep it).
        boxes: (N, 4) XYXY boxes in pixels of ``image``; N may be 0.
        size: side of the square output crops.
        margin: context around the box, as a fraction of its longer side, on every side.

    Returns:
        (N, size, size, C) uint8 crops.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    channels = image.shape[2] if image.ndim == 3 else 1
    out = np.empty((len(boxes), size, size, channels), dtype=np.uint8)
    for i, box in enumerate(boxes):
        sx0, sy0, sx1, sy1 = crop_square(box, margin)
        scale = size / (sx1 - sx0)
        # pixel centres: output pixel j covers source [sx0 + j / scale, sx0 + (j + 1) / scale)
        shift = 0.5 * scale - 0.5
        affine = np.array([[scale, 0.0, shift - sx0 * scale], [0.0, scale, shift - sy0 * scale]])
        crop = cv2.warpAffine(
            image, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        out[i] = crop.reshape(size, size, channels)
    return out
