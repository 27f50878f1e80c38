"""One stage or two: a multi-class detector against a class-agnostic detector + cell classifier.

Each *system* is a :class:`bmc_detectron.pipeline.CellCounter` (or anything with
``count_image``, ``class_names`` and ``classifier``) run over the images of a registered COCO
dataset; the dataset's json (``MetadataCatalog.get(name).json_file``) is the ground truth.
:func:`compare_systems` measures every system with
:func:`bmc_detectron.evaluation.count.evaluate_cells` (detection AP, class-agnostic AP, accuracy
of the matched cells, errors of the differential and of the M:E ratio); a prediction's class is
the counter's label and its score the detector score (no classifier) or the detector score x the
label's class probability (with a classifier; ``score="product"``).

AP wants every detection, so build the counters with a low ``score_threshold`` (0.05, detectron2's
test threshold); the counts then keep the cells scoring ``count_threshold`` or more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bmc_detectron.evaluation.count import dataset_images, evaluate_cells
from bmc_detectron.pipeline.counter import Cell
from bmc_detectron.structures.differential import Lineage


@dataclass
class System:
    """A counting system to compare: a name and a counter; ``score`` is how a prediction is
    scored for the class-aware AP: ``"detector"``, ``"product"`` (detector score x class
    probability) or ``"auto"`` (product when the counter has a classifier)."""

    name: str
    counter: Any
    score: str = "auto"

    def score_mode(self) -> str:
        """``"detector"`` or ``"product"``."""
        if self.score == "auto":
            return (
                "product" if getattr(self.counter, "classifier", None) is not None else "detector"
            )
        if self.score not in ("detector", "product"):
            raise ValueError(f"unknown score mode {self.score!r}")
        return self.score


def run_system(counter: Any, images: Sequence[Tuple[int, str]]) -> Dict[int, List[Cell]]:
    """The counter's cells of every image (read as BGR), by image id."""
    import cv2

    cells = {}
    for image_id, path in images:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"{path}: cannot read the image")
        cells[image_id] = counter.count_image(image)
    return cells


def compare_systems(
    dataset: str,
    systems: Sequence[System],
    *,
    count_threshold: float = 0.5,
    uncertain_below: float = 0.5,
    lineage: Optional[Lineage] = None,
) -> Dict[str, Any]:
    """Run every system over the registered COCO ``dataset`` and measure it (module docstring)."""
    gt, images = dataset_images(dataset)
    results = {}
    for system in systems:
        cells = run_system(system.counter, images)
        results[system.name] = evaluate_cells(
            cells,
            gt,
            system.score_mode(),
            count_threshold=count_threshold,
            uncertain_below=uncertain_below,
            lineage=lineage,
        )
    return {
        "dataset": dataset,
        "images": len(images),
        "ground_truth_cells": len([a for a in gt["annotations"] if not a.get("iscrowd", 0)]),
        "classes": [c["name"] for c in gt["categories"]],
        "count_threshold": count_threshold,
        "uncertain_below": uncertain_below,
        "lineage": (lineage or Lineage()).to_json(),
        "systems": results,
    }
