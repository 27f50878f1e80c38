"""Uploaded bytes -> a BGR field, checked by decoding (never by the file name or declared type).

:func:`probe_image` reads only the header: what the format is and how many pixels the image has,
so that a "decompression bomb" (a small file holding a huge image) is refused before anything is
decoded. :func:`decode_image` then decodes it (EXIF orientation applied), in a worker thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bmc_detectron.serve.errors import ApiError
from bmc_detectron.serve.uploads import Upload

# The decoders PIL may use: the formats microscope cameras and scanners write.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")


@dataclass(frozen=True)
class Probe:
    """What the header of an image file says: its format and size."""

    format: str
    width: int
    height: int


def _refuse(status: int, code: str, message: str, upload: Upload) -> ApiError:
    return ApiError(status, code, message, file=upload.filename, index=upload.index)


def _open(upload: Upload) -> Image.Image:
    """Open (lazily: the header only) with the allowed decoders; 4xx when it is no image."""
    if not upload.data:
        raise _refuse(400, "empty_file", f"{upload.filename} is empty (0 bytes)", upload)
    try:
        return Image.open(io.BytesIO(upload.data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise _refuse(
            413, "too_many_pixels", f"{upload.filename} has too many pixels", upload
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        kinds = ", ".join(ALLOWED_FORMATS)
        raise _refuse(
            415, "not_an_image", f"{upload.filename} is not an image ({kinds} accepted)", upload
        ) from None


def _check_pixels(img: Image.Image, upload: Upload, max_pixels: int) -> None:
    width, height = img.size
    if width < 1 or height < 1:
        raise _refuse(422, "unreadable_image", f"{upload.filename} has no pixels", upload)
    if width * height > max_pixels:
        raise _refuse(
            413,
            "too_many_pixels",
            f"{upload.filename} is {width}x{height} pixels, more than the "
            f"{max_pixels / 1e6:g} megapixel limit",
            upload,
        )


def probe_image(upload: Upload, max_pixels: int) -> Probe:
    """The format and size of an upload from its header; :class:`ApiError` for empty files,
    files that are no image (415) and images with more than ``max_pixels`` pixels (413)."""
    with _open(upload) as img:
        _check_pixels(img, upload, max_pixels)
        return Probe(str(img.format), int(img.size[0]), int(img.size[1]))


def decode_image(upload: Upload, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 BGR pixels of an upload (first frame, EXIF orientation applied).

    Raises :class:`ApiError` as :func:`probe_image`, and 422 for a file whose header is fine but
    whose pixels cannot be decoded (a truncated or corrupt file).
    """
    with _open(upload) as img:
        _check_pixels(img, upload, max_pixels)
        try:
            rgb = ImageOps.exif_transpose(img).convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise _refuse(
                422, "unreadable_image", f"{upload.filename} cannot be decoded ({e})", upload
            ) from None
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
