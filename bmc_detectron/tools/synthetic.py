"""Generate the synthetic marrow smears (the embedded default dataset): train and test splits.

    bmc synthetic [--output DIR] [--num-train 200] [--num-test 50] [--size 256] [--width W] \\
        [--seed 0] [--scale S] [--preview mosaic.png]

(or ``python -m bmc_detectron.tools.synthetic``). Writes ``DIR/{train,test}/*.png`` and
``DIR/annotations/{train,test}.json`` (COCO); the default folder is ``$BMC_DATASETS/bmc_synth``,
where the ``bmc_synth_*`` datasets are registered. What the smears look like and how they are
annotated: :mod:`bmc_detectron.data.synthetic`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from bmc_detectron.data.paths import datasets_root
from bmc_detectron.data.synthetic import generate_dataset, preview_mosaic


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--output",
        default=str(datasets_root() / "bmc_synth"),
        help="output folder (default: $BMC_DATASETS/bmc_synth)",
    )
    p.add_argument("--out", dest="output", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--num-train", type=int, default=200)
    p.add_argument("--num-test", type=int, default=50)
    p.add_argument("--size", type=int, default=256, help="image height (and width)")
    p.add_argument("--width", type=int, default=None, help="image width (default: --size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="cell size factor (default: sqrt(short side / 256))",
    )
    p.add_argument("--preview", default=None, help="also write a PNG mosaic here")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write the train and test splits (and the preview); returns the exit status."""
    args = build_parser().parse_args(argv)
    width = args.width or args.size
    for split, num in (("train", args.num_train), ("test", args.num_test)):
        path = generate_dataset(
            args.output, split, num, args.seed, args.size, width, scale=args.scale
        )
        n_ann = len(json.loads(path.read_text())["annotations"])
        print(f"[synthetic] {split}: {num} images, {n_ann} cells -> {path}")
    if args.preview:
        mosaic = preview_mosaic(args.preview, args.seed, height=args.size, width=width)
        print(f"[synthetic] preview -> {mosaic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
