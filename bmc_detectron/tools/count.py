"""Count the nucleated cells of a case's fields and report the marrow differential.

    bmc count --detector-config C --detector-weights W \\
        [--classifier-config C2 --classifier-weights W2] --input 'case01/*.png' \\
        --output reports/case01 [--tile-size 1024 --tile-overlap 128] [--uncertain-below 0.5] \
        [--microns-per-pixel 0.12 | --no-auto-scale] [--stain-normalize reinhard] [--strict-scale]

Writes ``report.html``, ``summary.json``, ``counts.csv``, ``cells.csv``, drawings in ``fields/``
and one result per field in ``cells/`` (see :mod:`bmc_detectron.pipeline.run`).

Scale and stain: ``--microns-per-pixel`` gives the input's pixel size (it always wins);
without it the count finds the scale itself, by default (``--auto-scale``, on unless
``--no-auto-scale``; :mod:`bmc_detectron.pipeline.scale_decision`: the files' own pixel size,
else the detector probe, else the red cells where they agree with each other; a case none
settles is counted at the model's scale with a warning, refused with ``--strict-scale``); either
way every field is resized to the scale the detector was trained at and the boxes mapped back.
``--no-auto-scale`` (and no ``--microns-per-pixel``) counts every field as it is: its pixel
size assumed to be the training images'. The model's scale
and colours come from ``training_profile.json`` (``--training-profile``, default: beside the
detector's weights or in the ONNX sidecar; made by training or by ``estimate_scale --dataset``),
else from the config's ``BMC.DATA.MICRONS_PER_PIXEL`` / ``RBC_DIAMETER_PX``. With a profile every
field is also checked against the training data's colour and scale and flagged, with the reason,
in summary.json and report.html. Every field's size as the detector sees it (after its test
resize, per tile) is compared with the training images' (their training resize): more than
``--detector-scale-tolerance`` (a factor, default 1.5) away is warned, or refused (exit 2) with
``--strict-scale``. Warnings go to stderr, ``summary.json`` (``warnings``, ``warning_codes``)
and the report. An interrupted
run resumes in the same folder without counting finished fields again; a finished report is only
replaced with ``--overwrite``. Exit status: 0 done, 1 done but some inputs were skipped (listed in
the report), 2 bad arguments / nothing to count / a finished report in the way.

A whole slide (pyramidal TIFF, SVS; other formats with ``pip install .[wsi]`` and OpenSlide):
``--slide case.svs`` instead of ``--input`` counts the slide's monolayer zone, fields of
``--field-size`` px best first, until ``--target-cells`` (default 500) cells are counted
(:mod:`bmc_detectron.pipeline.slide_run`, :mod:`bmc_detectron.slides`), at the level whose pixel
size matches the model's (``--slide-level`` to choose); ``--microns-per-pixel`` then overrides
the slide's own full-resolution pixel size (the automatic scale does not apply to a slide: an
explicit ``--auto-scale`` with ``--slide`` is refused). The report adds ``overview.png``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from bmc_detectron.config import ConfigError
from bmc_detectron.counting import (
    build_counter,
    count_slide_file,
    prepare_count,
    scale_setup,
    summary_lines,
)
from bmc_detectron.evaluation.open_set import threshold_value
from bmc_detectron.pipeline.detector_view import DETECTOR_SCALE_TOLERANCE, ScaleMismatchError
from bmc_detectron.pipeline.run import run_count
from bmc_detectron.pipeline.run_io import OutputExistsError, check_output
from bmc_detectron.pipeline.scale_plan import ScaleOptions
from bmc_detectron.slides.reader import open_slide
from bmc_detectron.smear.stain import STAIN_METHODS
from bmc_detectron.structures.differential import Lineage
from bmc_detectron.tools.count_args import add_slide_arguments, counter_spec, slide_options
from bmc_detectron.utils.io import expand_inputs


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detector-config", help="detector config (yaml)")
    p.add_argument("--detector-weights", help="detector weights (.pth / .pkl)")
    p.add_argument("--classifier-config", help="cell classifier config (yaml)")
    p.add_argument("--classifier-weights", help="cell classifier weights")
    p.add_argument("--detector-onnx", help="exported detector: run on ONNX Runtime instead")
    p.add_argument("--classifier-onnx", help="exported cell classifier (with --detector-onnx)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", nargs="+", help="images, folders or glob patterns")
    what.add_argument("--slide", help="a whole-slide image (pyramidal TIFF, SVS, ...)")
    p.add_argument("--output", required=True, help="report folder")
    p.add_argument(
        "--tile-size", type=int, default=1024, help="tile fields larger than this (0: never)"
    )
    p.add_argument("--tile-overlap", type=int, default=128, help="pixels shared by adjacent tiles")
    p.add_argument("--score-threshold", type=float, default=0.5, help="minimum detector score")
    p.add_argument("--nms-threshold", type=float, default=0.5, help="class-agnostic NMS IoU")
    p.add_argument(
        "--uncertain-below", type=float, default=0.5, help="class probability below: uncertain"
    )
    p.add_argument(
        "--open-set-threshold",
        type=threshold_value,
        help="open-set score below: Other (default: the classifier's stored threshold; "
        "'off': no Other outcome)",
    )
    p.add_argument("--lineage", help="JSON/YAML file {myeloid: [...], erythroid: [...]}")
    p.add_argument("--myeloid", help="comma-separated myeloid classes (overrides --lineage)")
    p.add_argument("--erythroid", help="comma-separated erythroid classes (overrides --lineage)")
    p.add_argument("--batch-size", type=int, default=64, help="crops per classifier call")
    p.add_argument(
        "--detector-classes", nargs="+", default=[], help="count only these detector classes"
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--detector-opts", nargs="+", default=[], help="detector config KEY VALUE ...")
    p.add_argument("--classifier-opts", nargs="+", default=[], help="classifier config overrides")
    g = p.add_argument_group("scale and stain")
    g.add_argument("--microns-per-pixel", type=float, help="the input's pixel size (um/px)")
    g.add_argument(
        "--auto-scale",
        action=argparse.BooleanOptionalAction,
        help="find the scale (the files' pixel size, the detector probe, the red cells) unless "
        "--microns-per-pixel gives it: on by default; --no-auto-scale counts the fields as they "
        "are (not with --slide: its own pixel size is used)",
    )
    g.add_argument(
        "--scale-tolerance", type=float, default=0.15, help="red-cell disagreement warned"
    )
    g.add_argument(
        "--detector-scale-tolerance",
        type=float,
        default=DETECTOR_SCALE_TOLERANCE,
        help="warn when the detector sees cells more than this factor from their training size",
    )
    g.add_argument(
        "--strict-scale",
        action="store_true",
        help="refuse (exit 2) instead of warning when the detector scale is off or not settled",
    )
    g.add_argument("--stain-normalize", choices=STAIN_METHODS, help="to the training colours")
    g.add_argument("--training-profile", help="default: training_profile.json beside the model")
    add_slide_arguments(p.add_argument_group("whole slide (--slide)"))
    return p


def count_slide(args: argparse.Namespace, lineage: Lineage) -> int:
    """``--slide``: count the slide's zone (:func:`count_slide_file`); returns the exit status."""
    output = Path(args.output)
    try:
        if args.auto_scale:  # asked for explicitly (the default is None)
            raise ValueError("--auto-scale does not apply to a slide: its own pixel size is used")
        check_output(output, args.overwrite)
        options = ScaleOptions(
            stain=args.stain_normalize,
            detector_scale_tolerance=args.detector_scale_tolerance,
            strict_scale=args.strict_scale,
        )
        slide_file, slide_opts = Path(args.slide), slide_options(args)
        open_slide(slide_file, slide_opts.backend, slide_opts.microns_per_pixel).close()
        spec = counter_spec(args)
        counter = build_counter(spec)
        setup = scale_setup(spec, counter, options, per_request=True)
        summary = count_slide_file(
            counter,
            setup,
            slide_file,
            output,
            slide_opts,
            uncertain_below=args.uncertain_below,
            lineage=lineage,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (ConfigError, FileNotFoundError, ValueError, OutputExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(summary, output)))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    output = Path(args.output)
    if args.slide:
        try:
            lineage = Lineage.from_options(args.lineage, args.myeloid, args.erythroid)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return count_slide(args, lineage)
    try:
        inputs = expand_inputs(args.input)
        if not inputs:
            raise ValueError(f"no input images in {' '.join(args.input)}")
        lineage = Lineage.from_options(args.lineage, args.myeloid, args.erythroid)
        options = ScaleOptions(
            args.microns_per_pixel,
            args.auto_scale is not False,  # on unless --no-auto-scale
            args.stain_normalize,
            args.scale_tolerance,
            args.detector_scale_tolerance,
            args.strict_scale,
        )
        counter, setup = prepare_count(
            counter_spec(args), output, options, overwrite=args.overwrite
        )
    except (ConfigError, FileNotFoundError, ValueError, OutputExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = run_count(
            counter,
            inputs,
            output,
            uncertain_below=args.uncertain_below,
            lineage=lineage,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            scale=setup,
        )
    except ScaleMismatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(summary, output)))
    return 1 if summary["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
