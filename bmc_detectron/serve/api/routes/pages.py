"""The page: ``GET /`` (templates + static CSS/JS, no build step, nothing from elsewhere) and
``GET /docs`` (the OpenAPI page, served offline when ``fastapi-offline`` is installed)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from bmc_detectron.serve.auth import ensure_csrf_cookie
from bmc_detectron.serve.core.config import API_V1_STR

logger = logging.getLogger(__name__)

SERVE = Path(__file__).resolve().parents[2]
STATIC = SERVE / "static"
templates = Jinja2Templates(directory=str(SERVE / "templates"))
docs_router = APIRouter()


def asset_version() -> str:
    """A short hash of the static files: their URLs change when they do (no stale cache)."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
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


def render(request: Request, template: str, **context: Any) -> HTMLResponse:
    """A page from ``templates/``; with a case database, the browser gets its CSRF cookie."""
    context = {"version": request.app.state.asset_version, "api": API_V1_STR, **context}
    context.setdefault("cases", getattr(request.app.state, "cases", None) is not None)
    response = templates.TemplateResponse(request, template, context)
    auth = getattr(request.app.state, "auth", None)
    if auth is not None:
        ensure_csrf_cookie(response, request, auth)
    return response


async def index(request: Request) -> HTMLResponse:
    """The count page."""
    return render(request, "index.html")


async def case_list(request: Request) -> HTMLResponse:
    """The case list (with a case database)."""
    return render(request, "cases.html")


async def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html")


async def review_page(request: Request, case_id: str) -> HTMLResponse:
    """The review screen of a case (its data comes from the API)."""
    return render(request, "review.html", case_id=case_id)


@docs_router.get("/docs", include_in_schema=False)
async def swagger(request: Request) -> HTMLResponse:
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - API",
        swagger_js_url="/static-docs/swagger-ui-bundle.js",
        swagger_css_url="/static-docs/swagger-ui.css",
        swagger_favicon_url="/static-docs/favicon.png",
    )


def add_pages(app: FastAPI, cases: bool = False) -> None:
    """Mount the static files and add the pages and, with its assets at hand, the docs page.

    ``cases``: ``/`` is the case list, the count page moves to ``/count``, plus ``/login`` and
    ``/review/{case_id}``."""
    app.state.asset_version = asset_version()
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    router = APIRouter()
    page: dict = {"response_class": HTMLResponse, "include_in_schema": False}
    if cases:
        router.add_api_route("/", case_list, **page)
        router.add_api_route("/count", index, **page)
        router.add_api_route("/login", login_page, **page)
        router.add_api_route("/review/{case_id}", review_page, **page)
    else:
        router.add_api_route("/", index, **page)
    app.include_router(router)
    docs = _docs_assets()
    if docs is None:
        logger.warning("fastapi-offline is not installed: no /docs page (schema: /openapi.json)")
        return
    app.mount("/static-docs", StaticFiles(directory=str(docs)), name="static-docs")
    app.include_router(docs_router)
