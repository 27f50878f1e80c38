"""The training data's profile, saved beside a model as ``training_profile.json``.

What the count command needs to know about the images a detector was trained on:

- **scale**: the micrometres per pixel of the training images (the config's
  ``BMC.DATA.MICRONS_PER_PIXEL`` when given, else the generator's exact value, null when
  unknown), their red-cell diameter in pixels (the generator's exact value for generated data,
  else the median of the classical estimate of :mod:`.ruler`; the ruler's reading is kept
  beside it as ``rbc_ruler_px``), the generator's nucleated-cell diameters, the median diameter
  of the annotated boxes of a red-cell class when the dataset has one, and the median image size
  (the detector's test resize of such an image is the scale the model really saw).
  ``scale_source`` says where each scale value came from: ``"given"`` (config or command line),
  ``"generator"`` (the dataset's COCO ``info["profile"]``, :mod:`.known_scale`) or ``"ruler"``;
- **colour**: the range of per-image L*a*b* means and standard deviations
  (:class:`~.ranges.TrainingRanges`, the out-of-distribution ranges) and their averages
  (:class:`~.stain.ReinhardTarget`, the stain normalisation target).

    profile = profile_from_dataset(["bccd_train"], max_images=32, microns_per_pixel=0.1)
    profile.save(Path(output_dir) / PROFILE_FILE)
    profile = TrainingProfile.load(path)

Colour and red-cell statistics come from a capped, evenly spaced sample of the images; sizes and
box diameters from every record (no image is read for them). Profiles written before
``scale_source`` existed load as ruler readings.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from bmc_detectron.smear.known_scale import KnownScale, read_known_scale
from bmc_detectron.smear.ranges import TrainingRanges
from bmc_detectron.smear.ruler import estimate_rbc_diameter
from bmc_detectron.smear.stain import ReinhardTarget, lab_stats
from bmc_detectron.structures.boxes import record_boxes

logger = logging.getLogger(__name__)

PROFILE_FILE = "training_profile.json"
PROFILE_FORMAT = "bmc-training-profile"
PROFILE_VERSION = 1
# Class names (lower case) of mature red cells in a detector's or dataset's classes.
RED_CELL_NAMES = ("rbc", "rbcs", "red blood cell", "red cell", "erythrocyte")
# Diameter of a mature red cell (micrometres): the nominal ruler when nothing else is known.
NOMINAL_RBC_MICRONS = 7.5


def red_cell_class(class_names: Sequence[str]) -> Optional[int]:
    """Index of the mature red-cell class among ``class_names`` (None if there is none)."""
    for i, name in enumerate(class_names):
        if str(name).strip().lower() in RED_CELL_NAMES:
            return i
    return None


def box_diameters(
    boxes_xyxy: np.ndarray, height: Optional[int], width: Optional[int], border: float = 2.0
) -> np.ndarray:
    """The longer side of each box that does not touch the image border (a cut cell's box is
    too small); all boxes when the image size is unknown."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    keep = np.ones(len(b), bool)
    if height and width:
        keep = (b[:, 0] > border) & (b[:, 1] > border)
        keep &= (b[:, 2] < width - border) & (b[:, 3] < height - border)
    sides = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    return sides[keep & (sides > 0)]


def _opt_float(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) and value > 0 else None


