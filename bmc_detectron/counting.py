"""One counter factory: what a count is made of (:class:`CounterSpec`) and how it is built.

    spec = CounterSpec(detector_config="det.yaml", detector_weights="det.pth",
                       classifier_config="cls.yaml", classifier_weights="cls.pth")
    counter = build_counter(spec)                       # a pipeline.CellCounter
    setup = scale_setup(spec, counter, ScaleOptions(auto=True))

The ``count``, ``serve`` and ``batch`` commands and ``make demo`` build their counter here (a spec
holds only plain values). A whole slide file is counted by :func:`count_slide_file` (``count
--slide`` and every slide of a batch): the slide opened, its level chosen, its zone counted. The
module sits above :mod:`bmc_detectron.pipeline`, :mod:`bmc_detectron.slides` and
:mod:`bmc_detectron.deploy` (the ONNX Runtime backend), which it imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from bmc_detectron.config import build_cfg
from bmc_detectron.deploy.runtime import build_onnx_counter
from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.model_scale import ModelScale, locate_profile, sidecar_scale
from bmc_detectron.pipeline.run_io import check_output
from bmc_detectron.pipeline.scale_decision import SOURCE_WORDS
from bmc_detectron.pipeline.scale_plan import ScaleOptions, ScaleSetup, make_setup
from bmc_detectron.pipeline.slide_run import ICSH_CELLS, run_slide_count
from bmc_detectron.slides.reader import open_slide
from bmc_detectron.slides.source import SlideSource
from bmc_detectron.structures.differential import Lineage

BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class CounterSpec:
    """The models of a count and the counter's settings (plain values only).

    Models:
        backend: ``"torch"`` (configs and weights) or ``"onnx"`` (exported models, ONNX Runtime).
        detector_config, detector_weights, detector_opts: torch: the detector's config, weights
            and ``KEY VALUE`` config overrides.
        classifier_config, classifier_weights, classifier_opts: torch: the cell classifier's
            (None: the detector's classes are counted).
        detector_onnx, classifier_onnx: onnx: the exported models (+ their ``.json`` sidecars).
        training_profile: the detector's ``training_profile.json`` (None: the ONNX sidecar's
            copy, else the one beside the detector's weights or ``.onnx``).
        device: torch: ``cpu`` or ``cuda`` (None: cuda if available).
        threads: inference threads (None: the runtime's default).

    Settings (see :class:`~bmc_detectron.pipeline.counter.CellCounter`):
        score_threshold: detections scoring below it are dropped (the detector's own test
            threshold is set to it too).
        tile_size, tile_overlap, nms_threshold, batch_size, detector_classes: the counter's.
        open_set_threshold: a cell whose open-set score is below it is Other (None: the
            threshold stored with the classifier, if any; ``-inf``: no open-set outcome).
    """

    backend: str = "torch"
    detector_config: Optional[str] = None
    detector_weights: Optional[str] = None
    detector_opts: Tuple[str, ...] = ()
    classifier_config: Optional[str] = None
    classifier_weights: Optional[str] = None
    classifier_opts: Tuple[str, ...] = ()
    detector_onnx: Optional[str] = None
    classifier_onnx: Optional[str] = None
    training_profile: Optional[str] = None
    device: Optional[str] = None
    threads: Optional[int] = None
    score_threshold: float = 0.5
    tile_size: int = 1024
    tile_overlap: int = 128
    nms_threshold: float = 0.5
    batch_size: int = 64
    detector_classes: Tuple[str, ...] = ()
    open_set_threshold: Optional[float] = None

    def counter_settings(self) -> Dict[str, Any]:
        """The :class:`CellCounter` keyword arguments."""
        return dict(
            score_threshold=self.score_threshold,
            tile_size=self.tile_size,
            tile_overlap=self.tile_overlap,
            nms_threshold=self.nms_threshold,
            batch_size=self.batch_size,
            detector_classes=list(self.detector_classes),
        )


def resolve_device(device: Optional[str]) -> str:
    """``device``, or ``cuda`` when there is one, else ``cpu``."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def build_counter(spec: CounterSpec) -> CellCounter:
    """The counter ``spec`` describes; ValueError when its backend lacks a model file name.

    Missing files raise FileNotFoundError, bad configs :class:`~bmc_detectron.config.ConfigError`;
    the ONNX backend raises ImportError without ``onnxruntime``.
    """
    counter = _build_counter(spec)
    if counter.classifier is not None:
        counter.classifier = counter.classifier.with_open_set_threshold(spec.open_set_threshold)
    return counter


def _build_counter(spec: CounterSpec) -> CellCounter:
    settings = spec.counter_settings()
    if spec.backend == "onnx":
        if not spec.detector_onnx:
            raise ValueError("the ONNX backend needs the detector's .onnx file")
        return build_onnx_counter(
            spec.detector_onnx,
            spec.classifier_onnx,
            threads=spec.threads,
            detector_score_threshold=spec.score_threshold,
            **settings,
        )
    if spec.backend != "torch":
        raise ValueError(f"unknown backend {spec.backend!r}: one of {BACKENDS}")
    if not (spec.detector_config and spec.detector_weights):
        raise ValueError("the torch backend needs the detector's config and weights")
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = resolve_device(spec.device)
    thresh = str(spec.score_threshold)
    det_opts: List[str] = [*spec.detector_opts, "MODEL.DEVICE", device]
    det_opts += ["MODEL.RETINANET.SCORE_THRESH_TEST", thresh]
    det_opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", thresh]
    return CellCounter.from_configs(
        spec.detector_config,
        spec.detector_weights,
        spec.classifier_config,
        spec.classifier_weights,
        detector_opts=det_opts,
        classifier_opts=[*spec.classifier_opts, "MODEL.DEVICE", device],
        **settings,
    )


def scale_setup(
    spec: CounterSpec,
    counter: CellCounter,
    options: ScaleOptions = ScaleOptions(),
    *,
    per_request: bool = False,
) -> ScaleSetup:
    """The scale and stain options with the model's training profile and scale; ValueError
    (one line) when the options cannot work.

    The model's scale is the profile's; what the profile lacks is read from the detector's config
    (torch) or its ONNX sidecar when the options need it, or, with ``per_request`` (the web page,
    where each request may give its microns per pixel), whenever the profile has no microns per
    pixel.
    """
    profile, where = locate_profile(
        spec.training_profile, spec.detector_weights, spec.detector_onnx, counter.detector
    )
    if per_request:
        needed = profile is None or profile.microns_per_pixel is None
    else:
        wanted = options.microns_per_pixel is not None or options.auto
        known = profile is not None and profile.microns_per_pixel and profile.rbc_diameter_px
        needed = wanted and not known
    config_scale = None
    if needed:
        if spec.backend == "onnx":
            config_scale = sidecar_scale(counter.detector)
        else:
            cfg = build_cfg(spec.detector_config, list(spec.detector_opts))
            config_scale = ModelScale.from_config(cfg)
    return make_setup(options, profile, where, config_scale)


def prepare_count(
    spec: CounterSpec, output: Path, options: ScaleOptions, *, overwrite: bool = False
) -> Tuple[CellCounter, ScaleSetup]:
    """Before a count run: the report folder checked (see
    :func:`~bmc_detectron.pipeline.run_io.check_output`), the counter built, its scale set up."""
    check_output(output, overwrite)
    counter = build_counter(spec)
    return counter, scale_setup(spec, counter, options)


@dataclass(frozen=True)
class SlideOptions:
    """How a slide file is counted (:func:`count_slide_file`; plain values, picklable).

    target_cells: count fields until this many cells are in the differential.
    field_size: a field's side in the counting level's pixels.
    level: the level to count at (None: the one matching the model's pixel size).
    backend: the slide reader (:data:`bmc_detectron.slides.reader.BACKENDS`).
    microns_per_pixel: the slide's full-resolution pixel size, overriding its own (None: its own).
    """

    target_cells: int = ICSH_CELLS
    field_size: int = 1024
    level: Optional[int] = None
    backend: str = "auto"
    microns_per_pixel: Optional[float] = None


def count_slide_file(
    counter: CellCounter,
    setup: ScaleSetup,
    slide_file: Path,
    output: Path,
    options: SlideOptions = SlideOptions(),
    *,
    uncertain_below: float = 0.5,
    lineage: Optional[Lineage] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Count the slide ``slide_file`` into the report folder ``output``
    (:func:`~bmc_detectron.pipeline.slide_run.run_slide_count`, resumable per field) at
    ``options.level`` or the level nearest the model's pixel size (``setup.model``; build the
    setup with ``scale_setup(..., per_request=True)``). Returns the summary; raises
    :class:`~bmc_detectron.slides.reader.SlideError` for a slide that cannot be read and what
    :func:`run_slide_count` raises."""
    with open_slide(slide_file, options.backend, options.microns_per_pixel) as slide:
        model_mpp = None if setup.model is None else setup.model.microns_per_pixel
        level = slide.best_level(model_mpp) if options.level is None else options.level
        return run_slide_count(
            counter,
            SlideSource(slide, level),
            output,
            target_cells=options.target_cells,
            field_size=options.field_size,
            uncertain_below=uncertain_below,
            lineage=lineage,
            overwrite=overwrite,
            progress=progress,
            scale=setup,
        )


def scale_line(scale: Dict[str, Any]) -> str:
    """What scale the count used, in one line (from ``summary["scale"]``)."""
    source, mpp = scale.get("source"), scale.get("microns_per_pixel")
    text = SOURCE_WORDS.get(source, "none")
    if source == "none":
        text = "not settled, fields at the model's scale"
        if not scale.get("asked"):
            text = "not set (automatic scale off), the training images' pixel size assumed"
    if mpp:
        text = f"{mpp:.4g} um/px ({text})"
    elif scale.get("microns_per_pixel_nominal") and source == "ruler":
        text += f", about {scale['microns_per_pixel_nominal']:.4g} um/px for 7.5 um red cells"
    if source not in (None, "none", "given") and scale.get("confidence") is not None:
        text += f", confidence {100 * scale['confidence']:.0f} %"
    ruler = scale.get("red_cells")
    if ruler:
        text += (
            f"; red cells {ruler['median_px'] or 'n/a'} px, "
            f"{ruler['relative_to_training']:.3g}x the training images', "
            f"spread {100 * ruler['spread']:.1f} %"
        )
    return f"scale: {text}; fields resized by {scale.get('factor', 1.0):.4g} before detection"


def summary_lines(summary: Dict[str, Any], output: Path) -> List[str]:
    """A finished count in a few lines: cells, fields, the report, the scale, the warnings."""
    head = (
        f"{summary['counted']} cells counted, {summary['uncertain']['total']} uncertain, "
        f"{summary.get('other', 0)} other (no known type), in "
        f"{len(summary['fields'])} field(s), {len(summary['skipped'])} skipped: "
        f"{Path(output) / 'report.html'}"
    )
    return [head, scale_line(summary["scale"])] + [f"warning: {w}" for w in summary["warnings"]]
