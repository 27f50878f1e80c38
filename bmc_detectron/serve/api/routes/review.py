"""Reviewing one version of a case, each change saved at once and audited
(:mod:`bmc_detectron.cases.review`), under ``/api/v1/cases/{id}/versions/{v}``:

- ``POST cells/{cell}/class`` {class, version}: reclassify;
- ``POST cells/{cell}/delete`` {version}: not a cell;
- ``POST cells/{cell}/restore`` {reviewed_class, deleted, version}: undo (a new audited change);
- ``POST cells`` {field, box, class?}: a missed cell; the model classifies the box (the
  counter's recognition), the person's class (if given) wins;
- ``POST sign``: the user signs (read-only from then on); ``POST reopen``: a new version.

A case of another lab than the user's is refused with 403 (``forbidden``; see
:mod:`bmc_detectron.cases.labs`). A cell edit names the row version it was made on: a stale one
is refused with 409 (``conflict``), never written over; an edit of a signed case with 409
(``read_only``). Each answer holds the cell (or case) as stored now and the case's differential.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from bmc_detectron.cases import review
from bmc_detectron.cases.db import CaseDB
from bmc_detectron.cases.errors import ReadOnlyError
from bmc_detectron.cases.models import Case
from bmc_detectron.cases.queries import case_differential, cell_json, get_case
from bmc_detectron.data.classes import OTHER
from bmc_detectron.serve.api.case_deps import CaseDBDep, UserDep, check_csrf
from bmc_detectron.serve.api.deps import CounterDep
from bmc_detectron.serve.api.routes.cases import case_view
from bmc_detectron.serve.auth import Principal
from bmc_detectron.serve.images import decode_image
from bmc_detectron.serve.uploads import Upload

router = APIRouter(dependencies=[Depends(check_csrf)])
PREFIX = "/cases/{case_id}/versions/{version}"


class Versioned(BaseModel):
    """The row version the change was made on."""

    version: int = Field(ge=1)


class Reclassify(Versioned):
    cell_class: str = Field(alias="class", max_length=64)


class Restore(Versioned):
    reviewed_class: Optional[str] = Field(None, max_length=64)
    deleted: bool = False


class NewCell(BaseModel):
    field: str = Field(max_length=255)
    box: List[float] = Field(min_length=4, max_length=4, description="x0, y0, x1, y1 (pixels)")
    cell_class: Optional[str] = Field(None, alias="class", max_length=64)


def _answer(case: Case, request: Request, cell: Any = None) -> Dict[str, Any]:
    out = {
        "status": case.status,
        "differential": case_differential(case, request.app.state.settings.lineage),
    }
    if cell is not None:
        out["cell"] = cell_json(cell)
    return out


def _cell_edit(
    db: CaseDB, request: Request, user: Principal, case_id: str, version: int, edit
) -> Dict[str, Any]:
    with db.session() as session:
        case = get_case(session, case_id, version, user.scope)
        cell = edit(session, case)
        return _answer(case, request, cell)


@router.post(PREFIX + "/cells/{cell_id}/class", summary="Reclassify a cell")
def reclassify(
    case_id: str,
    version: int,
    cell_id: int,
    body: Reclassify,
    request: Request,
    db: CaseDBDep,
    user: UserDep,
) -> Dict[str, Any]:
    def edit(session, case):
        return review.reclassify(session, case, cell_id, body.cell_class, body.version, user.name)

    return _cell_edit(db, request, user, case_id, version, edit)


@router.post(PREFIX + "/cells/{cell_id}/delete", summary="Delete a false detection")
def delete(
    case_id: str,
    version: int,
    cell_id: int,
    body: Versioned,
    request: Request,
    db: CaseDBDep,
    user: UserDep,
) -> Dict[str, Any]:
    def edit(session, case):
        return review.delete_cell(session, case, cell_id, body.version, user.name)

    return _cell_edit(db, request, user, case_id, version, edit)


@router.post(PREFIX + "/cells/{cell_id}/restore", summary="Undo: an earlier review back")
def restore(
    case_id: str,
    version: int,
    cell_id: int,
    body: Restore,
    request: Request,
    db: CaseDBDep,
    user: UserDep,
) -> Dict[str, Any]:
    def edit(session, case):
        return review.restore_cell(
            session, case, cell_id, body.reviewed_class, body.deleted, body.version, user.name
        )

    return _cell_edit(db, request, user, case_id, version, edit)


def model_class(
    counter: Any, db: CaseDB, case: Case, field_name: str, box: List[float]
) -> Tuple[Optional[str], Optional[List[float]]]:
    """What the counter's classifier says of ``box`` in the stored field image (None, None
    without a classifier, or one whose classes are not the case's)."""
    classifier = getattr(counter, "classifier", None)
    field = next((f for f in case.fields if f.name == field_name), None)
    if classifier is None or field is None or list(classifier.class_names) != case.class_names:
        return None, None
    data = db.store.get(field.image_sha256, field.image_suffix)
    image = decode_image(Upload(0, field.name, "", data), max(field.width * field.height, 1))
    probs, other = classifier.recognise(image, np.asarray([box], dtype=np.float32))
    row = [float(p) for p in probs[0]]
    label = OTHER.abbr if bool(other[0]) else case.class_names[int(np.argmax(row))]
    return label, row


@router.post(PREFIX + "/cells", summary="Add a cell the model missed")
def add_cell(
    case_id: str,
    version: int,
    body: NewCell,
    request: Request,
    db: CaseDBDep,
    user: UserDep,
    counter: CounterDep,
) -> Dict[str, Any]:
    with db.session() as session:
        case = get_case(session, case_id, version, user.scope)
        if case.status == "signed":  # refused before the model runs
            raise ReadOnlyError(f"case {case_id!r} version {version} is signed: read-only")
        label, probs = model_class(counter, db, case, body.field, body.box)
        chosen = body.cell_class or label or case.class_names[0]
        cell = review.add_cell(session, case, body.field, body.box, chosen, user.name, label, probs)
        return _answer(case, request, cell)


@router.post(PREFIX + "/sign", summary="Sign the case (read-only from then on)")
def sign(
    case_id: str, version: int, request: Request, db: CaseDBDep, user: UserDep
) -> Dict[str, Any]:
    with db.session() as session:
        case = get_case(session, case_id, version, user.scope)
        review.sign(session, case, user.name)
        return case_view(case, request)


@router.post(PREFIX + "/reopen", summary="Open a new version of a signed case")
def reopen(
    case_id: str, version: int, request: Request, db: CaseDBDep, user: UserDep
) -> Dict[str, Any]:
    with db.session() as session:
        case = review.reopen(session, get_case(session, case_id, version, user.scope), user.name)
        return case_view(get_case(session, case.case_id, case.version, user.scope), request)
