"""Reading cases: the case list (search by id, date, status), one case exactly as stored, and
the differential of the model's classes against the reviewer's."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from bmc_detectron.cases.errors import CaseError, NotFoundError
from bmc_detectron.cases.labs import check_case_lab
from bmc_detectron.cases.models import STATUSES, Case, Cell, Field, storable
from bmc_detectron.data.classes import OTHER
from bmc_detectron.reporting.tables import markdown_table
from bmc_detectron.structures.differential import Lineage, differential
from bmc_detectron.utils.io import json_safe


def get_case(
    session: Session, case_id: str, version: Optional[int] = None, lab: Optional[str] = None
) -> Case:
    """The case's ``version`` (default its latest); :class:`NotFoundError` names what is
    missing. ``lab``: the caller's lab scope (:func:`~.labs.lab_scope`; None: every lab); a case
    of another lab is refused (:class:`~.errors.ForbiddenError`)."""
    query = select(Case).where(Case.case_id == case_id)
    query = query.options(selectinload(Case.fields).selectinload(Field.cells))
    if not storable(case_id):
        case = None
    elif version is None:
        case = session.scalar(query.order_by(Case.version.desc()).limit(1))
    else:
        case = session.scalar(query.where(Case.version == version))
    if case is None:
        what = f"case {case_id!r}" + ("" if version is None else f" version {version}")
        raise NotFoundError(f"{what} is not in the case database")
    check_case_lab(case.case_id, case.lab, lab)
    return case


def find_cases(
    session: Session,
    search: str = "",
    status: Optional[str] = None,
    since: Optional[dt.date] = None,
    until: Optional[dt.date] = None,
    all_versions: bool = False,
    lab: Optional[str] = None,
) -> List[Case]:
    """Cases whose id contains ``search`` (case-insensitive, taken literally), of ``status``,
    created from ``since`` to ``until`` (dates, both included), of lab ``lab`` (None: every
    lab); newest first. Only each case's latest version unless ``all_versions``."""
    if status is not None and status not in STATUSES:
        raise CaseError(f"status {status!r}: one of {', '.join(STATUSES)}")
    if not storable(search):
        return []
    query = select(Case)
    if not all_versions:
        latest = select(Case.case_id, func.max(Case.version).label("v")).group_by(Case.case_id)
        latest = latest.subquery()
        query = query.join(
            latest, (Case.case_id == latest.c.case_id) & (Case.version == latest.c.v)
        )
    if search:
        query = query.where(func.lower(Case.case_id).contains(search.lower(), autoescape=True))
    if status is not None:
        query = query.where(Case.status == status)
    if lab is not None:
        query = query.where(Case.lab == lab)
    if since is not None:
        query = query.where(Case.created >= dt.datetime.combine(since, dt.time()))
    if until is not None:
        end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time())
        query = query.where(Case.created < end)
    query = query.order_by(Case.created.desc(), Case.case_id, Case.version.desc())
    return list(session.scalars(query))


def cell_json(cell: Cell) -> Dict[str, Any]:
    """A cell as stored (the reviewer's name, not their id)."""
    return {
        "id": cell.id,
        "box": [cell.x0, cell.y0, cell.x1, cell.y1],
        "det_score": cell.det_score,
        "det_class": cell.det_class,
        "model_class": cell.model_class,
        "model_prob": cell.model_prob,
        "probs": cell.probs,
        "reviewed_class": cell.reviewed_class,
        "deleted": cell.deleted,
        "added": cell.added,
        "reviewed_by": None if cell.reviewer is None else cell.reviewer.name,
        "reviewed_at": None if cell.reviewed_at is None else cell.reviewed_at.isoformat(),
        "version": cell.version,
    }


