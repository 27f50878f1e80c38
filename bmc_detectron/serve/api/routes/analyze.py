"""``POST /api/v1/analyze``: multipart images of one case -> their cells."""

from __future__ import annotations

import math
import time
from typing import Dict, Tuple

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.run import run_fingerprint
from bmc_detectron.pipeline.scale_plan import (
    ScaleOptions,
    ScalePlan,
    ScaleSetup,
    plan_scale,
    with_options,
)
from bmc_detectron.serve.analysis import analyze_uploads, scale_summary
from bmc_detectron.serve.api.deps import (
    CounterDep,
    GateDep,
    ModelPayloadDep,
    ScaleDep,
    SettingsDep,
)
from bmc_detectron.serve.errors import ApiError
from bmc_detectron.serve.images import probe_image
from bmc_detectron.serve.schemas import ERROR_RESPONSES, AnalyzeResponse
from bmc_detectron.serve.uploads import read_multipart

router = APIRouter()

ANALYZE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more images of one case (PNG, JPEG, BMP, "
                            "TIFF, WEBP); checked by decoding, not by name",
                        },
                        "preview": {
                            "type": "boolean",
                            "description": "also return a JPEG preview of each field",
                        },
                        "microns_per_pixel": {
                            "type": "number",
                            "description": "the images' pixel size: fields are resized to the "
                            "model's scale before detection (boxes in the images' pixels)",
                        },
                    },
                }
            }
        },
    }
}


def _request_scale(
    form_fields: Dict[str, str], counter: CellCounter, base: ScaleSetup
) -> Tuple[ScaleSetup, ScalePlan]:
    """The request's scale setup and plan from its ``microns_per_pixel`` form field."""
    raw = form_fields.get("microns_per_pixel", "").strip()
    tolerance = base.options.detector_scale_tolerance
    options = ScaleOptions(detector_scale_tolerance=tolerance)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            message = f"microns_per_pixel {raw[:40]!r} is not a positive number"
            raise ApiError(400, "bad_scale", message)
        options = ScaleOptions(microns_per_pixel=value, detector_scale_tolerance=tolerance)
    try:
        setup = with_options(base, options)
    except ValueError as e:
        raise ApiError(422, "scale_unknown", str(e)) from None
    return setup, plan_scale(setup, {}, counter.detector)


@router.post(
    "/analyze",
    summary="Count the cells of one or more images of a case",
    response_model=AnalyzeResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=ANALYZE_BODY,
)
async def analyze(
    request: Request,
    counter: CounterDep,
    settings: SettingsDep,
    gate: GateDep,
    scale: ScaleDep,
    payload: ModelPayloadDep,
) -> JSONResponse:
    """Every file is checked (size, decodable image, pixels) before any is analysed: one bad
    file refuses the request, naming it. Cells come back in field pixels."""
    start = time.perf_counter()
    async with gate.admit():
        form = await read_multipart(
            request,
            max_files=settings.max_files,
            max_file_bytes=settings.max_file_bytes,
            max_request_bytes=settings.max_request_bytes,
        )
        read_s = time.perf_counter() - start
        if not form.files:
            raise ApiError(400, "no_files", "no image in the request (form field 'files')")
        probes = [probe_image(upload, settings.max_pixels) for upload in form.files]
        preview = form.fields.get("preview", "").strip().lower() in ("1", "true", "yes", "on")
        setup, plan = _request_scale(form.fields, counter, scale)
        run_start = time.perf_counter()
        fields, waited = await gate.run(
            analyze_uploads, counter, form.files, probes, settings, preview, plan, setup
        )
    timing = {
        "read_s": round(read_s, 4),
        "queue_s": round(waited, 4),
        "analyze_s": round(time.perf_counter() - run_start - waited, 4),
        "total_s": round(time.perf_counter() - start, 4),
    }
    summary = scale_summary(counter, fields, plan, setup)
    body = {"fields": fields, "class_names": payload["class_names"], "timing": timing}
    fingerprint = payload["fingerprint"]
    if not plan.prep.identity:
        fingerprint = run_fingerprint({**counter.settings(), "field_prep": plan.prep.settings()})
    return JSONResponse({**body, "fingerprint": fingerprint, "scale": summary})
