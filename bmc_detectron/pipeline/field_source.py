"""The field-source interface: fields cut, on demand, from an image too large to read whole.

A whole slide (:mod:`bmc_detectron.slides`) is counted through this interface: the count
(:func:`~bmc_detectron.pipeline.slide_run.run_slide_count`) lays its grid of overlapping fields
over the source's counting level (:func:`~bmc_detectron.pipeline.tiling.tile_grid`), asks the
source which fields lie in its counting zone and in which order, reads them one at a time and
draws the fields it counted on the source's overview. The pipeline never imports a slide
library; the ``count`` command hands it a source.

A field here is a :class:`~bmc_detectron.pipeline.tiling.Tile`: ``x0, y0, x1, y1`` in the
counting level's pixels.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Protocol, Sequence

import numpy as np

from bmc_detectron.pipeline.tiling import Tile


class FieldSource(Protocol):
    """What the count needs of a source of fields.

    Attributes:
        name: a file-name-safe name (the fields are named after it).
        height, width: the counting level's size (px).
        microns_per_pixel: the counting level's pixel size (None: unknown).
    """

    name: str
    height: int
    width: int
    microns_per_pixel: Optional[float]

    def settings(self) -> Dict[str, Any]:
        """Everything that decides which fields are read and their pixels (fingerprinted)."""

    def score_fields(self, fields: Sequence[Tile]) -> List[Optional[float]]:
        """Per field, its merit (higher first) or None when it is outside the counting zone."""

    def read(self, field: Tile) -> np.ndarray:
        """The field's pixels, (H, W, 3) uint8 BGR."""

    def locate(self, field: Tile) -> Dict[str, Any]:
        """Where the field lies: ``image`` (a label for the report) and ``slide`` (see
        :attr:`~bmc_detectron.pipeline.report.FieldRecord.slide`)."""

    def describe(self) -> Dict[str, Any]:
        """The source for ``summary.json`` (the file, its levels, the zone found)."""

    def overview(self, counted: Sequence[Tile]) -> np.ndarray:
        """An RGB picture of the source with the counted fields drawn (in order)."""
