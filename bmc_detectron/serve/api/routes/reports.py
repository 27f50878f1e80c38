"""The case report of the cells the page shows, made by :mod:`bmc_detectron.pipeline.report`:
``POST /api/v1/summary`` (summary.json) and ``POST /api/v1/cells.csv``."""

from __future__ import annotations

from typing import Any, Dict

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.report import build_summary, cells_csv
from bmc_detectron.serve.analysis import case_records
from bmc_detectron.serve.api.deps import CounterDep, ModelPayloadDep, SettingsDep
from bmc_detectron.serve.core.config import ServeSettings
from bmc_detectron.serve.schemas import SummaryRequest

router = APIRouter()


def _records_and_summary(
    req: SummaryRequest, counter: CellCounter, settings: ServeSettings, payload: Dict[str, Any]
) -> tuple:
    names = payload["class_names"]
    records = case_records(req, names, payload["fingerprint"])
    below = settings.uncertain_below if req.uncertain_below is None else req.uncertain_below
    view = {"case": req.case, "min_score": req.min_score}
    view["excluded_classes"] = list(req.excluded_classes)
    summary = build_summary(
        records,
        [],
        names,
        uncertain_below=below,
        lineage=settings.lineage,
        settings={**counter.settings(), "fingerprint": payload["fingerprint"], "view": view},
    )
    return records, summary


@router.post("/summary", summary="The case's differential (summary.json)")
async def summary(
    req: SummaryRequest, counter: CounterDep, settings: SettingsDep, payload: ModelPayloadDep
) -> JSONResponse:
    """The count tool's ``summary.json`` of the cells the page shows: scoring at least
    ``min_score``, of classes not in ``excluded_classes``."""
    return JSONResponse(_records_and_summary(req, counter, settings, payload)[1])


@router.post("/cells.csv", summary="One row per visible cell (cells.csv)")
async def cells(
    req: SummaryRequest, counter: CounterDep, settings: SettingsDep, payload: ModelPayloadDep
) -> Response:
    records, report = _records_and_summary(req, counter, settings, payload)
    text = cells_csv(records, report["class_names"], report["uncertain_below"])
    return Response(text, media_type="text/csv; charset=utf-8")
