"""Who is asking: local accounts (the case database's users), signed session cookies, CSRF.

- a session is a signed token (HMAC-SHA256 over ``{user, expiry, id}``) in the ``bmc_session``
  cookie: HttpOnly, SameSite=Strict, Secure when the request came over https (or when
  :attr:`AuthSettings.secure_cookies`); it expires after :attr:`AuthSettings.session_s` and a
  logged-out session id is refused until then. The user is read from the database on every
  request (a removed account is logged out at once);
- CSRF: every state-changing request (POST, PUT, PATCH, DELETE) to the case routes must carry
  the ``X-CSRF-Token`` header equal to the ``bmc_csrf`` cookie (double submit): the pages set the
  cookie, their scripts send the header; a page on another site can do neither;
- ``no_auth_user``: a single-user workstation (``bmc serve --no-auth``, on 127.0.0.1 only):
  every request acts as that user, no login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from fastapi import Request, Response

SESSION_COOKIE = "bmc_session"
CSRF_COOKIE = "bmc_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class AuthSettings:
    """How the case pages authenticate.

    Attributes:
        secret: the key that signs session tokens (random per start unless given: a restart
            then logs everybody out).
        session_s: how long a session lasts (seconds).
        no_auth_user: act as this user for every request, no login (None: log in).
        secure_cookies: always mark cookies Secure (else only over https).
        clock: the time (seconds), replaceable in tests.
    """

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    session_s: float = 8 * 3600.0
    no_auth_user: Optional[str] = None
    secure_cookies: bool = False
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Principal:
    """The acting user."""

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks session tokens; remembers logged-out session ids until they expire."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._revoked: Dict[str, float] = {}
        self._lock = threading.Lock()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.settings.secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: str) -> str:
        """A new session token for ``user``."""
        expiry = self.settings.clock() + self.settings.session_s
        body = {"u": user, "exp": round(expiry, 3), "sid": secrets.token_hex(16)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def _payload(self, token: str) -> Optional[dict]:
        payload, _, signature = token.partition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    def user_of(self, token: Optional[str]) -> Optional[str]:
        """The user of a valid, unexpired, not logged-out token (else None)."""
        body = self._payload(token or "")
        if body is None or not isinstance(body.get("u"), str):
            return None
        now = self.settings.clock()
        if not isinstance(body.get("exp"), (int, float)) or body["exp"] <= now:
            return None
        with self._lock:
            if body.get("sid") in self._revoked:
                return None
        return body["u"]

    def revoke(self, token: Optional[str]) -> None:
        """Log the token's session out."""
        body = self._payload(token or "")
        if body is None:
            return
        now = self.settings.clock()
        with self._lock:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            self._revoked[str(body.get("sid"))] = float(body.get("exp", now))


def _secure(request: Request, settings: AuthSettings) -> bool:
    return settings.secure_cookies or request.url.scheme == "https"


def set_session_cookie(
    response: Response, request: Request, token: str, settings: AuthSettings
) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure over https."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_s),
        httponly=True,
        samesite="strict",
        secure=_secure(request, settings),
        path="/",
    )


def ensure_csrf_cookie(response: Response, request: Request, settings: AuthSettings) -> None:
    """Give the browser a CSRF token (readable by the page's scripts) if it has none."""
    if request.cookies.get(CSRF_COOKIE):
        return
    response.set_cookie(
        CSRF_COOKIE,
        secrets.token_urlsafe(32),
        httponly=False,
        samesite="strict",
        secure=_secure(request, settings),
        path="/",
    )


def csrf_ok(request: Request) -> bool:
    """True for a safe method, or when the header equals the cookie (both non-empty)."""
    if request.method in SAFE_METHODS:
        return True
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), header.encode())
