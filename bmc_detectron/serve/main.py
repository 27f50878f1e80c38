"""The lab web app: :func:`create_app` (FastAPI) around a cell counter.

    app = create_app(CellCounter.from_configs(...))          # or build_onnx_counter(...)
    uvicorn.run(app, host="127.0.0.1", port=8000)            # python -m bmc_detectron.tools.serve

Routes (:mod:`bmc_detectron.serve.api.routes`, one module per resource): ``GET /`` the page,
``POST /api/v1/analyze`` (multipart images -> cells), ``GET /api/v1/model``, ``POST
/api/v1/summary`` and ``POST /api/v1/cells.csv`` (the case report of the visible cells),
``GET /healthz``, ``GET /docs`` (OpenAPI, served offline). Each app keeps its counter, settings
and gate on ``app.state``; the routes get them through :mod:`bmc_detectron.serve.api.deps`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.scale_plan import ScaleSetup
from bmc_detectron.serve.api.main import api_router
from bmc_detectron.serve.api.routes import health, pages
from bmc_detectron.serve.auth import AuthSettings, Sessions
from bmc_detectron.serve.core.config import API_V1_STR, ServeSettings
from bmc_detectron.serve.errors import ApiError, install_error_handlers
from bmc_detectron.serve.gate import InferenceGate
from bmc_detectron.serve.middleware import RequestGuard
from bmc_detectron.serve.model_info import describe_counter, model_payload

logger = logging.getLogger(__name__)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    error = ApiError(500, "internal_error", "the server failed on this request (see its log)")
    return JSONResponse(error.body(), status_code=500)


def _add_case_routes(
    app: FastAPI, settings: ServeSettings, cases: Any, auth: Optional[AuthSettings]
) -> None:
    """The case database's routes (they need the ``cases`` extra, imported only here); by
    default the session key lies in the key file beside the database
    (:func:`~.case_setup.secret_file`)."""
    from bmc_detectron.cases.logins import LoginLimit
    from bmc_detectron.serve.api.routes import auth as auth_routes
    from bmc_detectron.serve.api.routes import cases as case_routes
    from bmc_detectron.serve.api.routes import review
    from bmc_detectron.serve.case_setup import secret_file
    from bmc_detectron.serve.errors import install_case_error_handler

    if auth is None:
        auth = AuthSettings(secret_file=secret_file(cases.url, settings.secret_file))
    app.state.auth = auth
    app.state.sessions = Sessions(auth)
    app.state.login_limit = LoginLimit(
        settings.login_max_failures, settings.login_window_s, auth.clock
    )  # kept in the database: shared by every server on it, kept over a restart
    install_case_error_handler(app)
    for module in (auth_routes, case_routes, review):
        app.include_router(module.router, prefix=API_V1_STR)


def create_app(
    counter: CellCounter,
    model_info: Optional[Dict[str, Any]] = None,
    settings: Optional[ServeSettings] = None,
    scale: Optional[ScaleSetup] = None,
    cases: Optional[Any] = None,
    auth: Optional[AuthSettings] = None,
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
        cases: a :class:`~bmc_detectron.cases.db.CaseDB`: the page opens on its case list and
            reviews and signs cases (routes :mod:`.api.routes.cases`, ``review``, ``auth``);
            None: the count page alone, no login.
        auth: how users log in to the case pages (default: :class:`~.auth.AuthSettings`, a
            login whose session key lies in the key file beside the database, or
            ``settings.secret_file``: sessions outlive a restart).
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
    app.state.model_payload = model_payload(counter, info, settings)
    install_error_handlers(app)
    app.add_exception_handler(Exception, _internal_error)
    pages.add_pages(app, cases=cases is not None)
    app.state.started = time.time()
    app.include_router(health.router)
    app.include_router(api_router, prefix=API_V1_STR)
    app.state.cases = cases
    if cases is not None:
        _add_case_routes(app, settings, cases, auth)
    limits = {f"{API_V1_STR}/analyze": settings.max_request_bytes}
    limits.update({f"{API_V1_STR}/cases": settings.max_request_bytes})
    limits.update({f"{API_V1_STR}/summary": settings.max_json_bytes})
    limits.update({f"{API_V1_STR}/cells.csv": settings.max_json_bytes})
    app.add_middleware(RequestGuard, body_limits=limits)
    if "*" not in settings.allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    return app
