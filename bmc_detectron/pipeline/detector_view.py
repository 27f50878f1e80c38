"""The size at which the detector sees the cells, compared with the size it was trained at.

A detector resizes every image (or tile) it is given by its test rule,
``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``, and was trained on images resized by its
training rule (``MIN_SIZE_TRAIN`` / ``MAX_SIZE_TRAIN``). For a field, the factor from its pixels
to the detector's input pixels is ``prep.factor`` (the case's rescale, :mod:`.scale_plan`) times
the test resize of one tile of the rescaled field (1 when the detector's resize is off). For the
training images it is the training resize of their median size (the training profile's
``image_size``). With ``to_training`` (field pixels to training pixels; 1 when the scale is not
known: the field is assumed to have the training images' pixel size), a cell is seen at

    relative = field factor / (to_training * training factor)

times the size the detector saw it at in training. Outside ``[1 / tolerance, tolerance]`` the
count warns (:data:`~.count_warnings.DETECTOR_SCALE`), or refuses with ``strict``
(:class:`ScaleMismatchError`). The issue's case: a 1440 px field, 1024 px tiles, a detector with
``MIN_SIZE_TEST`` 320 trained on 640 x 480 images at ``MIN_SIZE_TRAIN`` 480 sees its cells at
0.31x their training size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from detectron2.data import transforms as T

from bmc_detectron.pipeline.count_warnings import DETECTOR_SCALE, CountWarning
from bmc_detectron.pipeline.field_prep import FieldPrep

# Default of the tolerance (a factor): the same name in ``count`` and ``serve``.
DETECTOR_SCALE_TOLERANCE = 1.5


class ScaleMismatchError(ValueError):
    """``strict``: a field would be seen far from the training size (one-line message)."""


def _resize(h: int, w: int, min_size: float, max_size: int) -> float:
    """The factor of detectron2's ResizeShortestEdge on an ``h x w`` image (1: off)."""
    if min_size <= 0:
        return 1.0
    nh, _ = T.ResizeShortestEdge.get_output_shape(h, w, int(round(min_size)), max_size)
    return nh / h


def tile_shape(height: int, width: int, factor: float, tile_size: int) -> Tuple[int, int]:
    """The shape of the tiles of a field resized by ``factor`` (the field when not tiled)."""
    h, w = max(1, int(round(height * factor))), max(1, int(round(width * factor)))
    if tile_size <= 0 or max(h, w) <= tile_size:
        return h, w
    return min(tile_size, h), min(tile_size, w)


@dataclass(frozen=True)
class TrainingView:
    """The training images' factor to the detector's input and the assumptions behind it."""

    factor: float
    image_size: Optional[Tuple[int, int]]
    min_size: float
    assumptions: Tuple[str, ...] = ()


def training_view(detector: Any, image_size: Optional[Tuple[int, int]]) -> TrainingView:
    """The training resize of the training images' median ``image_size`` (None: unknown)."""
    train_min = tuple(getattr(detector, "train_min_size", ()) or ())
    max_size = int(getattr(detector, "train_max_size", 0) or 0)
    notes: List[str] = []
    if train_min:
        min_size = 0.5 * (min(train_min) + max(train_min))
    else:
        min_size = float(getattr(detector, "min_size", 0) or 0)
        max_size = int(getattr(detector, "max_size", 0) or 0)
        if min_size > 0:
            notes.append("the training resize is unknown: assumed the test resize")
    if image_size is None:
        notes.append(
            "the training images' size is unknown (no training profile): assumed that the "
            "detector was trained on them at their own size"
        )
        return TrainingView(1.0, None, min_size, tuple(notes))
    h, w = image_size
    return TrainingView(_resize(h, w, min_size, max_size), image_size, min_size, tuple(notes))


