"""Generate marrow-like fields composed of real PBC cells (``marrow_real``): train and val splits.

    bmc marrow-fields [--output DIR] [--num-train 400] [--num-val 100] [--seed 0] [--size 512] \\
        [--cells 20 40] [--max-overlap 0.25] [--microns-per-pixel 0.25] [--backgrounds 48]

(or ``python -m bmc_detectron.tools.marrow_fields``). Needs the shared PBC and BCCD data
(``$BMC_SHARED_DATASETS``). Writes ``DIR/{train,val}/*.png`` and ``DIR/annotations/*.json``
(COCO, with the exact pixel size and the nucleated-cell size distribution in ``info["profile"]``);
the default folder is ``$BMC_DATASETS/marrow_real``, where the ``marrow_real_*`` datasets are
registered. How the fields are made: :mod:`bmc_detectron.data.synthetic.marrow`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from bmc_detectron.data.paths import datasets_root
from bmc_detectron.data.synthetic.marrow import (
    FIELD_MICRONS_PER_PIXEL,
    MARROW_SPLIT_SIZES,
    FieldSpec,
    generate_dataset,
)


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output",
        default=str(datasets_root() / "marrow_real"),
        help="output folder (default: $BMC_DATASETS/marrow_real)",
    )
    parser.add_argument("--num-train", type=int, default=MARROW_SPLIT_SIZES["train"])
    parser.add_argument("--num-val", type=int, default=MARROW_SPLIT_SIZES["val"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=512, help="field height and width, px")
    parser.add_argument("--cells", type=int, nargs=2, default=[20, 40], metavar=("MIN", "MAX"))
    parser.add_argument("--max-overlap", type=float, default=0.25)
    parser.add_argument(
        "--microns-per-pixel", type=float, default=FIELD_MICRONS_PER_PIXEL, help="field pixel size"
    )
    parser.add_argument("--backgrounds", type=int, default=48, help="photos per background kind")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write the ``train`` and ``val`` splits; returns the exit status."""
    args = build_parser().parse_args(argv)
    spec = FieldSpec(
        height=args.size,
        width=args.size,
        cells_per_field=(args.cells[0], args.cells[1]),
        microns_per_pixel=args.microns_per_pixel,
        max_overlap=args.max_overlap,
    )
    for split, num in (("train", args.num_train), ("val", args.num_val)):
        path = generate_dataset(
            args.output, split, num, args.seed, spec, n_backgrounds=args.backgrounds
        )
        info = json.loads(path.read_text())["info"]
        sizes = info["profile"]["cell_diameter_px"]
        print(
            f"[marrow_real] {split}: {num} fields, {sizes['n']} cells (diameter median "
            f"{sizes.get('median', 0)} px), cells skipped: {len(info['skipped_cells'])} -> {path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
