"""What ``bmc count`` and ``bmc batch`` share of their command lines: the counter's models and
settings from the parsed arguments (not a command; tools parse, the library takes plain values)."""

from __future__ import annotations

import argparse
from typing import Any

from bmc_detectron.counting import CounterSpec, SlideOptions
from bmc_detectron.pipeline.slide_run import ICSH_CELLS
from bmc_detectron.slides.reader import BACKENDS


def counter_spec(args: argparse.Namespace) -> CounterSpec:
    """The models and counter settings the arguments give (ONNX Runtime with --detector-onnx);
    ``threads`` and ``detector_classes`` are read when the command has them."""
    if not (args.detector_onnx or (args.detector_config and args.detector_weights)):
        raise ValueError("give --detector-config and --detector-weights, or --detector-onnx")
    return CounterSpec(
        backend="onnx" if args.detector_onnx else "torch",
        detector_config=args.detector_config,
        detector_weights=args.detector_weights,
        detector_opts=tuple(args.detector_opts),
        classifier_config=args.classifier_config,
        classifier_weights=args.classifier_weights,
        classifier_opts=tuple(args.classifier_opts),
        detector_onnx=args.detector_onnx,
        classifier_onnx=args.classifier_onnx,
        training_profile=args.training_profile,
        device=args.device,
        threads=getattr(args, "threads", None),
        score_threshold=args.score_threshold,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        nms_threshold=args.nms_threshold,
        batch_size=args.batch_size,
        detector_classes=tuple(getattr(args, "detector_classes", None) or ()),
        open_set_threshold=args.open_set_threshold,
    )


def add_slide_arguments(group: Any) -> None:
    """The whole-slide options (a parser or an argument group): ``--target-cells``,
    ``--field-size``, ``--slide-level``, ``--slide-backend``."""
    group.add_argument(
        "--target-cells", type=int, default=ICSH_CELLS, help="count fields until this many cells"
    )
    group.add_argument(
        "--field-size", type=int, default=1024, help="field side (counting level px)"
    )
    group.add_argument("--slide-level", type=int, help="level to count at (default: the model's)")
    group.add_argument("--slide-backend", choices=BACKENDS, default="auto", help="slide reader")


def slide_options(args: argparse.Namespace) -> SlideOptions:
    """The slide options the arguments give (``--microns-per-pixel``: the slide's pixel size)."""
    return SlideOptions(
        target_cells=args.target_cells,
        field_size=args.field_size,
        level=args.slide_level,
        backend=args.slide_backend,
        microns_per_pixel=args.microns_per_pixel,
    )
