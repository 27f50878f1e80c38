"""What ``bmc count`` and ``bmc batch`` share of their command lines: the counter's models and
settings from the parsed arguments (not a command; tools parse, the library takes plain values)."""

from __future__ import annotations

import argparse

from bmc_detectron.counting import CounterSpec


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
