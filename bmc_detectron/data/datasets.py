"""Dataset registration by name in detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

* :func:`register_coco_dataset` registers any COCO json + image folder (your own lab data too)::

      from bmc_detectron.data.datasets import register_coco_dataset
      register_coco_dataset("my_lab_train", "lab/annotations/train.json", "lab/images",
                            metadata={"thing_colors": [(255, 0, 0), (0, 0, 255)]})

* :func:`register_builtin_datasets` (called on ``import bmc_detectron``) registers
  ``bccd_{trainval,test,train,val}``, ``pbc_wbc_{train,val}``, ``pbc_marrow_{train,val}``
  (marrow class ids, :mod:`bmc_detectron.data.pbc`), ``bmc_synth_{train,test}`` and
  ``marrow_real_{train,val}`` (real PBC cells composed into dense marrow-like fields,
  :mod:`bmc_detectron.data.synthetic.marrow`) and ``marrow_non_cells_{train,val}`` (boxes of
  no whole white cell in PBC and BCCD images, labelled Other: :mod:`bmc_detectron.data.non_cells`).
  BCCD and PBC are converted from the read-only shared data on first load and cached under
  ``datasets_root()/{bccd,pbc_wbc,pbc_marrow}/annotations/<split>.json``; the synthetic data must be
  generated first (``python -m bmc_detectron.tools.synthetic --output datasets/bmc_synth``,
  ``python -m bmc_detectron.tools.marrow_fields --output datasets/marrow_real``).

Nothing is read when registering: a missing json or image folder is reported (with the file
and the fix) when the dataset is loaded. COCOEvaluator opens ``metadata.json_file`` when it is
built, so call :func:`prepare_dataset` (or ``DatasetCatalog.get``) first for a fresh checkout.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Tuple, Union

from detectron2.data import DatasetCatalog, MetadataCatalog

from bmc_detectron.data.checks import DatasetError
from bmc_detectron.data.classes import (
    BASO,
    KNOWN_ABBRS,
    KNOWN_COLORS,
    KNOWN_NAMES,
    MARROW_COLORS,
    marrow_metadata,
)
from bmc_detectron.data.convert import read_image_list, voc_to_coco, yolo_to_coco
from bmc_detectron.data.non_cells import NON_CELL_SOURCES, convert_non_cells
from bmc_detectron.data.paths import datasets_root, shared_datasets_root
from bmc_detectron.data.pbc import PBC_MARROW_SPLITS, convert_pbc_marrow, pbc_marrow_metadata
from bmc_detectron.utils.io import shown_path, write_json_atomic

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
_Color = Tuple[int, int, int]

BCCD_CLASSES: Tuple[str, ...] = ("RBC", "WBC", "Platelets")
BCCD_FULL_NAMES: Tuple[str, ...] = ("red blood cell", "white blood cell", "platelet")
BCCD_COLORS: Tuple[_Color, ...] = ((220, 50, 50), (40, 90, 220), (240, 190, 20))
BCCD_SPLITS: Tuple[str, ...] = ("trainval", "test", "train", "val")

#: YOLO class ids 0..6 of the PBC white-cell subset (see the shared README).
PBC_WBC_CLASSES: Tuple[str, ...] = (
    "Basophil",
    "Eosinophil",
    "Erythroblast",
    "Ig",
    "Lymphocyte",
    "Monocyte",
    "Neutrophil",
)
PBC_WBC_FULL_NAMES: Tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature granulocyte",
    "lymphocyte",
    "monocyte",
    "neutrophil",
)
# Same colour as the matching class (Baso, Eosl, Red, Myelo, Lym, Mono, Lobu).
PBC_WBC_COLORS: Tuple[_Color, ...] = (
    BASO.color,
    MARROW_COLORS[10],
    MARROW_COLORS[4],
    MARROW_COLORS[6],
    MARROW_COLORS[1],
    MARROW_COLORS[2],
    MARROW_COLORS[9],
)
PBC_WBC_SPLITS: Tuple[str, ...] = ("train", "val")
SYNTH_SPLITS: Tuple[str, ...] = ("train", "test")
#: splits of the real-cell marrow composites (``marrow_real_<split>``)
MARROW_REAL_SPLITS: Tuple[str, ...] = ("train", "val")

# Converters run before loading a built-in dataset whose json is missing (name -> callable).
_PREPARERS: Dict[str, Callable[[], None]] = {}


def synth_command() -> str:
    """The command that generates ``bmc_synth`` where :func:`datasets_root` points."""
    out = shown_path(datasets_root() / "bmc_synth")
    return f"python -m bmc_detectron.tools.synthetic --output {out}"


def marrow_real_command() -> str:
    """The command that generates ``marrow_real`` (needs the shared PBC data)."""
    out = shown_path(datasets_root() / "marrow_real")
    return f"python -m bmc_detectron.tools.marrow_fields --output {out}"


def _missing(name: str, path: Path, what: str) -> DatasetError:
    hint = ""
    if name.startswith("bmc_synth"):
        hint = f"; generate it with: {synth_command()}"
    elif name.startswith("marrow_real"):
        hint = f"; generate it with: {marrow_real_command()}"
    return DatasetError(f"{path}: {what} of dataset '{name}' not found{hint}")


def _check_categories(name: str, json_file: Path, data: object) -> List[str]:
    """Category names of a parsed COCO json, in id order; clear errors for a malformed file."""
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{json_file}: not a COCO detection file (needs 'images', 'annotations' and "
            f"'categories' lists) for dataset '{name}'"
        )
    cats = sorted(data["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    known = MetadataCatalog.get(name).get("thing_classes")
    if known is not None and list(known) != names:
        raise DatasetError(
            f"{json_file}: categories {names} do not match the thing_classes {list(known)} "
            f"registered for dataset '{name}'"
        )
    return names


def _load(name: str, json_file: Path, image_root: Path) -> List[Dict]:
    """DatasetCatalog loader: prepare (built-ins), check the files, then ``load_coco_json``."""
    from detectron2.data.datasets import load_coco_json

    if name in _PREPARERS and not json_file.is_file():
        _PREPARERS[name]()
    if not json_file.is_file():
        raise _missing(name, json_file, "annotation file")
    if not image_root.is_dir():
        raise _missing(name, image_root, "image folder")
    try:
        data = json.loads(json_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{json_file}: not valid JSON ({e}) for dataset '{name}'") from None
    _check_categories(name, json_file, data)
    return load_coco_json(str(json_file), str(image_root), name)


def register_coco_dataset(
    name: str,
    json_file: PathLike,
    image_root: PathLike,
    metadata: Mapping[str, object] | None = None,
) -> None:
    """Register a COCO-format detection dataset under ``name``.

    ``DatasetCatalog.get(name)`` then returns detectron2 dataset dicts (via
    ``load_coco_json``); ``MetadataCatalog.get(name)`` holds ``json_file``, ``image_root``,
    ``evaluator_type="coco"`` and ``metadata`` (e.g. ``thing_classes``, ``thing_colors``;
    ``thing_classes`` is otherwise taken from the json's categories on load). ``file_name``
    entries in the json are relative to ``image_root``. Files are only checked on load.
    """
    if name in DatasetCatalog.list():
        raise ValueError(f"dataset '{name}' is already registered (see unregister_dataset)")
    json_file = Path(json_file).expanduser().resolve()
    image_root = Path(image_root).expanduser().resolve()
    DatasetCatalog.register(name, functools.partial(_load, name, json_file, image_root))
    meta = dict(metadata or {})
    meta.update(json_file=str(json_file), image_root=str(image_root), evaluator_type="coco")
    MetadataCatalog.get(name).set(**meta)


def unregister_dataset(name: str) -> None:
    """Remove ``name`` from DatasetCatalog and MetadataCatalog (no error if absent)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    _PREPARERS.pop(name, None)


def _ensure_registered(
    name: str, json_file: Path, image_root: Path, metadata: Mapping[str, object]
) -> None:
    """Register ``name``; keep it if it already points at the same files."""
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        same = meta.get("json_file") == str(json_file.resolve())
        if same and meta.get("image_root") == str(image_root.resolve()):
            return
        unregister_dataset(name)
    register_coco_dataset(name, json_file, image_root, metadata)


def dataset_registration(name: str) -> Dict[str, object]:
    """What :func:`register_datasets` needs to register ``name`` again in another process:
    its json, image root and JSON-serialisable metadata."""
    meta = MetadataCatalog.get(name).as_dict()
    # the id map has int keys, which JSON would turn into strings
    skip = {"name", "json_file", "image_root", "evaluator_type"}
    skip.add("thing_dataset_id_to_contiguous_id")
    extra = {}
    for key, value in meta.items():
        if key in skip:
            continue
        try:
            extra[key] = json.loads(json.dumps(value))
        except TypeError:
            continue
    return {"json_file": meta["json_file"], "image_root": meta["image_root"], "metadata": extra}


def register_datasets(registrations: Mapping[str, Mapping[str, object]]) -> None:
    """Register (or re-point) every ``name -> dataset_registration(name)`` of another process."""
    for name, reg in registrations.items():
        json_file, image_root = Path(reg["json_file"]), Path(reg["image_root"])
        _ensure_registered(name, json_file, image_root, reg.get("metadata") or {})


def _convert_bccd(split: str, json_file: Path) -> None:
    root = shared_datasets_root() / "bccd"
    if not (root / "Annotations").is_dir():
        raise DatasetError(
            f"{root}: BCCD data not found (needed for bccd_{split}); set $BMC_SHARED_DATASETS"
        )
    ids = read_image_list(root / "ImageSets" / "Main" / f"{split}.txt")
    coco = voc_to_coco(root / "Annotations", root / "JPEGImages", BCCD_CLASSES, ids)
    write_json_atomic(coco, json_file)
    logger.info("bccd_%s: converted %d images -> %s", split, len(coco["images"]), json_file)


def _convert_pbc_wbc(split: str, json_file: Path) -> None:
    root = shared_datasets_root() / "pbc_wbc" / split
    if not (root / "labels").is_dir():
        raise DatasetError(
            f"{root}: PBC data not found (needed for pbc_wbc_{split}); set $BMC_SHARED_DATASETS"
        )
    coco = yolo_to_coco(root / "images", root / "labels", PBC_WBC_CLASSES)
    write_json_atomic(coco, json_file)
    logger.info("pbc_wbc_%s: converted %d images -> %s", split, len(coco["images"]), json_file)


def _builtin_specs() -> List[Tuple[str, Path, Path, Dict[str, object], Callable | None]]:
    """(name, json, image root, metadata, converter or None) of every built-in dataset."""
    shared, generated = shared_datasets_root(), datasets_root()
    specs: List[Tuple[str, Path, Path, Dict[str, object], Callable | None]] = []
    bccd_meta = {"thing_classes": list(BCCD_CLASSES), "thing_colors": list(BCCD_COLORS)}
    bccd_meta["thing_full_names"] = list(BCCD_FULL_NAMES)
    for split in BCCD_SPLITS:
        json_file = generated / "bccd" / "annotations" / f"{split}.json"
        convert = functools.partial(_convert_bccd, split, json_file)
        specs.append(
            (f"bccd_{split}", json_file, shared / "bccd" / "JPEGImages", bccd_meta, convert)
        )
    pbc_meta = {"thing_classes": list(PBC_WBC_CLASSES), "thing_colors": list(PBC_WBC_COLORS)}
    pbc_meta["thing_full_names"] = list(PBC_WBC_FULL_NAMES)
    for split in PBC_WBC_SPLITS:
        json_file = generated / "pbc_wbc" / "annotations" / f"{split}.json"
        convert = functools.partial(_convert_pbc_wbc, split, json_file)
        image_root = shared / "pbc_wbc" / split / "images"
        specs.append((f"pbc_wbc_{split}", json_file, image_root, pbc_meta, convert))
    for split in PBC_MARROW_SPLITS:  # marrow class ids from the file names (data/pbc.py)
        json_file = generated / "pbc_marrow" / "annotations" / f"{split}.json"
        convert = functools.partial(convert_pbc_marrow, split, json_file, PBC_WBC_CLASSES)
        meta = pbc_marrow_metadata()
        specs.append((f"pbc_marrow_{split}", json_file, shared / "pbc_wbc", meta, convert))
    for split in SYNTH_SPLITS:
        json_file = generated / "bmc_synth" / "annotations" / f"{split}.json"
        image_root = generated / "bmc_synth" / split
        specs.append((f"bmc_synth_{split}", json_file, image_root, marrow_metadata(), None))
    for split in MARROW_REAL_SPLITS:
        json_file = generated / "marrow_real" / "annotations" / f"{split}.json"
        image_root = generated / "marrow_real" / split
        specs.append((f"marrow_real_{split}", json_file, image_root, marrow_metadata(), None))
    known = {"thing_classes": list(KNOWN_ABBRS), "thing_colors": list(KNOWN_COLORS)}
    known["thing_full_names"] = list(KNOWN_NAMES)
    for split in NON_CELL_SOURCES:  # boxes of no whole white cell, labelled Other
        json_file = generated / "marrow_non_cells" / "annotations" / f"{split}.json"
        convert = functools.partial(convert_non_cells, split, json_file)
        specs.append((f"marrow_non_cells_{split}", json_file, shared, known, convert))
    return specs


def register_builtin_datasets() -> List[str]:
    """Register the built-in datasets (idempotent; returns their names).

    Paths are resolved from ``$BMC_SHARED_DATASETS`` / ``$BMC_DATASETS`` now; calling again
    after changing them re-registers the names that moved, and is a no-op otherwise.
    """
    names = []
    for name, json_file, image_root, meta, convert in _builtin_specs():
        _ensure_registered(name, json_file, image_root, meta)
        if convert is not None:
            _PREPARERS[name] = convert
        names.append(name)
    return names


def prepare_dataset(name: str) -> Path:
    """Make sure the json of a registered dataset exists (converting a built-in one if needed)
    and return its path; raises :class:`DatasetError` with the fix otherwise."""
    if name not in DatasetCatalog.list():
        raise DatasetError(f"dataset '{name}' is not registered")
    json_file = Path(MetadataCatalog.get(name).json_file)
    if not json_file.is_file() and name in _PREPARERS:
        _PREPARERS[name]()
    if not json_file.is_file():
        raise _missing(name, json_file, "annotation file")
    return json_file
