"""The inference-time measures of the robustness sweep, as detectron2 augmentations and a mapper.

- **auto-scale** (:class:`RulerResize`): red cells as a ruler, the count command's
  ``--auto-scale`` ruler itself (:class:`Ruler`: the product's
  :func:`~bmc_detectron.pipeline.field_checks.red_cell_ruler` and
  :func:`~bmc_detectron.pipeline.scale_plan.relative_size`). Each image the model sees (the
  rescaled copies included) is measured: the classical estimate, or the model's own red-cell
  boxes when it has a red-cell class and the training profile the training boxes' diameter (the
  model run as the count runs it, :func:`model_counter`); it is resized once by ``f * k``:
  ``f`` = the training images' red cells over the image's, ``k`` = the model's test resize of a
  training-sized image; the model's own test resize is not applied. The known rescale factor of
  a copy is not used. An image without a red-cell estimate gets the model's usual test resize.
  *Per case* (``Measures.per_case``): the images of a condition are one case resized by one
  factor, from the median of their red cells (:func:`case_ruler`), as the count command resizes
  the fields of a case.
- **stain normalisation** (:class:`ReinhardNormalize`): each image's L*a*b* statistics are moved
  to the training profile's Reinhard target before the model sees it (after the resize).

Boxes come back to the copy's pixels through the records' ``height`` / ``width`` as without the
measures, so evaluation stays detectron2's COCOEvaluator. :class:`RulerRecorder` collects what
the ruler measured per image (the mapper puts it in the model input as ``"ruler"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.evaluation import DatasetEvaluator

from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.detector import Detector, detector_class_names
from bmc_detectron.pipeline.field_checks import red_cell_ruler
from bmc_detectron.pipeline.field_prep import FieldPrep
from bmc_detectron.pipeline.scale_plan import (
    ScaleOptions,
    ScaleSetup,
    make_setup,
    relative_size,
)
from bmc_detectron.smear.profile import TrainingProfile
from bmc_detectron.smear.ruler import case_scale, rescale_factor
from bmc_detectron.smear.stain import STAIN_METHODS, ReinhardTarget, reinhard_normalize


class ReinhardTransform(T.Transform):
    """:func:`~bmc_detectron.smear.stain.reinhard_normalize` as a transform (geometry
    unchanged)."""

    def __init__(self, target: ReinhardTarget, image_format: str = "BGR"):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return reinhard_normalize(img, self.target, self.image_format)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class ReinhardNormalize(T.Augmentation):
    """Normalise every image to ``target`` (deterministic)."""

    def __init__(self, target: ReinhardTarget, image_format: str = "BGR"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        return ReinhardTransform(self.target, self.image_format)


@dataclass
class Ruler:
    """The count's red-cell ruler (``count --auto-scale``) on one model: a BGR image's red cells
    read by :func:`~bmc_detectron.pipeline.field_checks.red_cell_ruler` and related to the
    training images' by :func:`~bmc_detectron.pipeline.scale_plan.relative_size`.

    Attributes:
        setup: auto-scale (and the stain normalisation) with the training profile.
        counter: the model as the count runs it (:func:`model_counter`); its red-cell boxes are
            the ruler when it has a red-cell class and the profile the training boxes'
            diameter. None: the classical estimate only.
    """

    setup: ScaleSetup
    counter: Optional[CellCounter] = None

    def measure(self, image_bgr: np.ndarray) -> Dict[str, float]:
        """``rbc_px`` (the classical estimate, ``nan``: none) and ``relative`` (the image's red
        cells over the training images', ``nan``: unmeasured)."""
        reading = red_cell_ruler(image_bgr, self.counter, self.setup)
        relative = relative_size(reading, self.setup.model)
        return {"rbc_px": float(reading.rbc_px), "relative": float(relative)}


def model_counter(cfg: CfgNode, model: torch.nn.Module) -> CellCounter:
    """``model`` (of ``cfg``, in eval mode) as the count command runs it with its default
    settings: the config's test resize and input format, detections scoring 0.5 or more."""
    detector = Detector(
        model,
        detector_class_names(cfg),
        min_size=int(cfg.INPUT.MIN_SIZE_TEST),
        max_size=int(cfg.INPUT.MAX_SIZE_TEST),
        input_format=cfg.INPUT.FORMAT,
        device=cfg.MODEL.DEVICE,
    )
    return CellCounter(detector)


class RulerResize(T.Augmentation):
    """Resize an image by its red cells read by ``ruler`` (see the module doc), or by
    ``case_relative`` (the red cells of a whole case over the training images',
    :func:`case_ruler`) when given. ``last`` holds what the last image measured: ``rbc_px``
    (``nan`` when unmeasured), ``relative`` (its red cells over the training images', the
    estimated rescale factor) and ``factor`` (the resize applied)."""

    def __init__(
        self,
        ruler: Ruler,
        min_size: int,
        max_size: int,
        image_format: str = "BGR",
        case_relative: Optional[float] = None,
    ):
        super().__init__()
        scale = ruler.setup.model
        if scale is None or not scale.rbc_diameter_px:
            raise ValueError("auto-scale: the training profile has no red-cell diameter")
        k = scale.input_factor(SimpleNamespace(min_size=min_size, max_size=max_size))
        if k is None:
            raise ValueError(f"auto-scale: {scale.source} has no training image size")
        self._init(locals())  # also sets self.k
        self.last: Dict[str, float] = {}

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        rbc, relative = float("nan"), self.case_relative
        if relative is None:
            bgr = image if self.image_format == "BGR" else np.ascontiguousarray(image[..., ::-1])
            reading = self.ruler.measure(bgr)
            rbc, relative = reading["rbc_px"], reading["relative"]
        if not (math.isfinite(relative) and relative > 0):
            nh, nw = T.ResizeShortestEdge.get_output_shape(h, w, self.min_size, self.max_size)
            self.last = {"rbc_px": rbc, "relative": float("nan"), "factor": nh / h}
            return T.ResizeTransform(h, w, nh, nw)
        factor = FieldPrep(rescale_factor(relative, 1.0) * self.k, fixed_scale=True).factor
        self.last = {"rbc_px": rbc, "relative": float(relative), "factor": factor}
        nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
        return T.ResizeTransform(h, w, nh, nw)


def case_ruler(files: Sequence[str], ruler: Ruler) -> Tuple[float, List[Dict[str, float]]]:
    """The case's red cells over the training images' (median over the images, ``nan`` when
    none is measured; :func:`~bmc_detectron.smear.ruler.case_scale`, as the count command
    combines its fields) and each image's measurement (:meth:`Ruler.measure`)."""
    entries = []
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(path)
        entries.append(ruler.measure(image))
    return case_scale([e["relative"] for e in entries]).median_px, entries


class MeasuredMapper(DatasetMapper):
    """The test :class:`DatasetMapper` whose outputs also carry the ruler's measurement."""

    def __init__(self, cfg: CfgNode, augmentations: List[T.Augmentation]):
        super().__init__(cfg, False, augmentations=augmentations)
        self.ruler = next((a for a in augmentations if isinstance(a, RulerResize)), None)

    def __call__(self, dataset_dict: dict) -> dict:
        out = super().__call__(dataset_dict)
        if self.ruler is not None:
            out["ruler"] = dict(self.ruler.last)
        return out


class RulerRecorder(DatasetEvaluator):
    """Collects the ``"ruler"`` entries of the inputs; ``evaluate`` gives their summary."""

    def __init__(self, true_factor: float):
        self.true_factor = float(true_factor)
        self.entries: List[Dict[str, float]] = []

    def reset(self) -> None:
        self.entries = []

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        self.entries += [dict(x["ruler"]) for x in inputs if "ruler" in x]

    def evaluate(self) -> Dict[str, Any]:
        return {"ruler": summarise_ruler(self.entries, self.true_factor)}


def summarise_ruler(entries: List[Dict[str, float]], true_factor: float) -> Dict[str, Any]:
    """Mean / standard deviation of the estimated rescale factors, images measured / unmeasured."""
    rel = np.asarray([e["relative"] for e in entries], np.float64)
    ok = rel[np.isfinite(rel)]
    mean = float(ok.mean()) if ok.size else float("nan")
    return {
        "true_factor": float(true_factor),
        "mean_estimate": round(mean, 4),
        "sd_estimate": round(float(ok.std()), 4) if ok.size else float("nan"),
        "images": int(ok.size),
        "unmeasured": int(rel.size - ok.size),
    }


@dataclass(frozen=True)
class Measures:
    """The measures of one sweep: ``auto_scale`` (red-cell ruler; ``per_case``: one factor for
    all the images of a condition, their median, else each image its own) and ``stain`` (a
    method of :data:`STAIN_METHODS` or None), with the training ``profile`` they need."""

    auto_scale: bool = False
    stain: Optional[str] = None
    profile: Optional[TrainingProfile] = None
    profile_source: str = ""
    per_case: bool = False

    def __post_init__(self) -> None:
        if self.stain is not None and self.stain not in STAIN_METHODS:
            raise ValueError(f"stain normalisation {self.stain!r}: expected one of {STAIN_METHODS}")
        if (self.auto_scale or self.stain) and self.profile is None:
            raise ValueError("the inference-time measures need a training profile")

    @property
    def names(self) -> List[str]:
        """``["auto-scale", "Reinhard"]``, those on (``"auto-scale per case"``)."""
        ruler = "auto-scale per case" if self.per_case else "auto-scale"
        return ([ruler] if self.auto_scale else []) + (
            [self.stain.capitalize()] if self.stain else []
        )

    def ruler(self, counter: Optional[CellCounter] = None) -> Ruler:
        """The count's red-cell ruler with these measures (``counter``: the model, whose red-cell
        boxes are read when it has a red-cell class; None: the classical estimate only)."""
        options = ScaleOptions(auto=True, stain=self.stain)
        return Ruler(make_setup(options, self.profile, self.profile_source), counter)

    def variant(self, model: str) -> str:
        """The name of a model's results under these measures: ``"seed0 + auto-scale"``."""
        return " + ".join([model, *self.names])

    def augmentations(
        self,
        cfg: CfgNode,
        plain: T.Augmentation,
        case_relative: Optional[float] = None,
        counter: Optional[CellCounter] = None,
    ) -> List[T.Augmentation]:
        """The test augmentations: the ruler resize (by ``case_relative`` when given, else by
        each image's red cells, :meth:`ruler` of ``counter``) instead of ``plain`` with
        auto-scale, then the stain normalisation."""
        fmt, size = cfg.INPUT.FORMAT, (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        augs: List[T.Augmentation] = [plain]
        if self.auto_scale:
            augs = [RulerResize(self.ruler(counter), *size, fmt, case_relative)]
        if self.stain == "reinhard":
            augs.append(ReinhardNormalize(self.profile.reinhard, fmt))
        return augs


def split_variant(name: str) -> tuple:
    """``"seed0 + auto-scale + Reinhard"`` → ``("seed0", "auto-scale + Reinhard")``; the variant
    is ``"plain"`` without measures."""
    model, _, measures = name.partition(" + ")
    return model, measures or "plain"
