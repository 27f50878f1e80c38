"""JSON errors: every refusal of the API is ``{"error": {"status", "code", "message", ...}}``.

``code`` is a stable word a client can test (``not_an_image``, ``file_too_large``, ...);
``message`` is a sentence for a person; a refused upload also names the file (``file``, its
position ``index``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

_CODES = {
    400: "bad_request",
    401: "login_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    503: "busy",
}


class ApiError(HTTPException):
    """An HTTP error with a stable ``code``, a message and optional details (file, index)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Optional[Dict[str, str]] = None,
        **extra: Any,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> Dict[str, Any]:
        """The JSON body of the response."""
        return {
            "error": {
                "status": self.status_code,
                "code": self.code,
                "message": self.message,
                **self.extra,
            }
        }


def _response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if isinstance(exc, ApiError):
        return _response(exc)
    code = _CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return _response(ApiError(exc.status_code, code, message, headers=exc.headers))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    message = "invalid request: " + "; ".join(problems)
    return _response(ApiError(422, "invalid_request", message))


def install_error_handlers(app: FastAPI) -> None:
    """Make every HTTP and validation error of ``app`` a JSON error body."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


def case_api_error(exc: Exception) -> ApiError:
    """The API's answer to a refusal of the case database (:mod:`bmc_detectron.cases.errors`):
    404 unknown, 403 a case of another lab (``forbidden``), 409 stale row version (``conflict``)
    or signed case (``read_only``), 503 schema not current, 422 anything else refused (bad
    class, box, case id...)."""
    from bmc_detectron.cases import errors as ce

    status, code = {
        ce.NotFoundError: (404, "not_found"),
        ce.ForbiddenError: (403, "forbidden"),
        ce.ConflictError: (409, "conflict"),
        ce.ReadOnlyError: (409, "read_only"),
        ce.SchemaError: (503, "schema"),
    }.get(type(exc), (422, "refused"))
    return ApiError(status, code, str(exc))


async def _case_error(request: Request, exc: Exception) -> JSONResponse:
    return _response(case_api_error(exc))


def install_case_error_handler(app: FastAPI) -> None:
    """Make every refusal of the case database a JSON error body (:func:`case_api_error`)."""
    from bmc_detectron.cases.errors import CaseError

    app.add_exception_handler(CaseError, _case_error)
