"""Whole-slide images: levels, their pixel size, region reads that never load a whole level.

    with open_slide("case.svs") as slide:
        for level in slide.levels:            # width, height, downsample, microns_per_pixel
            ...
        k = slide.best_level(0.25)             # the level nearest the model's 0.25 um/px
        rgb = slide.read_region(k, x, y, 1024, 1024)   # (H, W, 3) uint8 RGB, level pixels

Backends:

- ``tifffile`` (the default for TIFF files): plain pyramidal TIFF (SubIFDs or one page per
  level), Aperio SVS (its ``Baseline`` series' levels), OME-TIFF. A region read decodes only the
  TIFF tiles (or strips) it touches, one at a time (``imagecodecs`` decodes JPEG and JPEG 2000
  tiles), so memory is bounded by the region, never by the level.
- ``tiffslide`` or ``openslide`` (``openslide-python`` with ``openslide-bin``), when installed:
  asked for by name, and tried for files that are not TIFF (NDPI, MRXS, ... for OpenSlide).

Pixel size: the slide's own, read from its full-resolution page (Aperio ``MPP``, OME
``PhysicalSizeX``, TIFF resolution: :func:`~bmc_detectron.pipeline.pixel_size.tiff_pixel_size`)
or the backend's ``openslide.mpp-x``; each level's is that times its downsample. A file that
cannot be opened raises :class:`SlideError` with one line naming the file and the problem.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

from bmc_detectron.pipeline.pixel_size import plausible, tiff_pixel_size

BACKENDS = ("auto", "tifffile", "tiffslide", "openslide")
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".btf")  # read by tifffile, TIFF or not (its error)
_TIFF_TAGS = (270, 282, 283, 296)  # ImageDescription, X/YResolution, ResolutionUnit


class SlideError(ValueError):
    """A slide that cannot be opened or read; the message names the file and the problem."""


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels, full-resolution pixels per level pixel
    (``downsample``) and micrometres per pixel (None: the slide does not say)."""

    index: int
    width: int
    height: int
    downsample: float
    microns_per_pixel: Optional[float]


