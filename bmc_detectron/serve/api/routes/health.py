"""``GET /healthz``: liveness, and how busy the analyser is."""

from __future__ import annotations

import time
from typing import Any, Dict

from fastapi import APIRouter, Request

from bmc_detectron.serve.api.deps import GateDep

router = APIRouter()


@router.get("/healthz", summary="Liveness, and how busy the analyser is")
async def healthz(request: Request, gate: GateDep) -> Dict[str, Any]:
    uptime = round(time.time() - request.app.state.started, 1)
    return {"status": "ok", "uptime_s": uptime, **gate.status()}
