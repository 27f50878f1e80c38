"""Convert Pascal VOC XML, YOLO txt or LabelMe json annotations to one COCO json file.

    bmc convert {voc,yolo,labelme} --images DIR --annotations DIR --output FILE.json \\
        [--classes A,B,...] [--image-list FILE]

(or ``python -m bmc_detectron.tools.convert``). ``--images`` is optional for labelme;
``--classes`` is required for yolo, in class-id order. Boxes outside an image are clipped or
dropped and listed in the file's ``info.report`` (see :mod:`bmc_detectron.data.convert`). Exit
status: 0 written, 2 bad input (the message names the file).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from bmc_detectron.data.convert import (
    labelme_to_coco,
    read_image_list,
    voc_to_coco,
    write_json_atomic,
    yolo_to_coco,
)


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("format", choices=["voc", "yolo", "labelme"])
    p.add_argument("--images", help="image folder (optional for labelme)")
    p.add_argument("--annotations", required=True, help="folder of XML / txt / json files")
    p.add_argument("--output", help="output COCO json file (required)")
    p.add_argument("--out", dest="output", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--classes", help="comma-separated class names (required for yolo)")
    p.add_argument("--image-list", help="convert only these image ids (file stems, one a line)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status (2 on bad input, with the message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output is None:
        parser.error("the following arguments are required: --output")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        ids = read_image_list(args.image_list) if args.image_list else None
        if args.format != "labelme" and not args.images:
            raise ValueError(f"{args.format}: --images is required")
        if args.format == "voc":
            coco = voc_to_coco(args.annotations, args.images, classes, ids)
        elif args.format == "yolo":
            if not classes:
                raise ValueError("yolo: --classes is required")
            coco = yolo_to_coco(args.images, args.annotations, classes, ids)
        else:
            coco = labelme_to_coco(args.annotations, args.images, classes, ids)
        write_json_atomic(coco, args.output)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = coco["info"]["report"]["counts"]
    print(f"wrote {args.output}: {counts['images']} images, {counts['annotations']} boxes", end=" ")
    print(f"{counts['per_class']}, {counts['dropped']} dropped, {counts['clipped']} clipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
