"""Synthetic marrow smears: one composer shared by the generators.

* :mod:`~bmc_detectron.data.synthetic.composer`: places cell patches on a background, gives their
  tight boxes, turns optical density into a photo, writes COCO splits (shared by every generator);
* :mod:`~bmc_detectron.data.synthetic.procedural`: procedural cells, red cells, platelets and the
  smear background;
* :mod:`~bmc_detectron.data.synthetic.bmc_synth`: the embedded ``bmc_synth`` dataset (class mix,
  sizes, pixel size, :func:`generate_image`, :func:`generate_dataset`, preview);
* :mod:`~bmc_detectron.data.synthetic.marrow`: marrow-like fields of real PBC cell cut-outs
  (:mod:`~bmc_detectron.data.synthetic.cutouts`,
  :mod:`~bmc_detectron.data.synthetic.backgrounds`) on the same composer.

Import rule: the composer imports no generator; the generators import the composer.
"""

from bmc_detectron.data.synthetic.bmc_synth import (
    CLASS_FREQUENCIES,
    MEAN_CELL_DIAMETER,
    MICRONS_PER_PIXEL_AT_SCALE_1,
    default_cells_per_image,
    default_scale,
    draw_smear,
    generate_dataset,
    generate_image,
    microns_per_pixel,
    preview_mosaic,
)
from bmc_detectron.data.synthetic.composer import draw_boxes, image_rng
from bmc_detectron.data.synthetic.procedural import RBC_DIAMETER

__all__ = [
    "CLASS_FREQUENCIES",
    "MEAN_CELL_DIAMETER",
    "MICRONS_PER_PIXEL_AT_SCALE_1",
    "RBC_DIAMETER",
    "default_cells_per_image",
    "default_scale",
    "draw_boxes",
    "draw_smear",
    "generate_dataset",
    "generate_image",
    "image_rng",
    "microns_per_pixel",
    "preview_mosaic",
]
