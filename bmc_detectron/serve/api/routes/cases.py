"""The case list and one case: ``GET /api/v1/cases`` (search), ``POST /api/v1/cases`` (count
images in the page and keep them as a case), ``GET /api/v1/cases/{id}`` (the case as stored, its
differential), a field's image, the report (HTML, CSV, JSON), ``GET /api/v1/cases/{id}/coco.json``
(its latest signed version's reviewed cells as COCO). Every route needs a logged-in user; the POST
the CSRF header. A reviewer sees only their lab's cases (:mod:`bmc_detectron.cases.labs`): the
list leaves the others out, any route of another lab's case answers 403 (``forbidden``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from bmc_detectron.cases.errors import ForbiddenError
from bmc_detectron.cases.export import export_coco
from bmc_detectron.cases.importer import add_case
from bmc_detectron.cases.labs import DEFAULT_LAB, listed_lab
from bmc_detectron.cases.models import Case
from bmc_detectron.cases.queries import (
    case_differential,
    case_json,
    class_choices,
    find_cases,
    get_case,
)
from bmc_detectron.serve.analysis import field_records
from bmc_detectron.serve.api.case_deps import CaseDBDep, UserDep, check_csrf
from bmc_detectron.serve.api.deps import (
    CounterDep,
    GateDep,
    ModelPayloadDep,
    ScaleDep,
    SettingsDep,
)
from bmc_detectron.serve.api.routes.analyze import analyze_request
from bmc_detectron.serve.auth import Principal
from bmc_detectron.serve.case_report import report_csv, report_json
from bmc_detectron.serve.errors import ApiError

router = APIRouter(dependencies=[Depends(check_csrf)])


def _date(text: Optional[str], name: str) -> Optional[dt.date]:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ApiError(
            422, "bad_date", f"{name} {text[:40]!r} is not a date (YYYY-MM-DD)"
        ) from None


def case_view(case: Case, request: Request) -> Dict[str, Any]:
    """A case as the review screen reads it: as stored, its differential, the classes it may be
    given, whether it can be edited."""
    lineage = request.app.state.settings.lineage
    return {
        **case_json(case),
        "differential": case_differential(case, lineage),
        "class_choices": list(class_choices(case)),
        "editable": case.status != "signed",
    }


@router.get("/cases", summary="The case list: search by id, status, dates, lab")
def list_cases(
    db: CaseDBDep,
    user: UserDep,
    search: str = "",
    status: Optional[str] = None,
    since: Optional[str] = None,
    until: Optional[str] = None,
    lab: str = "",
) -> Dict[str, Any]:
    """``lab``: only that lab's cases (an admin; a reviewer sees their lab's anyway, and is
    refused another one: 403)."""
    if len(search) > 64:
        raise ApiError(422, "bad_search", "search: at most 64 characters")
    with db.session() as session:
        when = _date(since, "since"), _date(until, "until")
        shown = listed_lab(user.scope, lab)
        cases = find_cases(session, search, status or None, *when, lab=shown)
        rows = [
            {
                "case_id": c.case_id,
                "version": c.version,
                "lab": c.lab,
                "status": c.status,
                "created": c.created.isoformat(timespec="seconds") + "Z",
            }
            for c in cases
        ]
    return {"cases": rows}


def upload_lab(user: Principal, asked: str) -> str:
    """The lab of a case counted in the page: the uploader's (a reviewer may name no other); an
    admin may name one, else theirs, else the default lab."""
    if user.scope is not None:
        if asked and asked != user.scope:
            raise ForbiddenError(f"you may add cases to your lab {user.scope!r} only")
        return user.scope
    return asked or user.lab or DEFAULT_LAB


@router.post("/cases", summary="Count images and keep them as a new case")
async def count_case(
    request: Request,
    db: CaseDBDep,
    user: UserDep,
    counter: CounterDep,
    settings: SettingsDep,
    gate: GateDep,
    scale: ScaleDep,
    payload: ModelPayloadDep,
) -> JSONResponse:
    """A multipart form: ``case_id``, the images (``files``) and, for an admin, the ``lab``
    (:func:`upload_lab`), counted as ``POST /api/v1/analyze`` counts them, then stored (images
    by SHA-256, every cell)."""
    form, body = await analyze_request(request, counter, settings, gate, scale, payload)
    case_id = form.fields.get("case_id", "").strip()
    lab = upload_lab(user, form.fields.get("lab", "").strip())
    records = field_records(body["fields"], body["fingerprint"])
    summary = {
        "class_names": body["class_names"],
        "uncertain_below": settings.uncertain_below,
        "settings": {**counter.settings(), "fingerprint": body["fingerprint"]},
    }
    images = [upload.data for upload in form.files]

    def store() -> Dict[str, Any]:
        with db.session() as session:
            case = add_case(
                session, db.store, case_id, records, images, summary, "web page", user.name, lab
            )
            out = {"case_id": case.case_id, "version": case.version, "fields": len(records)}
            return {**out, "lab": case.lab}

    return JSONResponse(await run_in_threadpool(store), status_code=201)


@router.get("/cases/{case_id}", summary="One case as stored (default its latest version)")
def one_case(
    case_id: str, request: Request, db: CaseDBDep, user: UserDep, version: Optional[int] = None
) -> Dict[str, Any]:
    with db.session() as session:
        return case_view(get_case(session, case_id, version, user.scope), request)


@router.get("/cases/{case_id}/versions/{version}/fields/{field}/image", summary="A field's image")
def field_image(case_id: str, version: int, field: str, db: CaseDBDep, user: UserDep) -> Response:
    with db.session() as session:
        case = get_case(session, case_id, version, user.scope)
        found = next((f for f in case.fields if f.name == field), None)
        if found is None:
            raise ApiError(404, "not_found", f"field {field[:80]!r} is not in case {case_id!r}")
        path = db.store.path(found.image_sha256, found.image_suffix)
    if not path.is_file():
        raise ApiError(404, "not_found", f"the image of field {field[:80]!r} is not in the store")
    return FileResponse(path, headers={"cache-control": "private, max-age=3600"})


@router.get(
    "/cases/{case_id}/versions/{version}/report.{kind}",
    summary="The report: model and reviewer counts side by side, who signed (html, csv, json)",
)
def report(
    case_id: str, version: int, kind: str, request: Request, db: CaseDBDep, user: UserDep
) -> Response:
    if kind not in ("html", "csv", "json"):
        raise ApiError(404, "not_found", "report.html, report.csv or report.json")
    with db.session() as session:
        body = report_json(
            get_case(session, case_id, version, user.scope), request.app.state.settings.lineage
        )
    name = f"{body['case']}-v{body['version']}"
    if kind == "json":
        return JSONResponse(body)
    if kind == "csv":
        disposition = {"content-disposition": f'attachment; filename="{name}.csv"'}
        return Response(report_csv(body), media_type="text/csv; charset=utf-8", headers=disposition)
    from bmc_detectron.serve.api.routes.pages import render

    return render(request, "case_report.html", report=body)


@router.get("/cases/{case_id}/coco.json", summary="The latest signed version's cells as COCO")
def coco(case_id: str, db: CaseDBDep, user: UserDep) -> JSONResponse:
    """What ``bmc cases export-coco`` writes for this one case (``bmc merge-labels`` input)."""
    with db.session() as session:
        body = export_coco(session, db.store, [case_id], lab=user.scope)
    disposition = {"content-disposition": f'attachment; filename="{case_id}-coco.json"'}
    return JSONResponse(body, headers=disposition)
