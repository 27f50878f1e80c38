"""``POST /api/v1/analyze``: multipart images of one case -> their cells."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, Dict, Tuple

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.run_io import run_fingerprint
from bmc_detectron.pipeline.scale_plan import ScaleSetup, with_options
from bmc_detectron.serve.analysis import analyze_case, scale_summary
from bmc_detectron.serve.api.deps import (
    CounterDep,
    GateDep,
    ModelPayloadDep,
    ScaleDep,
    SettingsDep,
)
from bmc_detectron.serve.core.config import ServeSettings
from bmc_detectron.serve.errors import ApiError
from bmc_detectron.serve.gate import InferenceGate
from bmc_detectron.serve.images import probe_image
from bmc_detectron.serve.schemas import ERROR_RESPONSES, AnalyzeResponse
from bmc_detectron.serve.uploads import Form, read_multipart

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
                        "auto_scale": {
                            "type": "boolean",
                            "description": "find the images' scale (their files' own pixel "
                            "size, the detector probe) when no microns_per_pixel is given; "
                            "default: on, unless the server runs with --no-auto-scale",
                        },
                    },
                }
            }
        },
    }
}


def _flag(form_fields: Dict[str, str], name: str, default: bool) -> bool:
    raw = form_fields.get(name, "").strip().lower()
    return default if not raw else raw in ("1", "true", "yes", "on")


def _request_scale(form_fields: Dict[str, str], base: ScaleSetup) -> ScaleSetup:
    """The request's scale setup: its ``microns_per_pixel`` and ``auto_scale`` form fields
    (``auto_scale`` defaults to the server's: on unless ``--no-auto-scale``), the server's other
    options."""
    raw = form_fields.get("microns_per_pixel", "").strip()
    auto = _flag(form_fields, "auto_scale", base.options.auto)
    options = replace(base.options, microns_per_pixel=None, auto=auto, stain=None)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            message = f"microns_per_pixel {raw[:40]!r} is not a positive number"
            raise ApiError(400, "bad_scale", message)
        options = replace(options, microns_per_pixel=value)
    try:
        return with_options(base, options)
    except ValueError as e:
        raise ApiError(422, "scale_unknown", str(e)) from None


async def analyze_request(
    request: Request,
    counter: CellCounter,
    settings: ServeSettings,
    gate: InferenceGate,
    scale: ScaleSetup,
    payload: Dict[str, Any],
) -> Tuple[Form, Dict[str, Any]]:
    """Read a multipart request's images and count them: the form and the analyze response's
    body (``POST /api/v1/analyze``; ``POST /api/v1/cases`` stores the same count as a case)."""
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
        preview = _flag(form.fields, "preview", False)
        setup = _request_scale(form.fields, scale)
        run_start = time.perf_counter()
        (plan, fields), waited = await gate.run(
            analyze_case, counter, form.files, probes, settings, preview, setup
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
    return form, {**body, "fingerprint": fingerprint, "scale": summary}


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
    _, body = await analyze_request(request, counter, settings, gate, scale, payload)
    return JSONResponse(body)
