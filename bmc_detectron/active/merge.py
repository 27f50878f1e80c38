"""Merge an expert's corrected annotations into a COCO training set, with provenance.

Inputs may be Label Studio JSON exports (a list of tasks), LabelMe files (read by
:func:`bmc_detectron.data.convert.labelme_to_coco`) or COCO files. Every input is checked before
anything is merged: its images must be in the pool (``images_root``), its classes must be the
training set's, and its boxes go through :func:`bmc_detectron.data.checks.check_dataset_dicts`
(missing / corrupt images, size mismatches, boxes outside the image). One bad file rejects the
whole merge, with every problem listed by file.

Merging: an image already in the set has its annotations replaced by the corrected ones; a new
image is added (ids continue after the largest). Each corrected image gets
``bmc_provenance = {round, annotator, source, source_sha256}``; ``info.bmc_rounds`` lists the
merges. Annotation ids are renumbered 1..M in image order, so merging the same input again gives
the same file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from bmc_detectron.active.formats import Labelled, image_name_candidates, read_label_studio
from bmc_detectron.data.checks import DatasetError, check_dataset_dicts
from bmc_detectron.data.convert import labelme_to_coco
from bmc_detectron.utils.io import IMAGE_SUFFIXES, file_sha256


class MergeError(ValueError):
    """Inputs that cannot be merged; ``problems`` lists them, each naming its file."""

    def __init__(self, problems: Sequence[str]):
        super().__init__(f"{len(problems)} problem(s):\n  " + "\n  ".join(problems))
        self.problems = list(problems)


class Pool:
    """The image files under ``root``, found by relative path or by unique base name."""

    def __init__(self, root: Path):
        self.root = Path(root)
        files = [p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        self.relpaths = {p.relative_to(self.root).as_posix() for p in files}
        self.by_name: Dict[str, List[str]] = defaultdict(list)
        for rel in sorted(self.relpaths):
            self.by_name[Path(rel).name].append(rel)

    def resolve(self, names: Sequence[str]) -> str:
        """The relative path of the first name that is in the pool; ValueError if none is."""
        for name in names:
            name = name.replace("\\", "/")
            if name in self.relpaths:
                return name
            found = self.by_name.get(Path(name).name, [])
            if len(found) > 1:
                raise ValueError(f"image '{name}' is ambiguous in the pool: {found}")
            if found:
                return found[0]
        raise ValueError(f"image '{names[0]}' is not in the pool {self.root}")


def _from_coco(coco: Dict, source: str) -> List[Labelled]:
    names = {c["id"]: c["name"] for c in coco.get("categories", [])}
    items = {}
    for im in coco.get("images", []):
        items[im["id"]] = Labelled(im["file_name"], im.get("width"), im.get("height"), [], source)
    for ann in coco.get("annotations", []):
        x, y, w, h = (float(v) for v in ann["bbox"])
        label = names.get(ann["category_id"], f"category_id {ann['category_id']}")
        items[ann["image_id"]].boxes.append((label, (x, y, x + w, y + h), None))
    return list(items.values())


def _read_labelme(path: Path, data: Dict, pool: Pool, classes: Sequence[str]) -> List[Labelled]:
    ref = str(data.get("imagePath") or path.stem)
    rel = pool.resolve([ref, Path(ref).name])
    image_dir = (pool.root / rel).parent
    coco = labelme_to_coco(path.parent, image_dir, classes, [path.stem])
    return _from_coco(coco, str(path))


def read_input(path: Path, pool: Pool, classes: Sequence[str]) -> Tuple[List[Labelled], List[str]]:
    """Corrections of one file (any supported format); ValueError names the problem."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not readable JSON ({e})") from None
    if isinstance(data, list):
        items, notes = read_label_studio(data, str(path))
    elif isinstance(data, dict) and isinstance(data.get("shapes"), list):
        items, notes = _read_labelme(Path(path), data, pool, classes), []
    elif isinstance(data, dict) and {"images", "annotations"} <= set(data):
        items, notes = _from_coco(data, str(path)), []
    else:
        raise ValueError("neither a Label Studio export, a LabelMe file nor a COCO file")
    for item in items:
        item.image = pool.resolve([item.image, *image_name_candidates(item.image)[1:]])
    return items, notes


