"""Split a COCO json into train and test, seeded and class-stratified; per-class statistics.

    bmc split (--dataset NAME | --json FILE) [--ratio 4:1] [--seed 0] --output DIR
    bmc split (--dataset NAME | --json FILE) --stats-only [--output DIR]

(or ``python -m bmc_detectron.tools.split``). Writes ``DIR/train.json``, ``DIR/test.json`` (not
with ``--stats-only``) and ``DIR/class_distribution.csv`` / ``.png``, and prints the per-class
table. How images are assigned: :mod:`bmc_detectron.data.split`. Exit status: 0 done, 2 bad
input (the message names the file or dataset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from bmc_detectron.data.split import (
    class_distribution,
    format_table,
    load_coco_file,
    load_dataset_coco,
    parse_ratio,
    split_coco,
    write_distribution,
)
from bmc_detectron.utils.io import write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a registered dataset name, e.g. bccd_trainval")
    src.add_argument("--json", help="a COCO json file")
    p.add_argument("--ratio", default="4:1", help="train:test image ratio (default 4:1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="output folder (required unless --stats-only)")
    p.add_argument("--out", dest="output", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--stats-only", action="store_true", help="only print the class table")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status (2 on bad input, with the message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.stats_only and not args.output:
        parser.error("--output is required unless --stats-only")
    label = args.dataset or Path(args.json).stem
    try:
        coco = load_dataset_coco(args.dataset) if args.dataset else load_coco_file(args.json)
        if args.stats_only:
            parts = {label: coco}
        else:
            train, test = split_coco(coco, parse_ratio(args.ratio), args.seed)
            write_json_atomic(train, Path(args.output) / "train.json")
            write_json_atomic(test, Path(args.output) / "test.json")
            parts = {"train": train, "test": test}
        rows = class_distribution(parts)
        if args.output:
            write_distribution(rows, args.output, title=label)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print("images: " + ", ".join(f"{k} {len(v['images'])}" for k, v in parts.items()))
    if args.output:
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
