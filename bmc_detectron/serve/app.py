"""The lab web app: :func:`create_app` (FastAPI) around a cell counter.

    app = create_app(CellCounter.from_configs(...))          # or build_onnx_counter(...)
    uvicorn.run(app, host="127.0.0.1", port=8000)            # python -m bmc_detectron.tools.serve

Routes: ``GET /`` the page (templates + static CSS/JS, no build step, nothing from elsewhere),
``POST /api/v1/analyze`` (multipart images -> cells), ``GET /api/v1/model``, ``POST
/api/v1/summary`` and ``POST /api/v1/cells.csv`` (the case report of the visible cells, made by
:mod:`bmc_detectron.pipeline.report`), ``GET /healthz``, ``GET /docs`` (OpenAPI, served offline).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.report import build_summary, cells_csv
from bmc_detectron.pipeline.run import run_fingerprint
from bmc_detectron.pipeline.scale_plan import (
    ScaleOptions,
    ScalePlan,
    ScaleSetup,
    plan_scale,
    with_options,
)
from bmc_detectron.serve.analysis import analyze_uploads, case_records
from bmc_detectron.serve.errors import ApiError, install_error_handlers
from bmc_detectron.serve.gate import InferenceGate
from bmc_detectron.serve.images import probe_image
from bmc_detectron.serve.middleware import RequestGuard
from bmc_detectron.serve.model_info import class_table, describe_counter, lineage_notes
from bmc_detectron.serve.schemas import ERROR_RESPONSES, AnalyzeResponse, SummaryRequest
from bmc_detectron.serve.settings import ServeSettings
from bmc_detectron.serve.uploads import read_multipart

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
API = "/api/v1"
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


def _asset_version() -> str:
    """A short hash of the static files: their URLs change when they do (no stale cache)."""
    digest = hashlib.sha256()
    for path in sorted((HERE / "static").iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _docs_assets() -> Optional[Path]:
    """Swagger UI's files, shipped by the ``fastapi-offline`` package (None if missing)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _model_payload(
    counter: CellCounter, model_info: Dict[str, Any], settings: ServeSettings
) -> Dict[str, Any]:
    names = counter.class_names
    return {
        **model_info,
        "class_names": names,
        "classes": class_table(counter, settings.lineage),
        "lineage": lineage_notes(names, settings.lineage),
        "settings": {
            "default_threshold": settings.default_threshold,
            "min_score": counter.score_threshold,
            "uncertain_below": settings.uncertain_below,
            **settings.limits(),
        },
    }


def _add_pages(app: FastAPI, version: str) -> None:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        context = {"version": version, "api": API}
        return templates.TemplateResponse(request, "index.html", context)

    docs = _docs_assets()
    if docs is None:
        logger.warning("fastapi-offline is not installed: no /docs page (schema: /openapi.json)")
        return
    app.mount("/static-docs", StaticFiles(directory=str(docs)), name="static-docs")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="/static-docs/swagger-ui-bundle.js",
            swagger_css_url="/static-docs/swagger-ui.css",
            swagger_favicon_url="/static-docs/favicon.png",
        )


def _request_scale(
    form_fields: Dict[str, str], counter: CellCounter, base: ScaleSetup
) -> Tuple[ScaleSetup, ScalePlan]:
    """The request's scale setup and plan from its ``microns_per_pixel`` form field."""
    raw = form_fields.get("microns_per_pixel", "").strip()
    options = ScaleOptions()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            message = f"microns_per_pixel {raw[:40]!r} is not a positive number"
            raise ApiError(400, "bad_scale", message)
        options = ScaleOptions(microns_per_pixel=value)
    try:
        setup = with_options(base, options)
    except ValueError as e:
        raise ApiError(422, "scale_unknown", str(e)) from None
    return setup, plan_scale(setup, {}, counter.detector)


