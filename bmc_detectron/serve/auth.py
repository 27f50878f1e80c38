"""Who is asking: local accounts (the case database's users), signed session cookies, CSRF.

- a session is a signed token (HMAC-SHA256 over ``{user, session epoch, expiry, id}``) in the
  ``bmc_session`` cookie. The signing key is kept in a file (:attr:`AuthSettings.secret_file`;
  ``bmc serve``: ``serve_secret`` beside the database, made on first start with mode 0600): a
  restart keeps everybody logged in, deleting the file logs everybody out (a new key is made at
  once). The cookie is HttpOnly, SameSite=Strict, Secure when the request came over https (or
  when :attr:`AuthSettings.secure_cookies`); it expires after :attr:`AuthSettings.session_s`.
  The user is read from the database on every request (a removed account is logged out at once)
  and the token's epoch must be the user's ``session_epoch``: a logout increments it
  (``cases.users.end_sessions``), so a logged-out cookie stays refused after a restart;
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
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Tuple

from fastapi import Request, Response

SESSION_COOKIE = "bmc_session"
CSRF_COOKIE = "bmc_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SECRET_BYTES = 32


@dataclass
class AuthSettings:
    """How the case pages authenticate.

    Attributes:
        secret: the key that signs session tokens when there is no ``secret_file`` (random per
            start unless given: a restart then logs everybody out).
        secret_file: where the key is kept (:func:`load_or_create_secret`); None: ``secret``.
        session_s: how long a session lasts (seconds).
        no_auth_user: act as this user for every request, no login (None: log in).
        secure_cookies: always mark cookies Secure (else only over https).
        clock: the time (seconds), replaceable in tests.
    """

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(SECRET_BYTES))
    secret_file: Optional[Path] = None
    session_s: float = 8 * 3600.0
    no_auth_user: Optional[str] = None
    secure_cookies: bool = False
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Principal:
    """The acting user: ``lab`` their lab (None: an admin without one); ``scope`` the labs
    whose cases they see (``cases.labs.lab_scope``: None every lab, "" none)."""

    name: str
    role: str
    lab: Optional[str] = None
    scope: Optional[str] = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _read_secret(path: Path) -> bytes:
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < SECRET_BYTES:
        raise ValueError(
            f"{path}: not a session key ({2 * SECRET_BYTES}+ hex digits expected); delete it "
            "and a new one is made (everybody is logged out)"
        )
    return secret


def load_or_create_secret(path: Path) -> bytes:
    """The session key kept in ``path`` (hex text); a missing file is made with a new random
    key, mode 0600, atomically (two servers starting at once end up with the same key)."""
    path = Path(path)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".serve_secret.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(SECRET_BYTES) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # never replaces a key another server wrote meanwhile
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read_secret(path)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SessionClaim:
    """What a valid session token says: the user and the session epoch it was issued at."""

    user: str
    epoch: int


class Sessions:
    """Issues and checks session tokens (signed with the key, see the module doc)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._key: Tuple[Optional[Tuple[int, int, int]], bytes] = (None, b"")

    def key(self) -> bytes:
        """The signing key: ``settings.secret``, or the key file's (re-read when the file
        changes, made anew when it is gone)."""
        path = self.settings.secret_file
        if path is None:
            return self.settings.secret
        with self._lock:
            stamp = _stamp(path)
            if stamp is None or stamp != self._key[0]:
                secret = load_or_create_secret(path)
                self._key = (_stamp(path), secret)
            return self._key[1]

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key(), payload.encode(), hashlib.sha256).digest())

    def issue(self, user: str, epoch: int) -> str:
        """A new session token for ``user`` at their session ``epoch`` (``users.session_epoch``)."""
        expiry = self.settings.clock() + self.settings.session_s
        body = {"u": user, "ep": int(epoch), "exp": round(expiry, 3), "sid": secrets.token_hex(16)}
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

    def claim_of(self, token: Optional[str]) -> Optional[SessionClaim]:
        """The user and epoch of a validly signed, unexpired token (else None). Whether the
        epoch is still the user's (not logged out since) is the database's to say."""
        body = self._payload(token or "")
        if body is None or not isinstance(body.get("u"), str):
            return None
        epoch = body.get("ep")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            return None  # a token of a server without session epochs: log in again
        if not isinstance(body.get("exp"), (int, float)) or body["exp"] <= self.settings.clock():
            return None
        return SessionClaim(body["u"], epoch)


def _stamp(path: Path) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


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
