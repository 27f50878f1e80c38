"""What the case routes are given: the case database, the acting user, the CSRF check.

Apart from :mod:`.deps` because it needs the ``cases`` extra (SQLAlchemy, argon2): the app
imports it only when it serves a case database.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bmc_detectron.cases.db import CaseDB
from bmc_detectron.cases.errors import NotFoundError
from bmc_detectron.cases.labs import lab_scope
from bmc_detectron.cases.logins import LoginLimit
from bmc_detectron.cases.users import get_user
from bmc_detectron.serve.auth import SESSION_COOKIE, AuthSettings, Principal, Sessions, csrf_ok
from bmc_detectron.serve.errors import ApiError


def get_case_db(request: Request) -> CaseDB:
    """The app's case database."""
    return request.app.state.cases


def get_auth(request: Request) -> AuthSettings:
    """How the app authenticates."""
    return request.app.state.auth


def get_sessions(request: Request) -> Sessions:
    """The app's session tokens."""
    return request.app.state.sessions


def get_login_limit(request: Request) -> LoginLimit:
    """The app's login rate limit (its counts are in the database)."""
    return request.app.state.login_limit


def check_csrf(request: Request) -> None:
    """Refuse (403 ``csrf``) a state-changing request without the page's CSRF token."""
    if not csrf_ok(request):
        raise ApiError(403, "csrf", "missing or wrong CSRF token: reload the page")


def current_user(request: Request) -> Principal:
    """The logged-in user (the ``--no-auth`` user on a workstation); 401 when nobody is, and
    for a session cookie whose epoch is no longer the user's (logged out)."""
    auth: AuthSettings = request.app.state.auth
    name, claim = auth.no_auth_user, None
    if name is None:
        claim = request.app.state.sessions.claim_of(request.cookies.get(SESSION_COOKIE))
        name = None if claim is None else claim.user
    if name is None:
        raise ApiError(401, "login_required", "log in first (your session expired or is missing)")
    with request.app.state.cases.session() as session:
        try:
            user = get_user(session, name)
        except NotFoundError:
            raise ApiError(401, "login_required", f"user {name!r} is no longer known") from None
        if claim is not None and claim.epoch != user.session_epoch:
            raise ApiError(401, "login_required", "this session was logged out: log in again")
        return Principal(user.name, user.role, user.lab, lab_scope(user.role, user.lab))


def admin_user(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    """The logged-in user, who must be an admin (403 otherwise)."""
    if not user.is_admin:
        raise ApiError(403, "forbidden", "only an admin may do this")
    return user


CaseDBDep = Annotated[CaseDB, Depends(get_case_db)]
AuthDep = Annotated[AuthSettings, Depends(get_auth)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]
LoginLimitDep = Annotated[LoginLimit, Depends(get_login_limit)]
UserDep = Annotated[Principal, Depends(current_user)]
AdminDep = Annotated[Principal, Depends(admin_user)]
