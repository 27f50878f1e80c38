"""The routers together: :data:`api_router` under ``/api/v1``, the health check at the root."""

from __future__ import annotations

from fastapi import APIRouter

from bmc_detectron.serve.api.routes import analyze, model, reports

api_router = APIRouter()
api_router.include_router(model.router)
api_router.include_router(analyze.router)
api_router.include_router(reports.router)
