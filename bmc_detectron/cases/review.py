"""Reviewing a case: reclassify, delete or add a cell, undo, sign, re-open.

Every call takes the acting user's name (a registered user: :func:`~.users.get_user`) and writes
its audit entry in the caller's transaction (:meth:`~.db.CaseDB.session`), so the change and its
trail are kept together or not at all.

Concurrency: a cell edit names the row version the caller last read; when the cell has changed
since (another reviewer, another tab), :class:`~.errors.ConflictError` says so and nothing is
written. Two transactions racing past that check are caught by the row version itself (the
UPDATE matches no row: SQLAlchemy's ``StaleDataError``, reported the same way).

The acting user must see the case (:mod:`.labs`: a reviewer of another lab is refused with
:class:`~.errors.ForbiddenError`, an admin sees every lab).

A signed case is read-only (:class:`~.errors.ReadOnlyError`); :func:`reopen` makes a new version
(status in_review, ``parent_id`` the signed one) with the same fields and the cells as signed;
the signed version stays as it was.
"""

from __future__ import annotations

from typing import Optional, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from bmc_detectron.cases.audit import cell_state, record
from bmc_detectron.cases.errors import CaseError, ConflictError, NotFoundError, ReadOnlyError
from bmc_detectron.cases.labs import check_case_lab, lab_scope
from bmc_detectron.cases.models import Case, Cell, Field, SignOff, User, utcnow
from bmc_detectron.cases.queries import case_differential, class_choices, counts_snapshot
from bmc_detectron.cases.users import get_user


def _editable(case: Case) -> None:
    if case.status == "signed":
        raise ReadOnlyError(
            f"case {case.case_id!r} version {case.version} is signed: read-only "
            "(re-open it for a new version)"
        )


def _acting(session: Session, case: Case, user: str) -> User:
    """The acting user, who must see the case's lab."""
    acting = get_user(session, user)
    check_case_lab(case.case_id, case.lab, lab_scope(acting.role, acting.lab))
    return acting


def _cell(session: Session, case: Case, cell_id: int) -> Cell:
    cell = session.get(Cell, cell_id)
    if cell is None or cell.field.case_pk != case.id:
        raise NotFoundError(f"cell {cell_id} is not in case {case.case_id!r} v{case.version}")
    return cell


def _check_version(cell: Cell, expected: int) -> None:
    if cell.version != expected:
        raise ConflictError(
            f"cell {cell.id} was changed by someone else (version {cell.version}, you edited "
            f"version {expected}); reload the case: nothing was written"
        )


def _check_class(case: Case, name: str) -> None:
    choices = class_choices(case)
    if name not in choices:
        raise CaseError(f"class {name!r} is not a class of case {case.case_id!r}: {choices}")


def _flush(session: Session, cell_id: int) -> None:
    try:
        session.flush()
    except StaleDataError:
        raise ConflictError(
            f"cell {cell_id} was changed by someone else meanwhile; reload the case: "
            "nothing was written"
        ) from None


def _reviewed(case: Case, cell: Cell, user: User) -> None:
    cell.reviewed_by, cell.reviewed_at = user.id, utcnow()
    if case.status == "counted":
        case.status = "in_review"


def reclassify(
    session: Session, case: Case, cell_id: int, new_class: str, expected_version: int, user: str
) -> Cell:
    """Give cell ``cell_id`` the class ``new_class`` (a class of the case, or Other)."""
    acting = _acting(session, case, user)
    _editable(case)
    cell = _cell(session, case, cell_id)
    _check_version(cell, expected_version)
    _check_class(case, new_class)
    old = cell_state(cell)
    cell.reviewed_class = new_class
    _reviewed(case, cell, acting)
    _flush(session, cell_id)
    record(session, acting.name, "reclassify", "cell", cell.id, case, old, cell_state(cell))
    return cell


def delete_cell(
    session: Session, case: Case, cell_id: int, expected_version: int, user: str
) -> Cell:
    """Mark cell ``cell_id`` as no cell (a false detection); the row is kept, flagged."""
    acting = _acting(session, case, user)
    _editable(case)
    cell = _cell(session, case, cell_id)
    _check_version(cell, expected_version)
    old = cell_state(cell)
    cell.deleted = True
    _reviewed(case, cell, acting)
    _flush(session, cell_id)
    record(session, acting.name, "delete", "cell", cell.id, case, old, cell_state(cell))
    return cell