@dataclass
class TrainingProfile:
    """The training data's scale and colour statistics (see the module doc).

    Attributes:
        ood: colour ranges and red-cell diameter (px) for the out-of-distribution check.
        reinhard: the mean L*a*b* statistics, the stain normalisation target.
        image_size: median (height, width) of the training images, or None.
        microns_per_pixel: pixel size of the training images, or None when unknown.
        rbc_box_diameter_px: median longer side of the annotated red-cell boxes, or None.
        rbc_class: the dataset's red-cell class name, or None.
        source: where it was computed from (datasets, images measured, time).
        known_rbc_diameter_px: the generator's exact red-cell diameter (px), or None.
        cell_diameter_px: the generator's nucleated-cell diameter summary (px), or None.
        scale_source: per scale value, where it came from (module doc); {} for old profiles.
    """

    ood: TrainingRanges
    reinhard: ReinhardTarget
    image_size: Optional[Tuple[int, int]] = None
    microns_per_pixel: Optional[float] = None
    rbc_box_diameter_px: Optional[float] = None
    rbc_class: Optional[str] = None
    source: Dict[str, Any] = field(default_factory=dict)
    known_rbc_diameter_px: Optional[float] = None
    cell_diameter_px: Optional[Dict[str, float]] = None
    scale_source: Dict[str, Optional[str]] = field(default_factory=dict)

    @property
    def rbc_ruler_px(self) -> Optional[float]:
        """The training images' median red-cell diameter by the ruler (classical estimate)."""
        return _opt_float(self.ood.rbc_diameter_px)

    @property
    def rbc_diameter_px(self) -> Optional[float]:
        """The training images' red-cell diameter: the generator's exact value when known,
        else the ruler's reading, or None."""
        return self.known_rbc_diameter_px or self.rbc_ruler_px

    def to_dict(self) -> Dict[str, Any]:
        """The JSON content of ``training_profile.json``."""
        return {
            "format": PROFILE_FORMAT,
            "format_version": PROFILE_VERSION,
            "microns_per_pixel": self.microns_per_pixel,
            "rbc_diameter_px": self.rbc_diameter_px,
            "rbc_ruler_px": self.rbc_ruler_px,
            "cell_diameter_px": None
            if self.cell_diameter_px is None
            else dict(self.cell_diameter_px),
            "scale_source": dict(self.scale_source),
            "rbc_box_diameter_px": self.rbc_box_diameter_px,
            "rbc_class": self.rbc_class,
            "image_size": None if self.image_size is None else list(self.image_size),
            "ood": self.ood.to_dict(),
            "reinhard": self.reinhard.to_dict(),
            "source": dict(self.source),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> TrainingProfile:
        """Inverse of :meth:`to_dict`; ValueError when ``data`` is not a training profile."""
        if data.get("format") != PROFILE_FORMAT or data.get("format_version") != PROFILE_VERSION:
            raise ValueError(
                f"not a {PROFILE_FORMAT} v{PROFILE_VERSION} file "
                f"(format {data.get('format')!r} v{data.get('format_version')!r})"
            )
        ood = dict(data["ood"])
        if ood.get("rbc_diameter_px") is None:
            ood["rbc_diameter_px"] = float("nan")
        size = data.get("image_size")
        reinhard = data["reinhard"]
        scale_source = dict(data.get("scale_source") or {})
        known = scale_source.get("rbc_diameter_px") == "generator"
        cells = data.get("cell_diameter_px")
        return cls(
            ood=TrainingRanges.from_dict(ood),
            reinhard=ReinhardTarget(
                tuple(float(v) for v in reinhard["mean"]), tuple(float(v) for v in reinhard["std"])
            ),
            image_size=None if not size else (int(size[0]), int(size[1])),
            microns_per_pixel=_opt_float(data.get("microns_per_pixel")),
            rbc_box_diameter_px=_opt_float(data.get("rbc_box_diameter_px")),
            rbc_class=data.get("rbc_class"),
            source=dict(data.get("source") or {}),
            known_rbc_diameter_px=_opt_float(data.get("rbc_diameter_px")) if known else None,
            cell_diameter_px=dict(cells) if isinstance(cells, dict) else None,
            scale_source=scale_source,
        )

    def save(self, path: Path) -> Path:
        """Write the profile (atomically) to ``path``."""
        from bmc_detectron.utils.io import write_json_atomic

        return write_json_atomic(self.to_dict(), Path(path), indent=1)

    @classmethod
    def load(cls, path: Path) -> TrainingProfile:
        """Read a profile; ValueError (naming the file) when it is not one."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a training profile ({e})") from None
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def sample_indices(n: int, cap: int) -> List[int]:
    """At most ``cap`` evenly spaced indices of ``range(n)`` (all when ``cap <= 0``)."""
    if cap <= 0 or n <= cap:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, cap)})


def profile_from_records(
    records: Sequence[Dict[str, Any]],
    class_names: Sequence[str] = (),
    *,
    max_images: int = 32,
    microns_per_pixel: Optional[float] = None,
    source: Optional[Dict[str, Any]] = None,
    known: Optional[KnownScale] = None,
) -> TrainingProfile:
    """The profile of detectron2 dataset records (``file_name``, ``height``, ``width``,
    ``annotations``); images are read with OpenCV (BGR). ValueError when none is readable.

    ``known``: the generator's exact scale of the records (:func:`known_scale_of`); its red-cell
    and nucleated-cell diameters are stored, and its pixel size unless ``microns_per_pixel``
    is given (which wins)."""
    means, stds, diameters, read_sizes = [], [], [], []
    chosen = sample_indices(len(records), max_images)
    for i in chosen:
        image = cv2.imread(str(records[i]["file_name"]), cv2.IMREAD_COLOR)
        if image is None:
            logger.warning("%s: unreadable, left out of the profile", records[i]["file_name"])
            continue
        mean, std = lab_stats(image, "BGR")
        means.append(mean)
        stds.append(std)
        diameters.append(estimate_rbc_diameter(image, "BGR").median_px)
        read_sizes.append(image.shape[:2])
    if not means:
        raise ValueError("no readable training image to profile")
    sizes = [(r["height"], r["width"]) for r in records if r.get("height") and r.get("width")]
    sizes = sizes or read_sizes
    red = red_cell_class(class_names)
    boxes = []
    if red is not None:
        for r in records:
            boxes.append(box_diameters(record_boxes(r, red)[0], r.get("height"), r.get("width")))
    box_d = np.concatenate(boxes) if boxes else np.zeros(0)
    info = {"images": len(records), "images_measured": len(means), "red_boxes": int(box_d.size)}
    info["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
    mpp, scale_source = _scale_values(microns_per_pixel, known, diameters)
    return TrainingProfile(
        ood=TrainingRanges.from_stats(means, stds, diameters),
        reinhard=ReinhardTarget(
            tuple(float(v) for v in np.mean(means, axis=0)),
            tuple(float(v) for v in np.mean(stds, axis=0)),
        ),
        image_size=tuple(int(v) for v in np.median(np.asarray(sizes), axis=0)) if sizes else None,
        microns_per_pixel=mpp,
        rbc_box_diameter_px=float(np.median(box_d)) if box_d.size >= 5 else None,
        rbc_class=None if red is None else str(class_names[red]),
        source={**(source or {}), **info},
        known_rbc_diameter_px=None if known is None else known.rbc_diameter_px,
        cell_diameter_px=None
        if known is None or not known.cell_diameter_px
        else dict(known.cell_diameter_px),
        scale_source=scale_source,
    )


def _scale_values(
    given_mpp: Optional[float], known: Optional[KnownScale], ruler_readings: Sequence[float]
) -> Tuple[Optional[float], Dict[str, Optional[str]]]:
    """The profile's pixel size and where each scale value comes from (module doc)."""
    given = _opt_float(given_mpp)
    mpp = given if given is not None else (None if known is None else known.microns_per_pixel)
    if given is not None and known is not None:
        if not np.isclose(given, known.microns_per_pixel, rtol=0.01):
            logger.warning(
                "given pixel size %.4g um/px differs from the generator's exact %.4g um/px; "
                "the given one is used",
                given,
                known.microns_per_pixel,
            )
    ruler = "ruler" if np.isfinite(np.asarray(ruler_readings, np.float64)).any() else None
    return mpp, {
        "microns_per_pixel": "given" if given is not None else ("generator" if known else None),
        "rbc_diameter_px": "generator" if known is not None else ruler,
        "cell_diameter_px": "generator" if known is not None and known.cell_diameter_px else None,
    }


def known_scale_of(json_files: Sequence[Optional[str]]) -> Optional[KnownScale]:
    """The exact scale shared by the COCO files of the training datasets: None unless every
    file carries a generator profile and they agree on pixel size and red-cell diameter. The
    nucleated-cell summary is kept for a single file only (summaries are not merged)."""
    scales = [read_known_scale(f) if f else None for f in json_files]
    if not scales or any(k is None for k in scales):
        return None
    first = scales[0]
    if not all(first.agrees(k) for k in scales[1:]):
        logger.warning("training datasets have different generator scales: ruler reading used")
        return None
    return first if len(scales) == 1 else KnownScale(first.microns_per_pixel, first.rbc_diameter_px)


def profile_from_dataset(
    names: Sequence[str], *, max_images: int = 32, microns_per_pixel: Optional[float] = None
) -> TrainingProfile:
    """The profile of registered datasets (their records together, classes of the first; the
    exact scale of their COCO files' ``info["profile"]`` when they carry one)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    records: List[Dict[str, Any]] = []
    for name in names:
        if name not in DatasetCatalog.list():
            raise ValueError(f"dataset {name!r} is not registered")
        records += DatasetCatalog.get(name)
    classes = MetadataCatalog.get(names[0]).get("thing_classes") or []
    known = known_scale_of([MetadataCatalog.get(n).get("json_file") for n in names])
    return profile_from_records(
        records,
        classes,
        max_images=max_images,
        microns_per_pixel=microns_per_pixel,
        source={"datasets": list(names)},
        known=known,
    )
