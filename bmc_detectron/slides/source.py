"""A slide as a field source: the counting level, its zone, its fields and its overview picture.

    with open_slide("case.svs") as slide:
        source = SlideSource(slide, slide.best_level(model_mpp))
        summary = run_slide_count(counter, source, "reports/case01")   # pipeline.slide_run

:class:`SlideSource` is what the count (:mod:`bmc_detectron.pipeline.slide_run`) reads a slide
through (the interface :class:`~bmc_detectron.pipeline.field_source.FieldSource`): the fields'
pixels at the counting level, which fields lie in the counting zone (:mod:`.zone`: tissue mask
from the thumbnail, blocks surveyed at a coarse level) and the overview picture.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from bmc_detectron.slides.reader import Slide
from bmc_detectron.slides.zone import (
    FIELD_ZONES,
    BlockMap,
    FieldScore,
    ZoneSettings,
    score_fields,
    survey,
    tissue_mask,
)

THUMBNAIL_SIDE = 1024
# overview colours (RGB): counting zone, thick zone, tissue outline, counted fields
ZONE_RGB = (60, 170, 75)
THICK_RGB = (230, 140, 30)
TISSUE_RGB = (110, 110, 110)
COUNTED_RGB = (30, 80, 220)


class SlideSource:
    """The fields of ``slide``'s level ``level`` (module doc)."""

    def __init__(
        self, slide: Slide, level: int = 0, settings: ZoneSettings = ZoneSettings()
    ) -> None:
        if not 0 <= level < len(slide.levels):
            raise ValueError(f"{slide.path}: no level {level} (it has {len(slide.levels)})")
        self.slide, self.level, self.zone_settings = slide, slide.levels[level], settings
        self.name = re.sub(r"[^A-Za-z0-9._-]", "_", slide.path.stem) or "slide"
        self.height, self.width = self.level.height, self.level.width
        self.microns_per_pixel: Optional[float] = self.level.microns_per_pixel
        self.thumbnail, self.thumb_downsample = slide.thumbnail(THUMBNAIL_SIDE)
        self.tissue = tissue_mask(self.thumbnail)
        self.survey_level = self._survey_level()
        self.blocks: Optional[BlockMap] = None
        self.scores: List[FieldScore] = []

    def _survey_level(self) -> int:
        """The level nearest ``survey_ratio`` counting pixels per pixel (not finer than the
        counting level; the finer of two equally near)."""
        want = math.log(self.level.downsample * self.zone_settings.survey_ratio)
        usable = [lv for lv in self.slide.levels if lv.downsample >= self.level.downsample]
        return min(usable, key=lambda lv: (abs(math.log(lv.downsample) - want), lv.index)).index

    def settings(self) -> Dict[str, Any]:
        """The level, survey level and zone settings (a slide count's fingerprint)."""
        return {
            "level": self.level.index,
            "survey_level": self.survey_level,
            "zone": self.zone_settings.to_json(),
        }

    def score_fields(self, fields: Sequence[Any]) -> List[Optional[float]]:
        """Survey the slide (once) and score each field (:func:`~.zone.score_fields`)."""
        if self.blocks is None:
            lv = self.slide.levels[self.survey_level]
            self.blocks = survey(
                lambda x, y, w, h: self.slide.read_region(lv.index, x, y, w, h),
                lv.height,
                lv.width,
                lv.downsample / self.level.downsample,
                self.tissue,
                self.zone_settings,
            )
        self.scores = score_fields(self.blocks, fields, self.zone_settings)
        return [s.score for s in self.scores]

    def read(self, field: Any) -> np.ndarray:
        """The field's pixels at the counting level (BGR)."""
        w, h = field.x1 - field.x0, field.y1 - field.y0
        rgb = self.slide.read_region(self.level.index, field.x0, field.y0, w, h)
        return np.ascontiguousarray(rgb[:, :, ::-1])

    def locate(self, field: Any) -> Dict[str, Any]:
        """The field as a report label and its place on the slide (full-resolution px)."""
        d = self.level.downsample
        w, h = field.x1 - field.x0, field.y1 - field.y0
        return {
            "image": f"{self.slide.path}@level{self.level.index}:{field.x0},{field.y0},{w}x{h}",
            "slide": {
                "x": round(field.x0 * d, 2),
                "y": round(field.y0 * d, 2),
                "downsample": round(d, 6),
                "level": self.level.index,
            },
        }

    def describe(self) -> Dict[str, Any]:
        """The slide, the counting and survey levels and the zone found (fields per zone)."""
        zones: Dict[str, int] = {}
        for s in self.scores:
            zones[s.zone] = zones.get(s.zone, 0) + 1
        return {
            **self.slide.describe(),
            "level": self.level.index,
            "microns_per_pixel": self.microns_per_pixel,
            "survey_level": self.survey_level,
            "zone": {z: zones.get(z, 0) for z in FIELD_ZONES},
            "blocks": None if self.blocks is None else self.blocks.counts(),
        }

    def overview(self, counted: Sequence[Any]) -> np.ndarray:
        """The thumbnail (RGB) with the thick zone (orange) and counting zone (green) tinted, the
        tissue outlined (grey) and the counted fields boxed and numbered (blue)."""
        picture = self.thumbnail.astype(np.float32)
        th, tw = picture.shape[:2]
        if self.blocks is not None:
            zone = cv2.resize(self.blocks.zone, (tw, th), interpolation=cv2.INTER_NEAREST)
            for index, rgb in ((0, ZONE_RGB), (1, THICK_RGB)):
                where = zone[..., None] == index
                picture = np.where(where, 0.65 * picture + 0.35 * np.float32(rgb), picture)
        picture = picture.astype(np.uint8)
        contours, _ = cv2.findContours(
            self.tissue.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(picture, contours, -1, TISSUE_RGB, 1)
        k = self.level.downsample / self.thumb_downsample
        for n, f in enumerate(counted, start=1):
            p0 = (int(f.x0 * k), int(f.y0 * k))
            p1 = (max(p0[0] + 1, int(f.x1 * k) - 1), max(p0[1] + 1, int(f.y1 * k) - 1))
            cv2.rectangle(picture, p0, p1, COUNTED_RGB, 1)
            if n <= 99 and p1[0] - p0[0] >= 12:
                cv2.putText(picture, str(n), (p0[0] + 2, p0[1] + 10), 0, 0.3, COUNTED_RGB, 1)
        return picture