@dataclass
class DetectorView:
    """Per field, the size at which the detector sees its cells relative to training.

    Attributes:
        training: the training images' factor (:func:`training_view`).
        fields: field name -> {``shape``, ``tile``, ``input``: the tile as the detector sees
            it, ``factor``: field to detector pixels, ``relative``: over the training's}.
        tolerance: the factor outside of which a field is warned.
        off: the fields outside the tolerance.
    """

    training: TrainingView
    tolerance: float
    fields: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    off: List[str] = field(default_factory=list)

    def describe(self, name: str) -> str:
        """One field's two sizes in words."""
        f, t = self.fields[name], self.training
        seen = f"field {f['shape'][1]}x{f['shape'][0]} px"
        if f["tile"] != f["shape"]:
            seen += f" in tiles of {f['tile'][1]}x{f['tile'][0]} px"
        seen += f" seen at {f['input'][1]}x{f['input'][0]} px (x{f['factor']:.3g})"
        trained = "training images at their own size"
        if t.image_size is not None:
            trained = f"training images {t.image_size[1]}x{t.image_size[0]} px"
        trained += f" seen at x{t.factor:.3g}"
        return f"{name}: cells seen at {f['relative']:.2f}x their training size ({seen}; {trained})"

    def warnings(self) -> List[CountWarning]:
        """The case-level warning (empty when every field is within the tolerance)."""
        if not self.off:
            return []
        worst = max(self.off, key=lambda n: abs(_log(self.fields[n]["relative"])))
        return [
            CountWarning(
                DETECTOR_SCALE,
                f"{len(self.off)} field(s) seen by the detector far from the size it was trained "
                f"at (tolerance {self.tolerance:g}x), cells may be missed: "
                f"{self.describe(worst)}; give --microns-per-pixel (or leave the automatic "
                "scale on: no --no-auto-scale), or another --tile-size",
            )
        ]

    def to_json(self) -> Dict[str, Any]:
        """``summary.json``'s ``scale.detector_input`` entry."""
        t = self.training
        return {
            "training_factor": round(t.factor, 4),
            "training_image_size": None if t.image_size is None else list(t.image_size),
            "training_min_size": t.min_size,
            "assumptions": list(t.assumptions),
            "tolerance": self.tolerance,
            "fields": self.fields,
            "off": list(self.off),
        }


def _log(x: float) -> float:
    return math.log(x) if x > 0 else float("inf")


def detector_view(
    detector: Any,
    shapes: Mapping[str, Tuple[int, int]],
    prep: FieldPrep,
    *,
    tile_size: int,
    to_training: float = 1.0,
    image_size: Optional[Tuple[int, int]] = None,
    tolerance: float = DETECTOR_SCALE_TOLERANCE,
) -> DetectorView:
    """Each field's (``shapes``: name -> (height, width)) size as the detector sees it."""
    if not tolerance > 1:
        raise ValueError(f"the detector scale tolerance must be a factor > 1, got {tolerance}")
    view = DetectorView(training_view(detector, image_size), tolerance)
    min_size = 0 if prep.fixed_scale else int(getattr(detector, "min_size", 0) or 0)
    max_size = int(getattr(detector, "max_size", 0) or 0)
    for name, (height, width) in shapes.items():
        th, tw = tile_shape(height, width, prep.factor, tile_size)
        k = _resize(th, tw, min_size, max_size)
        factor = prep.factor * k
        relative = factor / (to_training * view.training.factor)
        view.fields[name] = {
            "shape": [height, width],
            "tile": [th, tw],
            "input": [int(round(th * k)), int(round(tw * k))],
            "factor": round(factor, 4),
            "relative": round(relative, 4),
        }
        slack = 1e-3  # FieldPrep rounds its factor to 4 decimals
        if not 1.0 / tolerance - slack <= relative <= tolerance + slack:
            view.off.append(name)
    return view


def check_strict(view: DetectorView, strict: bool) -> None:
    """Raise :class:`ScaleMismatchError` (naming the first field off) when ``strict``."""
    if strict and view.off:
        raise ScaleMismatchError(
            f"{view.describe(view.off[0])}: outside the tolerance {view.tolerance:g}x "
            f"(--strict-scale; {len(view.off)} field(s) off)"
        )