def case_json(case: Case) -> Dict[str, Any]:
    """The whole case as stored: its record, fields and cells, and its sign-offs."""
    return {
        "case_id": case.case_id,
        "version": case.version,
        "parent_version": None if case.parent_id is None else case.version - 1,
        "status": case.status,
        "lab": case.lab,
        "created": case.created.isoformat(),
        "source": case.source,
        "detector": case.detector,
        "classifier": case.classifier,
        "class_names": list(case.class_names),
        "uncertain_below": case.uncertain_below,
        "fields": [
            {
                "name": f.name,
                "image_sha256": f.image_sha256,
                "image_suffix": f.image_suffix,
                "source_image": f.source_image,
                "height": f.height,
                "width": f.width,
                "flags": list(f.flags),
                "cells": [cell_json(c) for c in f.cells],
            }
            for f in case.fields
        ],
        "sign_offs": [
            {"user": s.user.name, "at": s.at.isoformat(), "counts": s.counts}
            for s in case.sign_offs
        ],
    }


def _model_uncertain(cell: Cell, below: float) -> bool:
    prob = 1.0 if cell.model_prob is None else cell.model_prob
    return cell.model_class != OTHER.abbr and prob < below


def case_differential(case: Case, lineage: Optional[Lineage] = None) -> Dict[str, Dict[str, Any]]:
    """``{"model": ..., "reviewed": ...}``, each :func:`~bmc_detectron.structures.differential.
    differential` of the case's cells: the model's classes of every cell it found, and the
    final classes (reviewed, else the model's) of the cells kept. A reviewed cell is never
    uncertain; an unreviewed one is as the model left it."""
    lineage = lineage or Lineage()
    cells = [c for f in case.fields for c in f.cells]
    found = [c for c in cells if not c.added]
    model = differential(
        [c.model_class or "" for c in found],
        [_model_uncertain(c, case.uncertain_below) for c in found],
        case.class_names,
        lineage,
        [c.model_class == OTHER.abbr for c in found],
    )
    kept = [c for c in cells if not c.deleted]
    reviewed = differential(
        [c.final_class or "" for c in kept],
        [c.reviewed_class is None and _model_uncertain(c, case.uncertain_below) for c in kept],
        case.class_names,
        lineage,
        [c.final_class == OTHER.abbr for c in kept],
    )
    return {"model": json_safe(model), "reviewed": json_safe(reviewed)}


def counts_snapshot(diff: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The counts a sign-off keeps: per class, counted, uncertain, other, M:E, model and
    reviewed side by side."""
    out: Dict[str, Any] = {}
    for key, d in diff.items():
        out[key] = {
            "counted": d["counted"],
            "uncertain": d["uncertain"]["total"],
            "other": d["other"],
            "classes": {row["class"]: row["count"] for row in d["classes"]},
            "me_ratio": d["me"]["ratio"],
        }
    return out


def class_choices(case: Case) -> Sequence[str]:
    """The classes a reviewer may give a cell of this case: its model's, and Other."""
    return [*case.class_names, *([] if OTHER.abbr in case.class_names else [OTHER.abbr])]


def case_list_text(cases: Sequence[Case]) -> str:
    """A markdown table of cases (newest first as given) and their number."""
    rows = [
        [c.case_id, c.version, c.lab, c.status, c.created.strftime("%Y-%m-%d %H:%M"), c.source]
        for c in cases
    ]
    header = ["case", "version", "lab", "status", "created (UTC)", "imported from"]
    return f"{markdown_table(header, rows)}\n{len(rows)} case(s)"


def case_overview_text(case: Case) -> str:
    """One case in words: its state, fields and cells, model and reviewed counts by class, and
    its sign-offs."""
    diff = case_differential(case)
    cells = [c for f in case.fields for c in f.cells]
    head = (
        f"case {case.case_id} version {case.version} (lab {case.lab}): {case.status}, "
        f"{len(case.fields)} field(s), {len(cells)} cell(s) "
        f"({sum(c.reviewed_by is not None for c in cells)} reviewed)"
    )
    model = {r["class"]: r["count"] for r in diff["model"]["classes"]}
    rows = [[r["class"], model[r["class"]], r["count"]] for r in diff["reviewed"]["classes"]]
    rows.append(["counted", diff["model"]["counted"], diff["reviewed"]["counted"]])
    signed = [f"signed by {o.user.name} at {o.at:%Y-%m-%d %H:%M} UTC" for o in case.sign_offs]
    return "\n".join([head, markdown_table(["class", "model", "reviewed"], rows), *signed])