def restore_cell(
    session: Session,
    case: Case,
    cell_id: int,
    reviewed_class: Optional[str],
    deleted: bool,
    expected_version: int,
    user: str,
) -> Cell:
    """Undo: give cell ``cell_id`` back an earlier review (``reviewed_class``, None: the model's;
    ``deleted``). A new audited change (action ``undo``), never a rewrite of the trail; a cell
    back to the model's class, not deleted, is unreviewed again (unless a person added it)."""
    acting = _acting(session, case, user)
    _editable(case)
    cell = _cell(session, case, cell_id)
    _check_version(cell, expected_version)
    if reviewed_class is not None:
        _check_class(case, reviewed_class)
    old = cell_state(cell)
    cell.reviewed_class, cell.deleted = reviewed_class, bool(deleted)
    if reviewed_class is None and not deleted and not cell.added:
        cell.reviewed_by, cell.reviewed_at = None, None
    else:
        _reviewed(case, cell, acting)
    _flush(session, cell_id)
    record(session, acting.name, "undo", "cell", cell.id, case, old, cell_state(cell))
    return cell


def add_cell(
    session: Session,
    case: Case,
    field_name: str,
    box: Sequence[float],
    cell_class: str,
    user: str,
    model_class: Optional[str] = None,
    probs: Optional[Sequence[float]] = None,
) -> Cell:
    """A cell the model missed, drawn by the person: ``box`` (x0, y0, x1, y1) inside the field,
    ``cell_class`` the person's; ``model_class`` / ``probs``: what the model says of the box."""
    acting = _acting(session, case, user)
    _editable(case)
    field = next((f for f in case.fields if f.name == field_name), None)
    if field is None:
        raise NotFoundError(f"field {field_name!r} is not in case {case.case_id!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= field.width and 0 <= y0 < y1 <= field.height):
        raise CaseError(
            f"box {[x0, y0, x1, y1]} is not inside field {field_name!r} "
            f"({field.width} x {field.height})"
        )
    _check_class(case, cell_class)
    if model_class is not None:
        _check_class(case, model_class)
    cell = Cell(x0=x0, y0=y0, x1=x1, y1=y1, det_score=None, det_class="", added=True)
    cell.model_class, cell.reviewed_class, cell.deleted = model_class, cell_class, False
    cell.model_prob = None if probs is None else max(float(p) for p in probs)
    cell.probs = None if probs is None else [float(p) for p in probs]
    field.cells.append(cell)
    _reviewed(case, cell, acting)
    session.flush()
    record(session, acting.name, "add", "cell", cell.id, case, None, cell_state(cell))
    return cell


def sign(session: Session, case: Case, user: str) -> SignOff:
    """``user`` signs the case: it becomes read-only; the counts as signed are kept."""
    acting = _acting(session, case, user)
    _editable(case)
    counts = counts_snapshot(case_differential(case))
    sign_off = SignOff(case_pk=case.id, user_id=acting.id, counts=counts)
    session.add(sign_off)
    old_status, case.status = case.status, "signed"
    session.flush()
    new = {"status": "signed", "counts": counts}
    record(session, acting.name, "sign", "case", case.id, case, {"status": old_status}, new)
    return sign_off


def reopen(session: Session, case: Case, user: str) -> Case:
    """A new version of the signed ``case`` (its latest), to be reviewed again."""
    acting = _acting(session, case, user)
    if case.status != "signed":
        raise CaseError(f"case {case.case_id!r} v{case.version} is not signed: edit it as it is")
    latest = session.scalar(select(func.max(Case.version)).where(Case.case_id == case.case_id))
    if latest != case.version:
        raise CaseError(f"case {case.case_id!r} has a newer version ({latest}): re-open that one")
    copy = Case(
        case_id=case.case_id,
        version=case.version + 1,
        parent_id=case.id,
        status="in_review",
        lab=case.lab,
        **{k: getattr(case, k) for k in ("source", "detector", "classifier", "uncertain_below")},
        class_names=list(case.class_names),
        settings=dict(case.settings),
    )
    for field in case.fields:
        copy.fields.append(_field_copy(field))
    session.add(copy)
    session.flush()
    new = {"version": copy.version, "parent_version": case.version}
    record(session, acting.name, "reopen", "case", copy.id, copy, {"version": case.version}, new)
    return copy


def _field_copy(field: Field) -> Field:
    keep = ("name", "image_sha256", "image_suffix", "source_image", "height", "width")
    copy = Field(**{k: getattr(field, k) for k in keep}, flags=list(field.flags))
    cell_keys = (
        *("x0", "y0", "x1", "y1", "det_score", "det_class", "model_class", "model_prob"),
        *("reviewed_class", "deleted", "added", "reviewed_by", "reviewed_at"),
    )
    for cell in field.cells:
        probs = None if cell.probs is None else list(cell.probs)
        copy.cells.append(Cell(**{k: getattr(cell, k) for k in cell_keys}, probs=probs))
    return copy
