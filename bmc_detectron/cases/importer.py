"""A finished count's report folder (:mod:`bmc_detectron.pipeline.run`) imported as a case.

What is read: ``summary.json`` (the classes, the uncertainty threshold, the models and the
counted fields) and ``cells/<field>.json`` of every counted field (its cells, exactly as the
count saved them). Each field's image is read from where the count found it, checked against the
SHA-256 the count recorded (a relative path is also looked for under the report folder's parents
and a given ``inputs_root``), and stored once (:mod:`.store`). Anything missing or corrupt is a
:class:`~.errors.ReportError` naming the file; nothing is written then.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from bmc_detectron.cases.audit import record
from bmc_detectron.cases.errors import CaseError, ReportError
from bmc_detectron.cases.labs import DEFAULT_LAB, check_lab
from bmc_detectron.cases.models import Case, Cell, Field
from bmc_detectron.cases.store import ImageStore
from bmc_detectron.pipeline.report import SUMMARY_FORMAT, FieldRecord
from bmc_detectron.pipeline.run_io import RESULTS_DIR, SUMMARY_FILE

CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_case_id(case_id: str) -> str:
    """``case_id`` if it is a valid case id (letters, digits, ``. _ -``; up to 64), else error."""
    if not CASE_ID.fullmatch(case_id):
        raise CaseError(
            f"case id {case_id!r}: use letters, digits and . _ - only (up to 64, no leading "
            "dot or dash); give one with --case-id"
        )
    return case_id


def read_summary(report: Path) -> Dict[str, Any]:
    """The report's ``summary.json``, checked for what an import needs."""
    if not report.is_dir():
        raise ReportError(f"{report}: no such report folder")
    path = report / SUMMARY_FILE
    if not path.is_file():
        raise ReportError(f"{path}: missing (not a finished count report)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: corrupt summary.json ({e})") from None
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        raise ReportError(f"{path}: not a count summary (format is not {SUMMARY_FORMAT})")
    names = summary.get("class_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ReportError(f"{path}: corrupt summary.json (class_names is not a list of names)")
    fields = summary.get("fields")
    if not isinstance(fields, list) or not all(isinstance(f, dict) and "name" in f for f in fields):
        raise ReportError(f"{path}: corrupt summary.json (fields is not a list of fields)")
    return summary


def read_field(report: Path, name: str) -> FieldRecord:
    """The saved cells of field ``name`` (``cells/<name>.json``)."""
    path = report / RESULTS_DIR / f"{name}.json"
    try:
        return FieldRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ReportError(f"{path}: missing (the summary lists field {name!r})") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ReportError(f"{path}: corrupt field record ({type(e).__name__}: {e})") from None


def _image_bytes(rec: FieldRecord, report: Path, inputs_root: Optional[Path]) -> bytes:
    """The field's image bytes: its path as the count recorded it; a relative one (the count ran
    elsewhere) is also looked for under ``inputs_root`` and the report folder's parents. Only a
    file with the SHA-256 the count recorded is taken."""
    path = Path(rec.image)
    candidates = [path]
    if inputs_root is not None:
        candidates += [Path(inputs_root) / path, Path(inputs_root) / path.name]
    if not path.is_absolute():
        candidates += [parent / path for parent in report.resolve().parents]
    changed = None
    for candidate in candidates:
        try:
            data = candidate.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() == rec.image_sha256:
            return data
        changed = changed or candidate
    if changed is not None:
        raise ReportError(f"{report}: field {rec.name!r}: {changed} changed since the count")
    raise ReportError(
        f"{report}: field {rec.name!r}: its image {path} is not there (the count's inputs must "
        "still be there to import the case; --inputs-root DIR says where they are now)"
    )


def _model_name(source: Any) -> str:
    if not isinstance(source, dict):
        return ""
    return str(source.get("weights") or source.get("config") or "")


def _cells(rec: FieldRecord) -> List[Cell]:
    return [
        Cell(
            x0=c.box[0],
            y0=c.box[1],
            x1=c.box[2],
            y1=c.box[3],
            det_score=c.det_score,
            det_class=c.det_class,
            model_class=c.label,
            model_prob=c.prob,
            probs=c.probs,
            deleted=False,
            added=False,
        )
        for c in rec.cells
    ]


def add_case(
    session: Session,
    store: ImageStore,
    case_id: str,
    records: Sequence[FieldRecord],
    images: Sequence[bytes],
    summary: Dict[str, Any],
    source: str,
    actor: str,
    lab: str = DEFAULT_LAB,
) -> Case:
    """A new case (status counted, version 1) from counted fields: the one way a count becomes a
    case (a report folder, :func:`import_report`, or the web page's count).

    ``records`` and ``images`` (each field's image bytes, in order); ``summary``: the count's
    ``class_names``, ``uncertain_below`` and ``settings`` (its ``sources`` name the models);
    ``source``: where the count came from; ``lab``: the lab that owns the case (:mod:`.labs`).
    A case id already in the database is refused.
    """
    case_id, lab = check_case_id(case_id), check_lab(lab)
    if session.scalar(select(Case.id).where(Case.case_id == case_id)) is not None:
        raise CaseError(f"case {case_id!r} is in the database already")
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    sources = settings.get("sources") or {}
    case = Case(
        case_id=case_id,
        version=1,
        status="counted",
        lab=lab,
        source=source,
        detector=_model_name(sources.get("detector")),
        classifier=_model_name(sources.get("classifier")),
        class_names=list(summary["class_names"]),
        uncertain_below=float(summary.get("uncertain_below", 0.5)),
        settings=settings,
    )
    for rec, data in zip(records, images):
        suffix = Path(rec.image).suffix.lower() or ".png"
        sha = store.put(data, suffix)
        field = Field(
            name=rec.name,
            image_sha256=sha,
            image_suffix=suffix,
            source_image=rec.image,
            height=rec.height,
            width=rec.width,
            flags=list(rec.flags),
            cells=_cells(rec),
        )
        case.fields.append(field)
    session.add(case)
    session.flush()
    cells = sum(len(f.cells) for f in case.fields)
    new = {"case_id": case_id, "source": source, "fields": len(records), "cells": cells}
    new["lab"] = lab
    record(session, actor, "import", "case", case.id, case, new=new)
    return case


def import_report(
    session: Session,
    store: ImageStore,
    report: Path,
    actor: str,
    case_id: Optional[str] = None,
    inputs_root: Optional[Path] = None,
    lab: str = DEFAULT_LAB,
) -> Case:
    """Import the count in ``report`` as a new case (status counted, version 1;
    :func:`add_case`).

    ``case_id``: default the report folder's name; a case id already in the database is refused.
    ``actor``: who imports it (written to the audit log); ``inputs_root``: where the count's
    input images are now, when they moved (see :func:`_image_bytes`); ``lab``: the lab that
    owns the case.
    """
    report = Path(report)
    summary = read_summary(report)
    case_id, lab = check_case_id(case_id or report.resolve().name), check_lab(lab)
    if session.scalar(select(Case.id).where(Case.case_id == case_id)) is not None:
        raise CaseError(f"case {case_id!r} is in the database already")
    records = [read_field(report, str(f["name"])) for f in summary["fields"]]
    images = [_image_bytes(rec, report, inputs_root) for rec in records]
    source = str(report.resolve())
    return add_case(session, store, case_id, records, images, summary, source, actor, lab)
