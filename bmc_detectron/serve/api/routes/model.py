"""``GET /api/v1/model``: the models, their classes and colours, the limits."""

from __future__ import annotations

from typing import Any, Dict

from fastapi import APIRouter

from bmc_detectron.serve.api.deps import ModelPayloadDep

router = APIRouter()


@router.get("/model", summary="The models, their classes and colours, the limits")
async def model(payload: ModelPayloadDep) -> Dict[str, Any]:
    return payload
