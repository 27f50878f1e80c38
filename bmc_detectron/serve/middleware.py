"""An ASGI guard in front of the app: body size caps, cross-site posts, security headers.

- every request body is capped (the analyze route reads its multipart body under its own,
  larger limits, :mod:`.uploads`); a declared ``Content-Length`` over the cap is refused before
  a byte is read, a streamed body as soon as it passes the cap;
- a ``POST`` whose ``Origin`` is another site is refused (403): a page elsewhere cannot make the
  workstation's browser submit images to the lab's app;
- responses carry a strict Content-Security-Policy (everything from the app itself), no-sniff,
  no-referrer and no-framing headers; API answers are not cached (they describe patients' cells).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Dict, Iterable, Tuple
from urllib.parse import urlsplit

from bmc_detectron.serve.errors import ApiError

Scope = Dict[str, Any]
Message = Dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


async def _send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """The ASGI middleware; ``body_limits`` maps a path to its cap (others: ``default_limit``)."""

    def __init__(
        self, app: ASGIApp, body_limits: Dict[str, int], default_limit: int = 64 * 1024
    ) -> None:
        self.app = app
        self.body_limits = dict(body_limits)
        self.default_limit = int(default_limit)

    def _refusal(self, scope: Scope, limit: int) -> ApiError | None:
        origin = _header(scope, b"origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin and origin != "null":
            if urlsplit(origin).netloc.lower() != _header(scope, b"host").lower():
                return ApiError(403, "cross_origin", "requests from other sites are refused")
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            return ApiError(413, "request_too_large", f"the request body is over {limit} bytes")
        return None

    def _headers(self, path: str) -> Iterable[Tuple[bytes, bytes]]:
        yield from _HEADERS
        if not path.startswith("/docs"):  # Swagger UI's page has an inline script
            yield b"content-security-policy", CSP.encode()
        if path.startswith("/api/"):
            yield b"cache-control", b"no-store"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.body_limits.get(path, self.default_limit)
        refusal = self._refusal(scope, limit)
        if refusal is not None:
            await _send_error(send, refusal)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise ApiError(413, "request_too_large", f"the request body is over {limit} bytes")
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self._headers(path) if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)
