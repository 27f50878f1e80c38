"""Seeded, class-stratified train/test split of a COCO json, and per-class statistics.

Command line: ``bmc split`` (:mod:`bmc_detectron.tools.split`).

The split is by image. Each image is put in the group of its *rarest* class (fewest boxes in the
whole dataset; images without boxes form their own group); every group, in a fixed order, is
shuffled by one ``random.Random(seed)`` and cut at the ratio (rounded half up, but a group of two
or more images gives at least one to each side). Same input and seed give the same split.
``file_name`` entries are unchanged: register the parts with the source's image root.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import random
from pathlib import Path
from typing import Dict, List, Mapping, Tuple, Union

from bmc_detectron.data.checks import DatasetError
from bmc_detectron.data.classes import KNOWN_ABBRS, KNOWN_NAMES
from bmc_detectron.reporting.plots import new_figure, save_figure
from bmc_detectron.utils.io import atomic_write_bytes

PathLike = Union[str, os.PathLike]
Row = Dict[str, Union[str, int]]


def _rarest_class_groups(coco: Dict) -> Dict[object, List[int]]:
    """Image ids grouped by the rarest category they contain (``None``: no boxes)."""
    totals: Dict[int, int] = {}
    per_image: Dict[int, set] = {img["id"]: set() for img in coco["images"]}
    for ann in coco["annotations"]:
        totals[ann["category_id"]] = totals.get(ann["category_id"], 0) + 1
        if ann["image_id"] in per_image:
            per_image[ann["image_id"]].add(ann["category_id"])
    groups: Dict[object, List[int]] = {}
    for img_id in sorted(per_image):
        cats = per_image[img_id]
        key = min(cats, key=lambda c: (totals[c], c)) if cats else None
        groups.setdefault(key, []).append(img_id)
    return groups


def _subset(coco: Dict, image_ids: set, part: str, ratio: Tuple[int, int], seed: int) -> Dict:
    out = {k: copy.deepcopy(v) for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [copy.deepcopy(im) for im in coco["images"] if im["id"] in image_ids]
    out["annotations"] = [
        copy.deepcopy(a) for a in coco["annotations"] if a["image_id"] in image_ids
    ]
    info = {k: v for k, v in dict(coco.get("info") or {}).items() if k != "report"}
    info["split"] = {"part": part, "ratio": list(ratio), "seed": seed, "method": "rarest-class"}
    out["info"] = info
    return out


def parse_ratio(text: str) -> Tuple[int, int]:
    """``"4:1"`` -> ``(4, 1)``; both parts must be non-negative integers, not both zero."""
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"ratio '{text}' is not of the form TRAIN:TEST, e.g. 4:1") from None
    if a < 0 or b < 0 or a + b == 0:
        raise ValueError(f"ratio '{text}' needs non-negative parts, not both zero")
    return a, b


def split_coco(coco: Dict, ratio: Tuple[int, int] = (4, 1), seed: int = 0) -> Tuple[Dict, Dict]:
    """Split a COCO dict by image into ``(train, test)``, stratified by each image's rarest
    class (see the module docstring). Categories and other top-level keys are copied to both;
    ``info["split"]`` records part, ratio and seed."""
    a, b = parse_ratio(f"{ratio[0]}:{ratio[1]}")
    if not coco.get("images"):
        raise DatasetError("cannot split a dataset without images")
    rng = random.Random(seed)
    groups = _rarest_class_groups(coco)
    train_ids, test_ids = set(), set()
    for key in sorted(groups, key=lambda k: (k is None, k if k is not None else 0)):
        ids = list(groups[key])
        rng.shuffle(ids)
        n_train = math.floor(len(ids) * a / (a + b) + 0.5)
        if len(ids) >= 2 and a and b:
            n_train = min(max(n_train, 1), len(ids) - 1)
        train_ids.update(ids[:n_train])
        test_ids.update(ids[n_train:])
    return (
        _subset(coco, train_ids, "train", (a, b), seed),
        _subset(coco, test_ids, "test", (a, b), seed),
    )


def class_names(category: Mapping) -> Tuple[str, str]:
    """(class, abbreviation) of a COCO category: the known class's full name and short name, or
    the category name for both outside the known classes."""
    name = str(category["name"])
    if name in KNOWN_ABBRS:
        return KNOWN_NAMES[KNOWN_ABBRS.index(name)], name
    if name in KNOWN_NAMES:
        return name, KNOWN_ABBRS[KNOWN_NAMES.index(name)]
    return name, name


def class_distribution(parts: Mapping[str, Dict]) -> List[Row]:
    """Box count per class of each part (e.g. ``{"train": d1, "test": d2}``, all sharing the
    categories of the first) and the total: one row per category in id order, plus a last row
    ``class="total"``. Keys: ``class``, ``abbreviation``, ``<part> count``..., ``total``."""
    if not parts:
        raise ValueError("class_distribution needs at least one dataset")
    cats = sorted(next(iter(parts.values()))["categories"], key=lambda c: c["id"])
    rows: List[Row] = []
    for cat in cats:
        full, abbr = class_names(cat)
        row: Row = {"class": full, "abbreviation": abbr}
        for part, coco in parts.items():
            row[f"{part} count"] = sum(a["category_id"] == cat["id"] for a in coco["annotations"])
        rows.append(row)
    total: Row = {"class": "total", "abbreviation": ""}
    for part in parts:
        total[f"{part} count"] = sum(int(r[f"{part} count"]) for r in rows)
    rows.append(total)
    for row in rows:
        row["total"] = sum(int(row[f"{part} count"]) for part in parts)
    return rows


def format_table(rows: List[Row]) -> str:
    """Fixed-width text table of :func:`class_distribution` rows."""
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        cells = [
            str(r[k]).ljust(w) if isinstance(r[k], str) else str(r[k]).rjust(w)
            for k, w in zip(keys, widths)
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def write_distribution(rows: List[Row], out_dir: PathLike, title: str = "") -> Tuple[Path, Path]:
    """Write ``class_distribution.csv`` and a grouped bar chart ``class_distribution.png``
    (``rows`` from :func:`class_distribution`, total row last)."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, png_path = out_dir / "class_distribution.csv", out_dir / "class_distribution.png"
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    classes = rows[:-1]  # the last row is the total
    parts = [k for k in rows[0] if k.endswith(" count")]
    fig = new_figure(max(6.0, 0.6 * len(classes) * len(parts)), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(parts)
    for i, part in enumerate(parts):
        xs = [j + (i - (len(parts) - 1) / 2) * width for j in range(len(classes))]
        ax.bar(xs, [r[part] for r in classes], width, label=part.replace(" count", ""))
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels([str(r["abbreviation"]) for r in classes], rotation=45, ha="right")
    ax.set_ylabel("boxes")
    ax.set_title(title or "class distribution")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path, dpi=100, crop=False)
    return csv_path, png_path


def load_dataset_coco(name: str) -> Dict:
    """COCO dict of a registered dataset: its ``json_file`` (built-ins are converted first),
    else detectron2's ``convert_to_coco_dict``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from bmc_detectron.data.datasets import prepare_dataset, register_builtin_datasets

    register_builtin_datasets()
    if name not in DatasetCatalog.list():
        raise DatasetError(f"dataset '{name}' is not registered")
    if MetadataCatalog.get(name).get("json_file"):
        return json.loads(prepare_dataset(name).read_text())
    from detectron2.data.datasets.coco import convert_to_coco_dict

    return convert_to_coco_dict(name)


def load_coco_file(path: PathLike) -> Dict:
    """A COCO json file; DatasetError naming the file when it is missing or not COCO."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: COCO json not found")
    try:
        coco = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not all(isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{path}: not a COCO file (needs images, annotations, categories)")
    return coco
