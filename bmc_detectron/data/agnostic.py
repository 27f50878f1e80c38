"""Class-agnostic variants of registered datasets: every annotated class merged into one "cell".

The thesis detects first (one class) and recognises each cell afterwards with the classifier.
``BMC.DATA.CLASS_AGNOSTIC True`` trains and evaluates any detector config that way:
:func:`use_agnostic_datasets` (called by ``config.build_cfg``) replaces every name in
``DATASETS.TRAIN`` / ``DATASETS.TEST`` by ``<name>_agnostic``, registered here on demand.

A merged dataset has ``thing_classes ["cell"]``; its boxes keep their coordinates and get
category id 0. When the source has a COCO ``json_file`` (every built-in and
``register_coco_dataset`` dataset), the merged variant gets its own json
(``datasets_root()/agnostic/<name>.json``, rewritten whenever the source json is newer), so
detectron2's COCOEvaluator, which reads ground truth from ``metadata.json_file``, evaluates
against the merged boxes. A source registered without a json gives a variant without one; the
COCOEvaluator then converts the merged dicts itself.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from bmc_detectron.data.checks import DatasetError
from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.data.paths import datasets_root
from bmc_detectron.utils.io import write_json_atomic

logger = logging.getLogger(__name__)

AGNOSTIC_SUFFIX = "_agnostic"
CELL_CLASS = "cell"
CELL_COLOR = (0, 150, 80)


def agnostic_metadata(source: str) -> Dict[str, object]:
    """Metadata of the merged variant of ``source`` (one class; the source's classes kept)."""
    src = MetadataCatalog.get(source)
    meta: Dict[str, object] = {
        "thing_classes": [CELL_CLASS],
        "thing_colors": [CELL_COLOR],
        "thing_full_names": ["nucleated cell (all classes merged)"],
        "evaluator_type": src.get("evaluator_type", "coco"),
        "agnostic_source": source,
    }
    if src.get("thing_classes") is not None:
        meta["source_classes"] = list(src.thing_classes)
    return meta


def merge_dicts(dicts: List[dict]) -> List[dict]:
    """Copies of detectron2 dataset dicts whose every annotation has ``category_id`` 0."""
    out = []
    for rec in dicts:
        new = copy.copy(rec)
        new["annotations"] = [dict(a, category_id=0) for a in rec.get("annotations", [])]
        out.append(new)
    return out


def merge_coco_json(source_json: Path, out_json: Path) -> Path:
    """Write ``source_json`` with one category ``{"id": 1, "name": "cell"}`` to ``out_json``.

    Images, annotation ids and boxes are unchanged; every ``category_id`` becomes 1.
    """
    try:
        data = json.loads(Path(source_json).read_text())
        anns = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{source_json}: cannot read a COCO json to merge ({e})") from None
    data["annotations"] = [dict(a, category_id=1) for a in anns]
    data["categories"] = [{"id": 1, "name": CELL_CLASS, "supercategory": "cell"}]
    info = dict(data.get("info") or {})
    info["class_agnostic_source"] = str(source_json)
    data["info"] = info
    return write_json_atomic(data, out_json)


def _load(name: str, source: str, json_file: Optional[Path]) -> List[dict]:
    """DatasetCatalog loader of a merged variant (see the module docstring)."""
    from detectron2.data.datasets import load_coco_json

    if json_file is None:
        return merge_dicts(DatasetCatalog.get(source))
    src_json = prepare_dataset(source)  # converts a built-in source on first use
    if not json_file.is_file() or json_file.stat().st_mtime < src_json.stat().st_mtime:
        merge_coco_json(src_json, json_file)
        logger.info("%s: merged the classes of %s -> %s", name, src_json, json_file)
    return load_coco_json(str(json_file), MetadataCatalog.get(source).image_root, name)


def register_agnostic_dataset(source: str) -> str:
    """Register the merged variant of the registered dataset ``source``; returns its name.

    Idempotent. A name that already is a merged variant is returned unchanged, and
    ``<source>_agnostic`` of a registered ``<source>`` is accepted too (a saved config).
    """
    if source in DatasetCatalog.list() and MetadataCatalog.get(source).get("agnostic_source"):
        return source
    if source not in DatasetCatalog.list() and source.endswith(AGNOSTIC_SUFFIX):
        source = source[: -len(AGNOSTIC_SUFFIX)]
    if source not in DatasetCatalog.list():
        raise DatasetError(f"dataset '{source}' is not registered (needed for CLASS_AGNOSTIC)")
    name = source + AGNOSTIC_SUFFIX
    src_meta = MetadataCatalog.get(source)
    json_file = None
    if src_meta.get("json_file"):
        json_file = (datasets_root() / "agnostic" / f"{name}.json").resolve()
    if name in DatasetCatalog.list():
        old = MetadataCatalog.get(name).get("json_file")
        if old == (str(json_file) if json_file else None):
            return name
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, functools.partial(_load, name, source, json_file))
    meta = agnostic_metadata(source)
    if json_file is not None:
        meta.update(json_file=str(json_file), image_root=src_meta.image_root)
    MetadataCatalog.get(name).set(**meta)
    return name


def use_agnostic_datasets(cfg: CfgNode) -> None:
    """Replace ``cfg.DATASETS.TRAIN`` / ``TEST`` names by their merged variants (in place)."""
    for key in ("TRAIN", "TEST"):
        names = tuple(register_agnostic_dataset(n) for n in cfg.DATASETS[key])
        if names != tuple(cfg.DATASETS[key]):
            logger.info(
                "BMC.DATA.CLASS_AGNOSTIC: DATASETS.%s %s -> %s", key, cfg.DATASETS[key], names
            )
        cfg.DATASETS[key] = names
