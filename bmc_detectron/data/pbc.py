"""The PBC white-cell images with marrow class ids: real training data for the cell classifier.

The shared ``pbc_wbc`` data (``$BMC_SHARED_DATASETS/pbc_wbc``, one annotated white cell per
360x363 image, YOLO labels with 7 coarse types) names each file by its fine type:
``PMY_123.jpg`` is a promyelocyte. The datasets ``pbc_marrow_train`` (the ``train`` and
``train_extra`` splits) and ``pbc_marrow_val`` (``val``) keep the YOLO boxes and take the class
from that prefix, mapped onto the 11 marrow classes of :mod:`bmc_detectron.data.classes`, plus
basophils as a 12th class after them:

==========  ======  ==========  ======  ==========  ======
prefix      class   prefix      class   prefix      class
==========  ======  ==========  ======  ==========  ======
PMY         Promy   SNE         Lobu    LY          Lym
MY          Myelo   EO          Eosl    MO          Mono
MMY         Late    ERB         Red     BA          Baso
BNE         Rods
==========  ======  ==========  ======  ==========  ======

**Blasts (Prim) and plasma cells (Plas) do not occur in this data**: their ids exist (so that
the ids are the marrow ids) but have no examples; the metadata lists them as
``absent_classes``. An unknown prefix, or a YOLO class that contradicts the prefix (e.g. ``MY``
labelled Lymphocyte), stops the conversion with an error naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from bmc_detectron.data.checks import DatasetError
from bmc_detectron.data.classes import BASO, MARROW_ABBRS, MARROW_COLORS, MARROW_NAMES
from bmc_detectron.data.convert import yolo_to_coco
from bmc_detectron.data.paths import shared_datasets_root
from bmc_detectron.utils.io import write_json_atomic

logger = logging.getLogger(__name__)

#: class names in id order: the 11 marrow classes, then basophil
PBC_MARROW_CLASSES: Tuple[str, ...] = (*MARROW_ABBRS, BASO.abbr)
PBC_MARROW_FULL_NAMES: Tuple[str, ...] = (*MARROW_NAMES, BASO.name)
PBC_MARROW_COLORS: Tuple[Tuple[int, int, int], ...] = (*MARROW_COLORS, BASO.color)
#: marrow classes without a single example in the PBC data
ABSENT_CLASSES: Tuple[str, ...] = ("Prim", "Plas")
#: dataset split -> the shared folders it is made of
PBC_MARROW_SPLITS: Dict[str, Tuple[str, ...]] = {"train": ("train", "train_extra"), "val": ("val",)}

#: file-name prefix -> (marrow class, the coarse YOLO class the label file must carry)
PREFIXES: Dict[str, Tuple[str, str]] = {
    "PMY": ("Promy", "Ig"),
    "MY": ("Myelo", "Ig"),
    "MMY": ("Late", "Ig"),
    "BNE": ("Rods", "Neutrophil"),
    "SNE": ("Lobu", "Neutrophil"),
    "EO": ("Eosl", "Eosinophil"),
    "ERB": ("Red", "Erythroblast"),
    "LY": ("Lym", "Lymphocyte"),
    "MO": ("Mono", "Monocyte"),
    "BA": ("Baso", "Basophil"),
}


def pbc_marrow_metadata() -> Dict[str, object]:
    """Metadata of ``pbc_marrow_*``: 12 classes, their colours and full names, absent ones."""
    return {
        "thing_classes": list(PBC_MARROW_CLASSES),
        "thing_colors": list(PBC_MARROW_COLORS),
        "thing_full_names": list(PBC_MARROW_FULL_NAMES),
        "absent_classes": list(ABSENT_CLASSES),
    }


def pbc_prefix(file_name: str) -> str:
    """The fine-type prefix of a PBC file name (``"MMY"`` for ``".../MMY_1234.jpg"``)."""
    return Path(file_name).name.split("_", 1)[0]


def pbc_marrow_class(file_name: str) -> int:
    """The class id (index in :data:`PBC_MARROW_CLASSES`) of a PBC image, from its file name.

    Raises :class:`DatasetError` naming the file for an unknown prefix.
    """
    prefix = pbc_prefix(file_name)
    if prefix not in PREFIXES:
        raise DatasetError(
            f"{file_name}: unknown PBC cell-type prefix {prefix!r} "
            f"(known: {', '.join(sorted(PREFIXES))})"
        )
    return PBC_MARROW_CLASSES.index(PREFIXES[prefix][0])


def _relabel(coco: Dict, split: str, folder: Path) -> None:
    """Prefix file names with ``<split>/images/``; category ids from the prefixes (in place)."""
    cat_name = {c["id"]: c["name"] for c in coco["categories"]}
    by_image = {}
    for im in coco["images"]:
        by_image[im["id"]] = im["file_name"]
        im["file_name"] = f"{split}/images/{im['file_name']}"
    for ann in coco["annotations"]:
        file_name = str(folder / by_image[ann["image_id"]])
        cls = pbc_marrow_class(file_name)
        expected = PREFIXES[pbc_prefix(file_name)][1]
        if cat_name[ann["category_id"]] != expected:
            raise DatasetError(
                f"{file_name}: labelled {cat_name[ann['category_id']]} in its YOLO file but "
                f"the prefix {pbc_prefix(file_name)} means {expected}"
            )
        ann["category_id"] = cls + 1


def pbc_marrow_coco(root: Path, splits: Sequence[str], yolo_classes: Sequence[str]) -> Dict:
    """One COCO dict of the shared ``splits`` of ``root`` (= ``.../pbc_wbc``), marrow ids.

    ``file_name`` is relative to ``root`` (``<split>/images/<file>``); image and annotation ids
    are renumbered across splits; categories are :data:`PBC_MARROW_CLASSES` (ids 1..12).
    """
    images: List[Dict] = []
    anns: List[Dict] = []
    counts = {}
    for split in splits:
        folder = root / split
        if not (folder / "labels").is_dir():
            raise DatasetError(f"{folder}: PBC split not found; set $BMC_SHARED_DATASETS")
        try:
            coco = yolo_to_coco(folder / "images", folder / "labels", yolo_classes)
        except DatasetError:
            raise
        except ValueError as e:
            raise DatasetError(str(e)) from None
        _relabel(coco, split, folder / "images")
        new_id = {im["id"]: len(images) + i + 1 for i, im in enumerate(coco["images"])}
        images += [dict(im, id=new_id[im["id"]]) for im in coco["images"]]
        for ann in coco["annotations"]:
            anns.append(dict(ann, id=len(anns) + 1, image_id=new_id[ann["image_id"]]))
        counts[split] = coco["info"]["report"]["counts"]
    categories = [
        {"id": i + 1, "name": n, "supercategory": "cell", "full_name": f}
        for i, (n, f) in enumerate(zip(PBC_MARROW_CLASSES, PBC_MARROW_FULL_NAMES))
    ]
    info = {"description": "PBC white cells, marrow class ids from the file-name prefixes"}
    info.update(source=str(root), splits=list(splits), absent_classes=list(ABSENT_CLASSES))
    info["report"] = {"counts": counts}
    return {"info": info, "images": images, "annotations": anns, "categories": categories}


def convert_pbc_marrow(split: str, json_file: Path, yolo_classes: Sequence[str]) -> None:
    """Converter of the built-in ``pbc_marrow_<split>`` (see :data:`PBC_MARROW_SPLITS`)."""
    root = shared_datasets_root() / "pbc_wbc"
    coco = pbc_marrow_coco(root, PBC_MARROW_SPLITS[split], yolo_classes)
    write_json_atomic(coco, json_file)
    logger.info("pbc_marrow_%s: converted %d images -> %s", split, len(coco["images"]), json_file)
