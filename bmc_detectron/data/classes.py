"""The cell classes the project knows, in the project's fixed order.

* :data:`MARROW_CLASSES`: the 11 trainable nucleated bone-marrow classes (ids 0-10). This is what
  the outputs of an 11-class model mean; every model trained today has these 11 outputs.
* :data:`BASO`: the basophil, a 12th class of the PBC cell classifier (id 11; rare in marrow).
* :data:`OTHER`: a box that fits none of them (a cell smudged, broken or of a rare type, or no
  white cell at all). The marrow classifier learns it as its 13th output (id 12) from
  :mod:`bmc_detectron.data.non_cells`; the count lists such cells apart from the differential.
* :data:`KNOWN_CLASSES`: all of them, ids public: the marrow classes, Baso (id 11), Other (id 12).

The order, abbreviations and display colours are part of the public interface: category ids in
every COCO json this project writes are ``index + 1`` in :data:`MARROW_CLASSES`. New classes are
appended to :data:`KNOWN_CLASSES`, never inserted.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple

from bmc_detectron.structures.differential import OTHER_LABEL


class CellClass(NamedTuple):
    abbr: str  # short name used in configs, tables and the Visualizer
    name: str  # full hematology name
    color: Tuple[int, int, int]  # RGB display colour for the Visualizer


#: the 11 trainable marrow classes: what a model's 11 outputs mean
MARROW_CLASSES: List[CellClass] = [
    CellClass("Prim", "blast / primitive cell", (230, 25, 75)),
    CellClass("Lym", "lymphocyte", (60, 180, 75)),
    CellClass("Mono", "monocyte", (255, 150, 25)),
    CellClass("Plas", "plasma cell", (0, 130, 200)),
    CellClass("Red", "nucleated red cell", (145, 30, 180)),
    CellClass("Promy", "promyelocyte", (70, 240, 240)),
    CellClass("Myelo", "neutrophilic myelocyte", (240, 50, 230)),
    CellClass("Late", "neutrophilic metamyelocyte", (170, 110, 40)),
    CellClass("Rods", "band neutrophil", (0, 128, 128)),
    CellClass("Lobu", "segmented neutrophil", (128, 0, 0)),
    CellClass("Eosl", "eosinophil", (255, 225, 25)),
]

MARROW_ABBRS: List[str] = [c.abbr for c in MARROW_CLASSES]
MARROW_NAMES: List[str] = [c.name for c in MARROW_CLASSES]
MARROW_COLORS: List[Tuple[int, int, int]] = [c.color for c in MARROW_CLASSES]

#: the basophil: the PBC classifier's 12th output (id 11), after the marrow classes
BASO = CellClass("Baso", "basophil", (60, 60, 170))

#: a box that fits none of the classes (the marrow classifier's 13th output, id 12)
OTHER = CellClass(OTHER_LABEL, "other / not classifiable", (128, 128, 0))

#: every class the project knows, by public id: the 11 marrow classes, Baso (11), Other (12)
KNOWN_CLASSES: List[CellClass] = [*MARROW_CLASSES, BASO, OTHER]
KNOWN_ABBRS: List[str] = [c.abbr for c in KNOWN_CLASSES]
KNOWN_NAMES: List[str] = [c.name for c in KNOWN_CLASSES]
KNOWN_COLORS: List[Tuple[int, int, int]] = [c.color for c in KNOWN_CLASSES]


def marrow_metadata() -> Dict[str, object]:
    """The 11 marrow classes as ``MetadataCatalog.get(name).set(**marrow_metadata())`` wants."""
    return {
        "thing_classes": list(MARROW_ABBRS),
        "thing_colors": list(MARROW_COLORS),
        "thing_full_names": list(MARROW_NAMES),
    }


def coco_categories() -> List[Dict[str, object]]:
    """COCO ``categories`` entries for the marrow classes (ids start at 1)."""
    return [
        {"id": i + 1, "name": c.abbr, "supercategory": "cell", "full_name": c.name}
        for i, c in enumerate(MARROW_CLASSES)
    ]