def _add_api(app: FastAPI, counter: CellCounter, settings: ServeSettings) -> None:
    gate: InferenceGate = app.state.gate
    started = time.time()

    @app.get("/healthz", summary="Liveness, and how busy the analyser is")
    async def healthz() -> Dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - started, 1), **gate.status()}

    @app.get(f"{API}/model", summary="The models, their classes and colours, the limits")
    async def model() -> Dict[str, Any]:
        return app.state.model_payload

    @app.post(
        f"{API}/analyze",
        summary="Count the cells of one or more images of a case",
        response_model=AnalyzeResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=ANALYZE_BODY,
    )
    async def analyze(request: Request) -> JSONResponse:
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
            setup, plan = _request_scale(form.fields, counter, app.state.scale)
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
        payload = app.state.model_payload
        body = {"fields": fields, "class_names": payload["class_names"], "timing": timing}
        fingerprint = payload["fingerprint"]
        if not plan.prep.identity:
            fingerprint = run_fingerprint(
                {**counter.settings(), "field_prep": plan.prep.settings()}
            )
        scale = {**plan.summary, "warnings": plan.warnings}
        return JSONResponse({**body, "fingerprint": fingerprint, "scale": scale})

    _add_report_routes(app, counter, settings)


def _add_report_routes(app: FastAPI, counter: CellCounter, settings: ServeSettings) -> None:
    def records_and_summary(req: SummaryRequest) -> tuple:
        payload = app.state.model_payload
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

    @app.post(f"{API}/summary", summary="The case's differential (summary.json)")
    async def summary(req: SummaryRequest) -> JSONResponse:
        """The count tool's ``summary.json`` of the cells the page shows: scoring at least
        ``min_score``, of classes not in ``excluded_classes``."""
        return JSONResponse(records_and_summary(req)[1])

    @app.post(f"{API}/cells.csv", summary="One row per visible cell (cells.csv)")
    async def cells(req: SummaryRequest) -> Response:
        records, summary = records_and_summary(req)
        text = cells_csv(records, summary["class_names"], summary["uncertain_below"])
        return Response(text, media_type="text/csv; charset=utf-8")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    error = ApiError(500, "internal_error", "the server failed on this request (see its log)")
    return JSONResponse(error.body(), status_code=500)


def create_app(
    counter: CellCounter,
    model_info: Optional[Dict[str, Any]] = None,
    settings: Optional[ServeSettings] = None,
    scale: Optional[ScaleSetup] = None,
) -> FastAPI:
    """The web app around ``counter``.

    Args:
        counter: counts a field's cells (PyTorch or ONNX Runtime models, or any stand-in).
        model_info: added to what ``GET /api/v1/model`` and the page's model panel tell about
            the models (:func:`~.model_info.describe_counter`; e.g. the model files).
        settings: limits and defaults (default: :class:`ServeSettings`).
        scale: the model's scale and training profile (:class:`~..pipeline.scale_plan.ScaleSetup`,
            options unused): an analyze request's ``microns_per_pixel`` needs the model's, and
            with a profile every field is checked against the training data.
    """
    from bmc_detectron import __version__

    settings = settings or ServeSettings()
    app = FastAPI(
        title="Bone-marrow cell counter",
        version=__version__,
        description="Detect and recognise the nucleated cells of marrow smear fields; the "
        "differential count of a case. Runs on this workstation: images are kept in memory "
        "for the request and never stored.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.counter = counter
    app.state.settings = settings
    app.state.gate = InferenceGate(settings.workers, settings.max_waiting)
    app.state.scale = scale or ScaleSetup()
    info = describe_counter(counter)
    model_scale = app.state.scale.model
    info["scale"] = None if model_scale is None else model_scale.to_json()
    info.update(model_info or {})
    app.state.model_payload = _model_payload(counter, info, settings)
    install_error_handlers(app)
    app.add_exception_handler(Exception, _internal_error)
    _add_pages(app, _asset_version())
    _add_api(app, counter, settings)
    limits = {f"{API}/analyze": settings.max_request_bytes}
    limits.update({f"{API}/summary": settings.max_json_bytes})
    limits.update({f"{API}/cells.csv": settings.max_json_bytes})
    app.add_middleware(RequestGuard, body_limits=limits)
    if "*" not in settings.allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    return app
