"""Count many cases at once: each case folder or slide into its own report, on processes or Ray.

    bmc batch day/ --output reports/ --detector-config C --detector-weights W \\
        [--classifier-config C2 --classifier-weights W2] [--workers 2] \\
        [--ray | --ray-address HOST:PORT] [--no-auto-scale] [--overwrite]
    bmc batch --slides scans/ [more.svs ...] --output reports/ --detector-config C \\
        --detector-weights W [--target-cells 500 --field-size 1024] [--workers 2]

CASES are case folders (each a folder of field images) or folders of case folders. Every case
is counted into ``<output>/<case>``, the report ``bmc count`` writes
(:mod:`bmc_detectron.pipeline.run`). With ``--slides`` the cases are whole-slide files, or
folders of them (.svs, .tif, .tiff, .ndpi, .mrxs): each slide is counted as ``bmc count --slide``
counts it, into ``<output>/<slide file's stem>`` (a slide that cannot be read fails alone, its
row naming the file). ``<output>/batch.json`` lists what became of each case and
``<output>/batch_summary.csv`` / ``.json`` is the day's summary: one row per case with its cells,
differential, M:E ratio, status and seconds (:mod:`bmc_detectron.batch.day`).
Workers (``--workers`` processes, or Ray actors with ``--ray`` / ``--ray-address``: the
``[batch]`` extra) load the models once each. A finished case is not counted again
(``--overwrite`` recounts it); an interrupted one resumes field by field; a worker killed
mid-case has its case counted again. As ``bmc count``, each case's scale is found unless
``--microns-per-pixel`` gives it (``--no-auto-scale``: the fields counted as they are). Exit
status: 0 done, 1 done but some case failed or skipped inputs, 2 bad arguments (a missing
folder, an empty case, Ray not installed, a model file missing, models that cannot be built).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from bmc_detectron.batch.day import write_day_summary
from bmc_detectron.batch.jobs import (
    BatchCase,
    BatchError,
    CaseOptions,
    SpecFactory,
    find_cases,
    find_slides,
)
from bmc_detectron.batch.runner import run_batch, write_batch_report
from bmc_detectron.counting import CounterSpec
from bmc_detectron.evaluation.open_set import threshold_value
from bmc_detectron.pipeline.scale_plan import ScaleOptions
from bmc_detectron.smear.stain import STAIN_METHODS
from bmc_detectron.structures.differential import Lineage
from bmc_detectron.tools.count_args import add_slide_arguments, counter_spec, slide_options


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments (the models' and the count's as in ``bmc count``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cases", nargs="*", help="case folders, or folders of case folders")
    p.add_argument("--slides", nargs="+", help="whole-slide files or folders of them (not CASES)")
    p.add_argument("--output", required=True, help="folder of the cases' report folders")
    p.add_argument("--workers", type=int, default=2, help="worker processes / Ray actors")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: cores/workers)")
    p.add_argument("--ray", action="store_true", help="run on a local Ray (the [batch] extra)")
    p.add_argument("--ray-address", help="Ray cluster: HOST:PORT, ray://HOST:10001, auto")
    p.add_argument("--max-tries", type=int, default=3, help="times a case's worker may die")
    p.add_argument("--overwrite", action="store_true", help="count finished cases again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = p.add_argument_group("models (as bmc count)")
    m.add_argument("--detector-config", help="detector config (yaml)")
    m.add_argument("--detector-weights", help="detector weights (.pth / .pkl)")
    m.add_argument("--classifier-config", help="cell classifier config (yaml)")
    m.add_argument("--classifier-weights", help="cell classifier weights")
    m.add_argument("--detector-onnx", help="exported detector: run on ONNX Runtime instead")
    m.add_argument("--classifier-onnx", help="exported cell classifier (with --detector-onnx)")
    m.add_argument("--detector-opts", nargs="+", default=[], help="detector config KEY VALUE ...")
    m.add_argument("--classifier-opts", nargs="+", default=[], help="classifier config overrides")
    m.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    c = p.add_argument_group("count (as bmc count)")
    c.add_argument("--tile-size", type=int, default=1024, help="tile fields larger than this")
    c.add_argument("--tile-overlap", type=int, default=128, help="pixels shared by adjacent tiles")
    c.add_argument("--score-threshold", type=float, default=0.5, help="minimum detector score")
    c.add_argument("--nms-threshold", type=float, default=0.5, help="class-agnostic NMS IoU")
    c.add_argument("--batch-size", type=int, default=64, help="crops per classifier call")
    c.add_argument("--uncertain-below", type=float, default=0.5, help="below: uncertain")
    c.add_argument("--open-set-threshold", type=threshold_value, help="open-set score below: Other")
    c.add_argument("--lineage", help="JSON/YAML file {myeloid: [...], erythroid: [...]}")
    c.add_argument("--myeloid", help="comma-separated myeloid classes (overrides --lineage)")
    c.add_argument("--erythroid", help="comma-separated erythroid classes (overrides --lineage)")
    c.add_argument("--microns-per-pixel", type=float, help="the inputs' pixel size (um/px)")
    c.add_argument(
        "--auto-scale",
        action=argparse.BooleanOptionalAction,
        help="find each case's scale unless --microns-per-pixel gives it: on by default for case "
        "folders; --no-auto-scale counts the fields as they are (slides: their own pixel size)",
    )
    c.add_argument("--strict-scale", action="store_true", help="refuse a case whose scale is off")
    c.add_argument("--stain-normalize", choices=STAIN_METHODS, help="to the training colours")
    c.add_argument("--training-profile", help="default: training_profile.json beside the model")
    add_slide_arguments(p.add_argument_group("whole slides (--slides, as bmc count --slide)"))
    return p


def _missing_models(spec: CounterSpec) -> List[str]:
    files = [spec.detector_config, spec.detector_weights, spec.classifier_config]
    files += [spec.classifier_weights, spec.detector_onnx, spec.classifier_onnx]
    return [f for f in files if f and not Path(f).is_file()]


def _cases(args: argparse.Namespace, output: Path) -> List[BatchCase]:
    """The batch's cases: the case folders, or the slides (``--slides``), not both."""
    if args.slides:
        if args.cases:
            raise BatchError("give case folders or --slides, not both (one batch of each)")
        if args.auto_scale:  # asked for explicitly (the default is None)
            raise BatchError("--auto-scale does not apply to slides: their own pixel size is used")
        return find_slides([Path(s) for s in args.slides], output)
    if not args.cases:
        raise BatchError("no cases: give case folders, or --slides")
    return find_cases([Path(c) for c in args.cases], output)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    output = Path(args.output)
    engine = "ray" if (args.ray or args.ray_address) else "processes"
    try:
        cases = _cases(args, output)
        spec = counter_spec(args)
        missing = _missing_models(spec)
        if missing:
            raise BatchError(f"model file(s) not found: {', '.join(missing)}")
        lineage = Lineage.from_options(args.lineage, args.myeloid, args.erythroid)
        slides = bool(args.slides)
        scale = ScaleOptions(
            None if slides else args.microns_per_pixel,
            not slides and args.auto_scale is not False,  # on unless --no-auto-scale
            args.stain_normalize,
            strict_scale=args.strict_scale,
        )
        options = CaseOptions(args.uncertain_below, lineage, args.overwrite, slide_options(args))
        start = time.perf_counter()
        results = run_batch(
            cases,
            SpecFactory(spec, scale, slides=slides),
            options,
            engine=engine,
            workers=args.workers,
            threads=args.threads,
            address=args.ray_address,
            max_tries=args.max_tries,
            progress=not args.no_progress,
        )
    except (BatchError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = round(time.perf_counter() - start, 2)
    report = write_batch_report(
        output, results, engine=engine, workers=args.workers, seconds=seconds
    )
    write_day_summary(output, results)
    status = [r.status for r in results]
    print(
        f"{len(results)} case(s): {status.count('counted')} counted, {status.count('done')} "
        f"finished before, {status.count('failed')} failed, in {seconds:.1f} s: {report}"
    )
    for r in results:
        if r.status == "failed":
            print(f"failed: {r.name}: {r.error}", file=sys.stderr)
    return 1 if "failed" in status or any(r.skipped for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
