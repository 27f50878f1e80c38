"""A case's scale from its red cells; or the training data's profile beside a model.

    bmc estimate-scale --images 'case/*.png' [--reference-diameter PX]
        [--scale-tolerance 0.15] [--json OUT]
    bmc estimate-scale --dataset bccd_train \
        --output output/det/training_profile.json [--max-images 32] [--microns-per-pixel X]

``--images``: per-field red-cell diameter, case median and spread. With ``--reference-diameter``
(the training data's ``BMC.DATA.RBC_DIAMETER_PX``) it also prints the factor to rescale the case's
fields by. Warns (exit 0) when fields disagree with the case median by more than
``--scale-tolerance``; exit 2 when no field has red cells to measure.

``--dataset``: ``training_profile.json`` of registered training dataset(s) for a model trained
before training wrote it (:mod:`bmc_detectron.smear.profile`): scale (red cells, image size,
``--microns-per-pixel`` or the ``BMC.DATA.MICRONS_PER_PIXEL`` of ``--config-file``; for
generated data the generator's exact values) and colour statistics, the count command's
reference. Put it beside the detector's weights.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import cv2

from bmc_detectron.smear.ruler import case_scale, estimate_rbc_diameter, rescale_factor
from bmc_detectron.utils.io import expand_inputs, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", nargs="+", help="image files, folders or globs")
    what.add_argument("--dataset", nargs="+", help="registered training dataset(s): a profile")
    p.add_argument("--reference-diameter", type=float, help="training red-cell diameter (px)")
    p.add_argument(
        "--scale-tolerance", type=float, default=0.15, help="red-cell disagreement warned"
    )
    p.add_argument("--json", help="also write the estimates to this JSON file")
    p.add_argument("--output", help="--dataset: the profile's path (training_profile.json)")
    p.add_argument("--max-images", type=int, default=32, help="--dataset: images measured")
    p.add_argument("--microns-per-pixel", type=float, help="--dataset: the images' pixel size")
    p.add_argument("--config-file", help="--dataset: read BMC.DATA.MICRONS_PER_PIXEL from it")
    return p


def write_profile(args: argparse.Namespace) -> int:
    """The ``--dataset`` mode: measure, write and summarise the training profile."""
    from bmc_detectron.config import ConfigError, build_cfg
    from bmc_detectron.smear.profile import profile_from_dataset

    if not args.output:
        print("error: --dataset needs --output DIR/training_profile.json", file=sys.stderr)
        return 2
    try:
        mpp = args.microns_per_pixel
        if mpp is None and args.config_file:
            mpp = float(build_cfg(args.config_file).BMC.DATA.MICRONS_PER_PIXEL) or None
        profile = profile_from_dataset(
            args.dataset, max_images=args.max_images, microns_per_pixel=mpp
        )
    except (ConfigError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = profile.save(Path(args.output))
    size = "x".join(str(v) for v in profile.image_size[::-1]) if profile.image_size else "n/a"
    rbc, box = profile.rbc_diameter_px, profile.rbc_box_diameter_px
    mpp, where = profile.microns_per_pixel, profile.scale_source
    print(f"{path}: {profile.source['images_measured']} of {profile.source['images']} images")
    print(f"red cells: {f'{rbc:.1f} px' if rbc else 'none measured'}", end="")
    if where.get("rbc_diameter_px") == "generator":
        ruler = profile.rbc_ruler_px
        print(f" (generator's exact value; ruler {f'{ruler:.1f} px' if ruler else 'n/a'})", end="")
    else:
        print(" (classical estimate)", end="")
    print(f", {box:.1f} px ({profile.rbc_class} boxes)" if box else "")
    unknown = "microns per pixel unknown"
    print(f"images {size} px, {f'{mpp:g} um/px' if mpp else unknown}", end="")
    print(f" ({where['microns_per_pixel']})" if where.get("microns_per_pixel") else "")
    return 0


def measure(paths: Sequence[Path]) -> List[dict]:
    """One row per readable image: file, diameter (px), spread, number of red cells."""
    rows = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            print(f"warning: cannot read {path}", file=sys.stderr)
            continue
        est = estimate_rbc_diameter(image, "BGR")
        rows.append(
            {"file": str(path), "diameter_px": est.median_px, "spread": est.spread, "n": est.n}
        )
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dataset:
        return write_profile(args)
    try:
        rows = measure(expand_inputs(args.images))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    case = case_scale([r["diameter_px"] for r in rows], args.scale_tolerance)
    if math.isnan(case.median_px):
        print("error: no red cells measured in any field", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{r['file']}: {r['diameter_px']:.1f} px (spread {r['spread']:.2f}, n {r['n']})")
    print(f"case: median {case.median_px:.1f} px, spread {case.spread:.3f} ({len(rows)} fields)")
    summary = {"fields": rows, "median_px": case.median_px, "spread": case.spread}
    if args.reference_diameter:
        factor = rescale_factor(case.median_px, args.reference_diameter)
        summary["rescale_factor"] = factor
        print(f"rescale factor to the training scale: {factor:.3f}")
    for i in case.outliers:
        print(
            f"warning: {rows[i]['file']} ({rows[i]['diameter_px']:.1f} px) differs from the case "
            f"median by more than {args.scale_tolerance:.0%}",
            file=sys.stderr,
        )
    summary["outliers"] = [rows[i]["file"] for i in case.outliers]
    if args.json:
        write_json_atomic(summary, Path(args.json), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
