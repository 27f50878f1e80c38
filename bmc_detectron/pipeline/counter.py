"""Detect, crop and recognise the nucleated cells of one field: :class:`CellCounter`.

    counter = CellCounter.from_configs("det.yaml", "det.pth", "cls.yaml", "cls.pth")
    cells = counter.count_image(cv2.imread("field.png"))   # BGR

Without a classifier the detector's own classes are counted and a cell's class probability is its
detector score. A :class:`~.field_prep.FieldPrep` rescales the field to the model's scale and / or
normalises its stain before detection; boxes and crops stay in the field's own pixels. Whether a
cell is *uncertain* (class probability below a threshold) is decided when the report is made
(:meth:`Cell.is_uncertain`), so the threshold can change without detecting again. A classifier
with an open-set threshold labels a cell of no known type ``Other`` (``data.classes.OTHER``;
:mod:`bmc_detectron.evaluation.open_set`): such a cell is listed, never uncertain, and in no
percentage of the differential.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bmc_detectron.data.classes import OTHER
from bmc_detectron.pipeline.detector import Detections, Detector
from bmc_detectron.pipeline.field_prep import FieldPrep, detect_rescaled, unresized
from bmc_detectron.pipeline.recognition import CellClassifier
from bmc_detectron.pipeline.tiling import detect_tiled


@dataclass
class Cell:
    """One counted cell.

    Attributes:
        box: (x0, y0, x1, y1) in field pixels.
        det_score: the detector's score.
        det_class: the detector's class (``"cell"`` for a class-agnostic detector).
        label: the cell's class (the classifier's, else the detector's), or ``"Other"`` when
            the classifier's open-set score says it is of no type it knows.
        prob: probability of the most likely class (the detector score without a classifier).
        probs: the classifier's probabilities of every class, or None.
    """

    box: Tuple[float, float, float, float]
    det_score: float
    det_class: str
    label: str
    prob: float
    probs: Optional[List[float]] = None

    @property
    def is_other(self) -> bool:
        """True for a cell of no type the classifier knows (listed as Other)."""
        return self.label == OTHER.abbr

    def is_uncertain(self, threshold: float) -> bool:
        """True when the class probability is below ``threshold`` (never for an Other cell)."""
        return not self.is_other and self.prob < threshold

    def to_json(self) -> Dict[str, Any]:
        """A JSON-ready dict: box and detector score rounded as the report writes them, the class
        probabilities exact (the report's ``p_`` columns and the uncertain rule use them as they
        are, so a field reused from its saved result reports as when it was counted)."""
        out = asdict(self)
        out["box"] = [round(float(v), 2) for v in self.box]
        out["det_score"] = round(float(self.det_score), 5)
        out["prob"] = float(self.prob)
        if self.probs is not None:
            out["probs"] = [float(p) for p in self.probs]
        return out

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Cell:
        """Inverse of :meth:`to_json`."""
        return cls(
            box=tuple(float(v) for v in data["box"]),
            det_score=float(data["det_score"]),
            det_class=str(data["det_class"]),
            label=str(data["label"]),
            prob=float(data["prob"]),
            probs=None if data.get("probs") is None else [float(p) for p in data["probs"]],
        )


@dataclass
class FieldCount:
    """The cells of one field and what it cost: seconds of detection and of recognition."""

    cells: List[Cell]
    detect_s: float
    recognise_s: float
    tiles: int


class CellCounter:
    """Detector (+ optional crop classifier) -> the cells of a field.

    Args:
        detector: ``detector(image_bgr) -> Detections`` with a ``class_names`` attribute
            (:class:`Detector`, or anything that behaves like it).
        classifier: a :class:`CellClassifier`, or None to count the detector's classes.
        score_threshold: detections scoring below it are not cells.
        tile_size: fields with a side longer than this are detected as tiles (0: never).
        tile_overlap: pixels shared by neighbouring tiles (more than the largest cell).
        nms_threshold: IoU of the class-agnostic NMS that leaves one box per cell.
        edge_margin: a box this close to an inner tile edge counts as cut by it.
        batch_size: crops per classifier call.
        detector_classes: keep only detections of these detector classes (empty: all), e.g. a
            multi-class detector's ``WBC`` as the finder of the white cells a classifier names.
    """

    def __init__(
        self,
        detector: Any,
        classifier: Optional[CellClassifier] = None,
        *,
        score_threshold: float = 0.5,
        tile_size: int = 1024,
        tile_overlap: int = 128,
        nms_threshold: float = 0.5,
        edge_margin: float = 8.0,
        batch_size: int = 64,
        detector_classes: Sequence[str] = (),
    ) -> None:
        if tile_size > 0 and not 0 <= tile_overlap < tile_size:
            raise ValueError(f"tile overlap {tile_overlap} must be in [0, tile size {tile_size})")
        self.detector = detector
        self.classifier = classifier
        self.score_threshold = float(score_threshold)
        self.tile_size = int(tile_size)
        self.tile_overlap = int(tile_overlap)
        self.nms_threshold = float(nms_threshold)
        self.edge_margin = float(edge_margin)
        self.batch_size = int(batch_size)
        names = list(detector.class_names)
        unknown = [c for c in detector_classes if c not in names]
        if unknown:
            raise ValueError(f"detector class(es) {unknown} not among the detector's {names}")
        self.detector_classes = list(detector_classes)
        self._kept_ids = np.asarray([names.index(c) for c in detector_classes], dtype=np.int64)
        self._unresized: Any = None  # the detector without its test resize (made when needed)

    @classmethod
    def from_configs(
        cls,
        detector_config: str,
        detector_weights: str,
        classifier_config: Optional[str] = None,
        classifier_weights: Optional[str] = None,
        *,
        detector_opts: Sequence[str] = (),
        classifier_opts: Sequence[str] = (),
        **kwargs: Any,
    ) -> CellCounter:
        """Build both models from their configs and weights; ``kwargs`` go to the constructor."""
        detector = Detector.from_config(detector_config, detector_weights, detector_opts)
        classifier = None
        if classifier_config or classifier_weights:
            if not (classifier_config and classifier_weights):
                raise ValueError("a classifier needs both its config and its weights")
            classifier = CellClassifier.from_config(
                classifier_config, classifier_weights, classifier_opts
            )
        return cls(detector, classifier, **kwargs)

    @property
    def class_names(self) -> List[str]:
        """The classes cells are counted in."""
        source = self.classifier if self.classifier is not None else self.detector
        return list(source.class_names)

    def settings(self) -> Dict[str, Any]:
        """Everything that decides the cells of a field (for a run's fingerprint)."""
        return {
            "detector": dict(getattr(self.detector, "identity", {}) or {}),
            "detector_classes": list(self.detector.class_names),
            "classifier": None
            if self.classifier is None
            else {
                **self.classifier.identity,
                "class_names": list(self.classifier.class_names),
                "crop_size": self.classifier.crop_size,
                "crop_margin": self.classifier.crop_margin,
                **self._open_set_settings(),
            },
            "score_threshold": self.score_threshold,
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
            "nms_threshold": self.nms_threshold,
            "edge_margin": self.edge_margin,
            **({"kept_detector_classes": self.detector_classes} if self.detector_classes else {}),
        }

    def _open_set_settings(self) -> Dict[str, Any]:
        open_set = self.classifier.open_set if self.classifier is not None else None
        if open_set is None:
            return {}
        return {"open_set": {"score": open_set.score, "threshold": open_set.threshold}}

    def sources(self) -> Dict[str, Any]:
        """Config and weights paths of both models (for the report; not in the fingerprint)."""
        classifier = None
        if self.classifier is not None:
            classifier = dict(self.classifier.source)
        return {
            "detector": dict(getattr(self.detector, "source", {}) or {}),
            "classifier": classifier,
        }

    def _kept(self, dets: Detections) -> Detections:
        keep = np.asarray(dets.scores) >= self.score_threshold
        if self.detector_classes:
            keep &= np.isin(np.asarray(dets.classes), self._kept_ids)
        return dets.select(keep)

    def _detect_scored(self, image: np.ndarray) -> Detections:
        return self._kept(self.detector(image))

    def _detect_fixed_scale(self, image: np.ndarray) -> Detections:
        if self._unresized is None:
            self._unresized = unresized(self.detector)
        return self._kept(self._unresized(image))

    def detect(self, image: np.ndarray, prep: Optional[FieldPrep] = None) -> Tuple[Detections, int]:
        """One box per cell of a BGR field (tiled if large), and the number of tiles.

        With ``prep`` the field is resized by ``prep.factor`` first (tiled after that; the
        detector's own resize off when ``prep.fixed_scale``) and the boxes mapped back.
        """
        prep = prep or FieldPrep()
        detect_one = self._detect_fixed_scale if prep.fixed_scale else self._detect_scored

        def tiled(field: np.ndarray) -> Tuple[Detections, int]:
            return detect_tiled(
                detect_one,
                field,
                self.tile_size,
                self.tile_overlap,
                edge_margin=self.edge_margin,
                nms_threshold=self.nms_threshold,
            )

        return detect_rescaled(tiled, image, prep.factor)

    def _cells(
        self, dets: Detections, probs: Optional[np.ndarray], other: Optional[np.ndarray] = None
    ) -> List[Cell]:
        det_names = list(self.detector.class_names)
        cells = []
        for i in range(len(dets)):
            det_class = det_names[int(dets.classes[i])]
            box = tuple(float(v) for v in dets.boxes[i])
            if probs is None:
                cell = Cell(box, float(dets.scores[i]), det_class, det_class, float(dets.scores[i]))
            else:
                k = int(np.argmax(probs[i]))
                label = self.classifier.class_names[k]
                if other is not None and other[i]:
                    label = OTHER.abbr
                row = [float(p) for p in probs[i]]
                cell = Cell(box, float(dets.scores[i]), det_class, label, row[k], row)
            cells.append(cell)
        return cells

    def count_field(self, image: np.ndarray, prep: Optional[FieldPrep] = None) -> FieldCount:
        """The cells of an (H, W, 3) uint8 BGR field, with detection and recognition times
        (``prep``: stain normalisation and rescale before detection, see :meth:`detect`)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}"
            )
        start = time.perf_counter()
        if prep is not None:
            image = prep.normalise(image)
        dets, tiles = self.detect(image, prep)
        detect_s = time.perf_counter() - start
        start = time.perf_counter()
        probs = other = None
        if self.classifier is not None:
            probs, other = self.classifier.recognise(image, dets.boxes, self.batch_size)
        cells = self._cells(dets, probs, other)
        return FieldCount(cells, detect_s, time.perf_counter() - start, tiles)

    def count_image(self, image: np.ndarray, prep: Optional[FieldPrep] = None) -> List[Cell]:
        """The cells of an (H, W, 3) uint8 BGR field."""
        return self.count_field(image, prep).cells
