"""Merge an expert's corrected annotations into a COCO training set, with provenance.

    bmc merge-labels --base train.json --images-root DIR --round 2 \\
        --annotator dr_x corrections/label_studio_export.json labelme/*.json --output merged.json

Inputs: Label Studio JSON exports, LabelMe files, COCO files (see
:mod:`bmc_detectron.active.merge`). Every input is validated first; any unknown class, image not
under ``--images-root``, unreadable image or image corrected twice is reported by file and
nothing is written (exit status 2). Merging the same input again is idempotent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from bmc_detectron.active.merge import MergeError, Pool, collect, merge_coco
from bmc_detectron.utils.io import write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="the COCO training set to merge into")
    p.add_argument("--images-root", required=True, help="folder the file_names are relative to")
    p.add_argument("--round", type=int, required=True, help="active-learning round number")
    p.add_argument("--annotator", required=True, help="who corrected the annotations")
    p.add_argument("inputs", nargs="+", help="Label Studio / LabelMe / COCO json files")
    p.add_argument("--output", required=True, help="merged COCO json")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        base = json.loads(Path(args.base).read_text())
        classes = [c["name"] for c in sorted(base["categories"], key=lambda c: c["id"])]
        pool = Pool(Path(args.images_root))
        found, notes = collect([Path(p) for p in args.inputs], pool, classes)
    except MergeError as e:
        print(f"error: nothing merged, {e}", file=sys.stderr)
        return 2
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {args.base}: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    merged = merge_coco(base, found, args.round, args.annotator)
    write_json_atomic(merged, args.output, indent=2)
    added = len(merged["images"]) - len(base["images"])
    print(
        f"merged {len(found)} corrected image(s) ({added} new) into {args.output}: "
        f"{len(merged['images'])} images, {len(merged['annotations'])} boxes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