def _validated(items: List[Labelled], pool: Pool, classes: Sequence[str], where: str) -> List[Dict]:
    """Dataset dicts of ``items`` cleaned by ``check_dataset_dicts``; ValueError lists problems."""
    from detectron2.structures import BoxMode

    unknown = sorted({b[0] for it in items for b in it.boxes if b[0] not in classes})
    if unknown:
        raise ValueError(f"unknown class(es) {unknown} (training set classes: {list(classes)})")
    dicts = []
    for it in items:
        anns = [
            {"bbox": list(box), "bbox_mode": BoxMode.XYXY_ABS, "category_id": classes.index(lab)}
            for lab, box, _ in it.boxes
        ]
        rec = {"file_name": str(pool.root / it.image), "image_id": it.image, "annotations": anns}
        if it.width and it.height:
            rec.update(width=int(it.width), height=int(it.height))
        dicts.append(rec)
    try:
        return check_dataset_dicts(dicts, where, len(classes)) if dicts else []
    except DatasetError as e:
        raise ValueError(str(e)) from None


def collect(
    inputs: Sequence[Path], pool: Pool, classes: Sequence[str]
) -> Tuple[Dict[str, Tuple[Dict, Path]], List[str]]:
    """All corrected images (relative path -> (cleaned dict, input file)) and notes.

    Raises :class:`MergeError` listing every problem of every file, so nothing is merged.
    """
    problems, notes = [], []
    found: Dict[str, Tuple[Dict, Path]] = {}
    for path in inputs:
        try:
            items, more = read_input(Path(path), pool, classes)
            cleaned = _validated(items, pool, classes, str(path))
        except ValueError as e:
            problems.append(f"{path}: {e}")
            continue
        notes += more
        for rec in cleaned:
            rel = rec["image_id"]
            if rel in found:
                problems.append(f"{path}: image {rel} is also corrected in {found[rel][1]}")
            found[rel] = (rec, Path(path))
    if problems:
        raise MergeError(problems)
    return found, notes


def _coco_annotations(rec: Dict, image_id: int, cat_ids: Sequence[int]) -> List[Dict]:
    from detectron2.structures import BoxMode

    out = []
    for ann in rec["annotations"]:
        x0, y0, x1, y1 = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
        x, y, w, h = (round(float(v), 4) for v in (x0, y0, x1 - x0, y1 - y0))
        out.append({"image_id": image_id, "category_id": cat_ids[ann["category_id"]]})
        out[-1].update(bbox=[x, y, w, h], area=round(w * h, 4), iscrowd=0)
    return out


def merge_coco(
    base: Dict, found: Dict[str, Tuple[Dict, Path]], round_no: int, annotator: str
) -> Dict:
    """A new COCO dict: ``base`` with the corrected images replaced or added."""
    cats = sorted(base["categories"], key=lambda c: c["id"])
    cat_ids = [c["id"] for c in cats]
    images = {im["file_name"]: dict(im) for im in base["images"]}
    anns_of: Dict[int, List[Dict]] = defaultdict(list)
    for ann in base.get("annotations", []):
        anns_of[ann["image_id"]].append({k: v for k, v in ann.items() if k != "id"})
    next_id = max((im["id"] for im in base["images"]), default=0) + 1
    shas = {}
    for rel in sorted(found):
        rec, source = found[rel]
        if rel not in images:
            images[rel] = {"id": next_id, "file_name": rel}
            next_id += 1
        im = images[rel]
        im.update(width=int(rec["width"]), height=int(rec["height"]))
        shas.setdefault(source, file_sha256(source))
        prov = {"round": int(round_no), "annotator": annotator, "source": source.name}
        im["bmc_provenance"] = dict(prov, source_sha256=shas[source])
        anns_of[im["id"]] = _coco_annotations(rec, im["id"], cat_ids)
    ordered = sorted(images.values(), key=lambda i: i["id"])
    annotations = []
    for im in ordered:
        for ann in anns_of.get(im["id"], []):
            annotations.append({"id": len(annotations) + 1, **ann})
    info = dict(base.get("info") or {})
    entry = {"round": int(round_no), "annotator": annotator}
    entry["inputs"] = [{"file": p.name, "sha256": s} for p, s in sorted(shas.items())]
    rounds = list(info.get("bmc_rounds") or [])
    if entry not in rounds:
        rounds.append(entry)
    info["bmc_rounds"] = rounds
    out = {k: v for k, v in base.items() if k not in ("images", "annotations", "info")}
    return {"info": info, **out, "images": ordered, "annotations": annotations}
