"""The pixel size an image file carries itself (issue 31, section 2): one piece of the evidence
the count's scale is decided from (:mod:`.scale_decision`).

Read, in this order, from the file's header (no pixels are decoded):

- a microns-per-pixel entry in a TIFF's ImageDescription: Aperio's ``MPP = 0.2520``, OME-XML's
  ``PhysicalSizeX="0.1"`` (in micrometres unless ``PhysicalSizeXUnit`` says nm or mm) or
  ImageJ's ``unit=micron`` with its XResolution in pixels per micrometre;
- TIFF XResolution / YResolution with ResolutionUnit inch or centimetre;
- PNG ``pHYs`` in pixels per metre (and any other format's dots per inch, as PIL reads them).

A value is kept only when it is plausible for a microscope image: between
:data:`PLAUSIBLE_MICRONS` (0.01 to 10 um per pixel; the 72 and 96 dpi that most software
writes by default are 353 and 265 um per pixel, and any print resolution is far above 10) and
with square pixels (x and y within 2 %).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from PIL import Image

PLAUSIBLE_MICRONS = (0.01, 10.0)
MICRONS_PER_INCH = 25400.0
MICRONS_PER_CM = 10000.0
_SQUARE = 0.02  # relative difference of x and y accepted as square pixels

_TIFF_DESCRIPTION, _XRES, _YRES, _UNIT = 270, 282, 283, 296
_APERIO = re.compile(r"\bMPP\s*=\s*([0-9.eE+-]+)")
_OME = re.compile(r'PhysicalSizeX="([0-9.eE+-]+)"')
_OME_UNIT = re.compile(r'PhysicalSizeXUnit="([^"]+)"')
_IMAGEJ_UNIT = re.compile(r"^unit=(micron|um|\\u00B5m|µm)\s*$", re.MULTILINE)
_OME_UNITS = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}


@dataclass(frozen=True)
class PixelSize:
    """A file's own pixel size: ``microns_per_pixel`` and where it was read (``how``)."""

    microns_per_pixel: float
    how: str


def plausible(microns_per_pixel: float) -> bool:
    """A pixel size a microscope image can have (:data:`PLAUSIBLE_MICRONS`)."""
    lo, hi = PLAUSIBLE_MICRONS
    return math.isfinite(microns_per_pixel) and lo <= microns_per_pixel <= hi


def _number(value: Any) -> Optional[float]:
    try:
        out = float(value[0]) / float(value[1]) if isinstance(value, tuple) else float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _square(x: Optional[float], y: Optional[float]) -> Optional[float]:
    if x is None:
        return None
    if y is not None and abs(x / y - 1.0) > _SQUARE:
        return None
    return x


def _from_description(text: str, xres: Optional[float]) -> Optional[PixelSize]:
    match = _APERIO.search(text)
    if match and _number(match.group(1)):
        return PixelSize(float(match.group(1)), "TIFF ImageDescription (Aperio MPP)")
    match = _OME.search(text)
    if match and _number(match.group(1)):
        unit = _OME_UNIT.search(text)
        scale = _OME_UNITS.get(unit.group(1) if unit else "µm")
        if scale is not None:
            value = float(match.group(1)) * scale
            return PixelSize(value, "TIFF ImageDescription (OME PhysicalSizeX)")
    if _IMAGEJ_UNIT.search(text) and xres:
        return PixelSize(1.0 / xres, "TIFF XResolution (ImageJ, pixels per micron)")
    return None


def _from_tiff(tags: Any) -> Optional[PixelSize]:
    x, y = _number(tags.get(_XRES)), _number(tags.get(_YRES))
    xres = _square(x, y)
    description = tags.get(_TIFF_DESCRIPTION)
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    if isinstance(description, str):
        found = _from_description(description, xres)
        if found is not None:
            return found
    unit = tags.get(_UNIT, 2)  # TIFF's default unit is the inch
    per = {2: (MICRONS_PER_INCH, "inch"), 3: (MICRONS_PER_CM, "cm")}.get(int(unit or 0))
    if xres is None or per is None:
        return None
    return PixelSize(per[0] / xres, f"TIFF XResolution ({xres:g} per {per[1]})")


def _from_info(img: Image.Image) -> Optional[PixelSize]:
    dpi = img.info.get("dpi")
    if not isinstance(dpi, tuple) or len(dpi) != 2:
        return None
    x = _square(_number(dpi[0]), _number(dpi[1]))
    if x is None:
        return None
    what = "PNG pHYs" if img.format == "PNG" else f"{img.format} resolution"
    return PixelSize(MICRONS_PER_INCH / x, f"{what} ({x * 100 / 2.54:.6g} px per metre)")


def _kept(found: Optional[PixelSize]) -> Optional[PixelSize]:
    if found is None or not plausible(found.microns_per_pixel):
        return None
    return PixelSize(round(found.microns_per_pixel, 6), found.how)


def read_pixel_size(img: Image.Image) -> Optional[PixelSize]:
    """The plausible pixel size an opened image carries (None: none, or not plausible)."""
    tags = getattr(img, "tag_v2", None)
    return _kept(_from_tiff(tags) if tags is not None else _from_info(img))


def tiff_pixel_size(tags: Mapping[int, Any]) -> Optional[PixelSize]:
    """The plausible pixel size in a TIFF page's tags, by tag number (ImageDescription 270,
    X/YResolution 282/283 as numbers or (numerator, denominator), ResolutionUnit 296): what a
    whole-slide reader passes for a level read without PIL."""
    return _kept(_from_tiff(tags))


def pixel_size_of(data: bytes) -> Optional[PixelSize]:
    """The plausible pixel size an image file's bytes carry (None: none, or not an image)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return read_pixel_size(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def pixel_sizes_agree(values: Tuple[float, ...], tolerance: float) -> bool:
    """All within ``tolerance`` (relative) of their median."""
    if not values:
        return False
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    return all(abs(v / median - 1.0) <= tolerance for v in values)
