"""Accounts: ``POST /api/v1/auth/login``, ``POST /api/v1/auth/logout``, ``GET /api/v1/auth/me``
and ``POST /api/v1/users`` (an admin adds an account). Every POST needs the CSRF header.

Logins are rate-limited (:mod:`bmc_detectron.cases.logins`, counted in the database: every
server on it shares the limit, a restart keeps it): too many failures for a name or from an
address get 429 with Retry-After; each failure (``login_failed``) and each refusal
(``login_refused``) is written to the audit log.

A logout ends every session of the user for good (``cases.users.end_sessions``: the session
epoch in the database goes up): a kept copy of any of their cookies is refused, after a restart
too, on every server of the database."""

from __future__ import annotations

from typing import Any, Dict, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bmc_detectron.cases.errors import NotFoundError
from bmc_detectron.cases.users import add_user, end_sessions, get_user, verify_password
from bmc_detectron.serve.api.case_deps import (
    AdminDep,
    AuthDep,
    CaseDBDep,
    LoginLimitDep,
    SessionsDep,
    UserDep,
    check_csrf,
)
from bmc_detectron.serve.auth import SESSION_COOKIE, set_session_cookie
from bmc_detectron.serve.errors import ApiError

router = APIRouter(dependencies=[Depends(check_csrf)])


class Login(BaseModel):
    """A name and password."""

    name: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class NewUser(Login):
    """An account to add."""

    role: str = Field("reviewer", max_length=16)
    lab: Optional[str] = Field(None, max_length=64)


@router.post("/auth/login", summary="Log in (sets the session cookie)")
def login(
    body: Login,
    request: Request,
    db: CaseDBDep,
    auth: AuthDep,
    sessions: SessionsDep,
    limit: LoginLimitDep,
) -> JSONResponse:
    if auth.no_auth_user is not None:
        return JSONResponse({"name": auth.no_auth_user, "auth": False})
    address = request.client.host if request.client else "unknown"
    with db.session() as session:
        wait = limit.check(session, body.name, address)  # a refusal is audited
    if wait is not None:
        raise ApiError(
            429,
            "too_many_logins",
            f"too many failed logins for this user or from this address: try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    with db.session() as session:
        ok = verify_password(session, body.name, body.password)
        epoch = get_user(session, body.name).session_epoch if ok else 0
    with db.session() as session:
        if ok:
            limit.succeeded(session, body.name)
        else:
            limit.failed(session, body.name, address)  # audited
    if not ok:
        raise ApiError(401, "bad_login", "unknown user or wrong password")
    response = JSONResponse({"name": body.name, "auth": True})
    set_session_cookie(response, request, sessions.issue(body.name, epoch), auth)
    return response


@router.post("/auth/logout", summary="Log out (every session of the user, for good)")
def logout(request: Request, db: CaseDBDep, sessions: SessionsDep) -> JSONResponse:
    claim = sessions.claim_of(request.cookies.get(SESSION_COOKIE))
    if claim is not None:
        with db.session() as session:
            try:
                if get_user(session, claim.user).session_epoch == claim.epoch:
                    end_sessions(session, claim.user, claim.user)
            except NotFoundError:
                pass  # the account is gone: its sessions with it
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/auth/me", summary="Who is logged in")
def me(user: UserDep, auth: AuthDep) -> Dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role,
        "lab": user.lab,
        "auth": auth.no_auth_user is None,
    }


@router.post("/users", summary="Add a local account (admins only)")
def new_user(body: NewUser, admin: AdminDep, db: CaseDBDep) -> Dict[str, Any]:
    with db.session() as session:
        user = add_user(session, body.name, body.password, body.role, admin.name, body.lab)
        return {"name": user.name, "role": user.role, "lab": user.lab}
