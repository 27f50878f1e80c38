"""Back to training: reviewed cases as COCO for ``bmc merge-labels``, and the unreviewed cases
ranked for the active-learning loop.

Export: the latest *signed* version of each chosen case (the signature says the whole case was
reviewed, so every kept cell is a label: the class the reviewer gave, or the model's that the
reviewer let stand); deleted cells are left out, and so are cells of class Other (no training
set has that class; their number is kept in ``info``). An image's ``file_name`` is its name in
the store (``<sha256><suffix>``); ``bmc merge-labels --images-root`` finds it by that name under
the store's folder, or under the folder the images were copied to (``images_dir``). Provenance:
``bmc_case`` on each image (case, version, field, reviewer, signed at) and ``info.bmc_cases``.

Ranking: cases never reviewed (status counted), highest first by the acquisition score of their
cells' stored class probabilities (:func:`bmc_detectron.active.scores.image_score`, the same
strategies and aggregates as ``bmc select``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from sqlalchemy.orm import Session

from bmc_detectron.active.scores import image_score
from bmc_detectron.cases.errors import ExportError, NotFoundError
from bmc_detectron.cases.models import Case, Cell
from bmc_detectron.cases.queries import find_cases, get_case
from bmc_detectron.cases.store import ImageStore
from bmc_detectron.data.classes import OTHER
from bmc_detectron.reporting.tables import markdown_table


def latest_signed(session: Session, case_id: str, lab: Optional[str] = None) -> Optional[Case]:
    """The case's latest signed version, None when it was never signed; an unknown case is
    refused (:class:`NotFoundError`), one of another lab than ``lab`` (the caller's scope; None:
    every lab) too (:class:`~.errors.ForbiddenError`)."""
    latest = get_case(session, case_id, lab=lab)
    for version in range(latest.version, 0, -1):
        try:
            case = get_case(session, case_id, version, lab)
        except NotFoundError:
            continue
        if case.status == "signed":
            return case
    return None


def _signed(session: Session, case_id: str, lab: Optional[str]) -> Case:
    case = latest_signed(session, case_id, lab)
    if case is None:
        raise ExportError(f"case {case_id!r} has no signed version: sign it before exporting")
    return case


def _categories(cases: Sequence[Case]) -> List[str]:
    names = [n for n in cases[0].class_names if n != OTHER.abbr]
    for case in cases[1:]:
        other = [n for n in case.class_names if n != OTHER.abbr]
        if other != names:
            raise ExportError(
                f"case {case.case_id!r} has classes {other}, case {cases[0].case_id!r} has "
                f"{names}: export them separately"
            )
    return names


def _annotation(cell: Cell, image_id: int, cat_ids: Dict[str, int]) -> Dict[str, Any]:
    w, h = cell.x1 - cell.x0, cell.y1 - cell.y0
    return {
        "image_id": image_id,
        "category_id": cat_ids[cell.final_class],
        "bbox": [cell.x0, cell.y0, w, h],
        "area": w * h,
        "iscrowd": 0,
    }


def export_coco(
    session: Session,
    store: ImageStore,
    case_ids: Sequence[str],
    images_dir: Optional[Path] = None,
    lab: Optional[str] = None,
) -> Dict[str, Any]:
    """The reviewed cells of the chosen cases as one COCO dict (see the module doc);
    ``images_dir``: copy the images there too (as ``<sha256><suffix>``); ``lab``: the caller's
    lab scope (a case of another lab is refused: :class:`~.errors.ForbiddenError`)."""
    if not case_ids:
        raise ExportError("no case chosen")
    cases = [_signed(session, cid, lab) for cid in dict.fromkeys(case_ids)]
    names = _categories(cases)
    cat_ids = {n: i + 1 for i, n in enumerate(names)}
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    seen: Dict[str, str] = {}
    provenance, other = [], 0
    for case in cases:
        sign_off = case.sign_offs[-1]
        signed = {"reviewer": sign_off.user.name, "signed_at": sign_off.at.isoformat()}
        provenance.append({"case": case.case_id, "version": case.version, **signed})
        for field in case.fields:
            file_name = f"{field.image_sha256}{field.image_suffix}"
            where = f"case {case.case_id!r} field {field.name!r}"
            if file_name in seen:
                raise ExportError(f"{where}: the same image as {seen[file_name]}")
            seen[file_name] = where
            if not store.path(field.image_sha256, field.image_suffix).is_file():
                raise ExportError(f"{where}: image missing from the store {store.root}")
            if images_dir is not None:
                src = store.path(field.image_sha256, field.image_suffix)
                Path(images_dir).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, Path(images_dir) / file_name)
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": field.width,
                    "height": field.height,
                    "bmc_case": {"case": case.case_id, "version": case.version},
                }
            )
            images[-1]["bmc_case"].update(field=field.name, **signed)
            for cell in field.cells:
                if cell.deleted:
                    continue
                if cell.final_class == OTHER.abbr:
                    other += 1
                    continue
                annotations.append({"id": len(annotations) + 1})
                annotations[-1].update(_annotation(cell, image_id, cat_ids))
    info = {"description": "reviewed cells of signed bmc-detectron cases", "bmc_cases": provenance}
    info["other_cells_left_out"] = other
    categories = [{"id": i, "name": n} for n, i in cat_ids.items()]
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def rank_unreviewed(
    session: Session, strategy: str = "entropy", aggregate: str = "max"
) -> List[Tuple[str, float, int]]:
    """(case id, score, cells) of every case never reviewed, highest score first (ties by id).

    Cells without class probabilities (a detector-only count) add nothing to the score."""
    ranked = []
    for case in find_cases(session, status="counted"):
        case = get_case(session, case.case_id, case.version)
        probs = [c.probs for f in case.fields for c in f.cells if c.probs]
        k = len(case.class_names)
        matrix = np.asarray([p for p in probs if len(p) == k], dtype=np.float64).reshape(-1, k)
        cells = sum(len(f.cells) for f in case.fields)
        ranked.append((case.case_id, float(image_score(strategy, matrix, aggregate)), cells))
    return sorted(ranked, key=lambda r: (-r[1], r[0]))


def unreviewed_table(
    session: Session, strategy: str = "entropy", aggregate: str = "max", budget: int = 10
) -> str:
    """The first ``budget`` cases of :func:`rank_unreviewed` as a markdown table (what ``bmc
    cases next`` prints)."""
    ranked = rank_unreviewed(session, strategy, aggregate)[: max(budget, 0)]
    rows = [[i + 1, cid, f"{score:.4f}", cells] for i, (cid, score, cells) in enumerate(ranked)]
    return markdown_table(["rank", "case", f"{strategy} ({aggregate})", "cells"], rows)