class _TiffLevel:
    """Region reads of one TIFF page, tile (or strip) by tile."""

    def __init__(self, page: Any, fh: Any) -> None:
        self.page, self.fh = page, fh
        self.width, self.height = int(page.imagewidth), int(page.imagelength)
        if page.is_tiled:
            self.seg_w, self.seg_h = int(page.tilewidth), int(page.tilelength)
        else:
            self.seg_w, self.seg_h = self.width, int(page.rowsperstrip or self.height)
        self.cols = math.ceil(self.width / self.seg_w)

    def segment(self, row: int, col: int) -> np.ndarray:
        index = row * self.cols + col
        offset, count = self.page.dataoffsets[index], self.page.databytecounts[index]
        if not count:  # a tile never written: blank (white) as scanners leave empty glass
            return np.full((self.seg_h, self.seg_w, 3), 255, np.uint8)
        self.fh.seek(offset)
        data = self.fh.read(count)
        seg = self.page.decode(data, index, jpegtables=self.page.jpegtables)[0]
        seg = np.asarray(seg).reshape(seg.shape[-3:]) if seg.ndim > 3 else np.asarray(seg)
        if seg.ndim == 2:
            seg = seg[..., None]
        return seg

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, self.width), min(y + h, self.height)
        for row in range(y0 // self.seg_h, (y1 - 1) // self.seg_h + 1 if y1 > y0 else 0):
            for col in range(x0 // self.seg_w, (x1 - 1) // self.seg_w + 1 if x1 > x0 else 0):
                seg = _rgb(self.segment(row, col))
                sx, sy = col * self.seg_w, row * self.seg_h
                ax, ay = max(x0, sx), max(y0, sy)
                bx = min(x1, sx + self.seg_w, sx + seg.shape[1])
                by = min(y1, sy + self.seg_h, sy + seg.shape[0])
                if bx > ax and by > ay:
                    out[ay - y : by - y, ax - x : bx - x] = seg[
                        ay - sy : by - sy, ax - sx : bx - sx
                    ]
        return out


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 RGB from grey, RGB or RGBA samples."""
    if image.dtype != np.uint8:
        scale = 255.0 / max(float(np.iinfo(image.dtype).max), 1.0) if image.dtype.kind == "u" else 1
        image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


class Slide:
    """An open whole-slide image (:func:`open_slide`); close it, or use it as a context."""

    def __init__(
        self,
        path: Path,
        levels: List[Level],
        reader: Any,
        backend: str,
        mpp_source: Optional[str],
        closer: Any = None,
    ) -> None:
        self.path, self.levels, self.backend, self.mpp_source = path, levels, backend, mpp_source
        self._reader, self._closer = reader, closer

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        if self._closer is not None:
            self._closer.close()
            self._closer = None

    @property
    def microns_per_pixel(self) -> Optional[float]:
        """The full-resolution level's pixel size (None: unknown)."""
        return self.levels[0].microns_per_pixel

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 RGB of level ``level`` from its pixel (x, y); parts outside
        the level are white. Only the tiles the region touches are decoded."""
        if not 0 <= level < len(self.levels):
            raise SlideError(f"{self.path}: no level {level} (it has {len(self.levels)})")
        try:
            return self._reader(level, int(x), int(y), int(width), int(height))
        except (OSError, ValueError, RuntimeError) as e:
            raise SlideError(f"{self.path}: cannot read level {level} at {x},{y}: {e}") from None

    def best_level(self, microns_per_pixel: Optional[float], tolerance: float = 0.1) -> int:
        """The level to count at for a model of ``microns_per_pixel``: the coarsest level that is
        not coarser than the model by more than ``tolerance`` (cells are then shrunk, never
        enlarged, to the model's scale); level 0 when the pixel sizes are unknown."""
        if microns_per_pixel is None or self.microns_per_pixel is None:
            return 0
        fine_enough = [
            lv.index
            for lv in self.levels
            if lv.microns_per_pixel is not None
            and lv.microns_per_pixel <= microns_per_pixel * (1 + tolerance)
        ]
        return max(fine_enough) if fine_enough else 0

    def thumbnail(self, max_side: int = 1024) -> Tuple[np.ndarray, float]:
        """The slide shrunk to at most ``max_side`` px a side (RGB), read from the smallest level
        that is at least that large in strips, and its full-resolution pixels per pixel."""
        big = [lv for lv in self.levels if max(lv.width, lv.height) >= max_side]
        level = min(big, key=lambda lv: lv.width) if big else self.levels[-1]
        shrink = min(1.0, max_side / max(level.width, level.height))
        out_w = max(1, round(level.width * shrink))
        strips, step = [], max(1, int(256 / shrink))
        for y in range(0, level.height, step):
            h = min(step, level.height - y)
            rows = round((y + h) * shrink) - round(y * shrink)
            if rows > 0:
                strip = self.read_region(level.index, 0, y, level.width, h)
                strips.append(cv2.resize(strip, (out_w, rows), interpolation=cv2.INTER_AREA))
        thumb = np.concatenate(strips, axis=0)
        return thumb, level.downsample * level.width / out_w

    def describe(self) -> Dict[str, Any]:
        """The slide for a report: file, backend, levels, pixel size and where it was read."""
        return {
            "file": str(self.path),
            "backend": self.backend,
            "microns_per_pixel": self.microns_per_pixel,
            "microns_per_pixel_source": self.mpp_source,
            "levels": [
                {
                    "width": lv.width,
                    "height": lv.height,
                    "downsample": round(lv.downsample, 4),
                    "microns_per_pixel": lv.microns_per_pixel,
                }
                for lv in self.levels
            ],
        }


def _levels(
    sizes: List[Tuple[int, int]], downsamples: List[float], mpp: Optional[float]
) -> List[Level]:
    return [
        Level(i, w, h, float(d), None if mpp is None else round(mpp * float(d), 6))
        for i, ((w, h), d) in enumerate(zip(sizes, downsamples))
    ]


def _level_pages(tif: Any) -> List[Any]:
    """The pages of the levels: the first series' (SVS, OME, ...), else the first page and its
    reduced-resolution SubIFDs or following pages (plain pyramidal TIFF), largest first."""
    pages = [lv.keyframe for lv in tif.series[0].levels]
    if len(pages) == 1 and not tif.is_svs:  # an SVS's other pages are its label and macro
        first = pages[0]
        more = list(first.pages or []) if first.subifds else list(tif.pages[1:])
        aspect = first.imagewidth / first.imagelength
        reduced = [
            q
            for q in more
            if getattr(q, "subfiletype", 0) & 1
            and q.imagewidth < first.imagewidth
            and abs(q.imagewidth / q.imagelength / aspect - 1) < 0.05
        ]
        pages += sorted(reduced, key=lambda q: -int(q.imagewidth))
    return pages


def _open_tifffile(path: Path, mpp: Optional[float]) -> Slide:
    import tifffile

    try:
        tif = tifffile.TiffFile(str(path))
    except (tifffile.TiffFileError, OSError, ValueError) as e:
        raise SlideError(f"{path}: not a slide tifffile can read ({e})") from None
    try:
        pages = _level_pages(tif)
        readers = [_TiffLevel(p, tif.filehandle) for p in pages]
        if pages[0].samplesperpixel not in (1, 3, 4) or pages[0].dtype is None:
            raise ValueError(f"{pages[0].samplesperpixel} samples per pixel")
        tags = {code: pages[0].tags[code].value for code in _TIFF_TAGS if code in pages[0].tags}
    except (IndexError, KeyError, AttributeError, ValueError, TypeError) as e:
        tif.close()
        raise SlideError(f"{path}: not a readable slide image ({e})") from None
    found = tiff_pixel_size(tags)
    source = "given" if mpp is not None else (found.how if found else None)
    mpp = mpp if mpp is not None else (found.microns_per_pixel if found else None)
    sizes = [(r.width, r.height) for r in readers]
    levels = _levels(sizes, [sizes[0][0] / w for w, _ in sizes], mpp)
    return Slide(path, levels, lambda k, *xywh: readers[k].read(*xywh), "tifffile", source, tif)


def _open_openslide_like(path: Path, module: str, mpp: Optional[float]) -> Slide:
    try:
        lib = importlib.import_module(module)
    except ImportError:
        raise SlideError(
            f"{path}: the {module} backend is not installed (pip install {module})"
        ) from None
    try:
        osr = (getattr(lib, "TiffSlide", None) or lib.OpenSlide)(str(path))
    except Exception as e:  # each library raises its own error types
        raise SlideError(f"{path}: not a slide {module} can read ({e})") from None
    found = osr.properties.get("openslide.mpp-x") or osr.properties.get("tiffslide.mpp-x")
    own = float(found) if found and plausible(float(found)) else None
    source = "given" if mpp is not None else (f"{module} mpp-x" if own else None)
    mpp = mpp if mpp is not None else own
    levels = _levels(list(osr.level_dimensions), list(osr.level_downsamples), mpp)

    def read(k: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        d = levels[k].downsample
        region = osr.read_region((round(x * d), round(y * d)), k, (w, h))
        pixels = np.asarray(region)
        rgb = _rgb(pixels if pixels.ndim == 3 else pixels[..., None]).copy()
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            rgb[pixels[..., 3] == 0] = 255  # outside the scanned area: glass
        return rgb

    return Slide(path, levels, read, module, source, osr)


def open_slide(
    path: Union[str, Path], backend: str = "auto", microns_per_pixel: Optional[float] = None
) -> Slide:
    """Open a whole-slide image; ``microns_per_pixel`` (full resolution) overrides the slide's
    own. ``backend``: one of :data:`BACKENDS` (``auto``: tifffile for TIFF files, else tiffslide
    or openslide, whichever is installed). Raises :class:`SlideError` (one line)."""
    path = Path(path)
    if backend not in BACKENDS:
        raise SlideError(f"{path}: unknown slide backend {backend!r}: one of {BACKENDS}")
    if not path.is_file():
        raise SlideError(f"{path}: no such slide file")
    if microns_per_pixel is not None and not plausible(microns_per_pixel):
        raise SlideError(f"{path}: implausible microns per pixel {microns_per_pixel}")
    tiff = _is_tiff(path) or path.suffix.lower() in TIFF_SUFFIXES
    if backend == "tifffile" or (backend == "auto" and tiff):
        return _open_tifffile(path, microns_per_pixel)
    if backend != "auto":
        return _open_openslide_like(path, backend, microns_per_pixel)
    for module in ("tiffslide", "openslide"):
        if importlib.util.find_spec(module) is not None:
            return _open_openslide_like(path, module, microns_per_pixel)
    raise SlideError(
        f"{path}: not a TIFF file, and no slide library for other formats is installed "
        "(pip install openslide-python openslide-bin)"
    )


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:2] in (b"II", b"MM") and head[2:4] in (b"*\0", b"\0*", b"+\0", b"\0+")
