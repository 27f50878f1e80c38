"""Accounts: ``POST /api/v1/auth/login``, ``POST /api/v1/auth/logout``, ``GET /api/v1/auth/me``
and ``POST /api/v1/users`` (an admin adds an account). Every POST needs the CSRF header."""

from __future__ import annotations

from typing import Any, Dict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bmc_detectron.cases.users import add_user, verify_password
from bmc_detectron.serve.api.case_deps import (
    AdminDep,
    AuthDep,
    CaseDBDep,
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


@router.post("/auth/login", summary="Log in (sets the session cookie)")
def login(
    body: Login, request: Request, db: CaseDBDep, auth: AuthDep, sessions: SessionsDep
) -> JSONResponse:
    if auth.no_auth_user is not None:
        return JSONResponse({"name": auth.no_auth_user, "auth": False})
    with db.session() as session:
        ok = verify_password(session, body.name, body.password)
    if not ok:
        raise ApiError(401, "bad_login", "unknown user or wrong password")
    response = JSONResponse({"name": body.name, "auth": True})
    set_session_cookie(response, request, sessions.issue(body.name), auth)
    return response


@router.post("/auth/logout", summary="Log out (the session is refused from now on)")
def logout(request: Request, sessions: SessionsDep) -> JSONResponse:
    sessions.revoke(request.cookies.get(SESSION_COOKIE))
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/auth/me", summary="Who is logged in")
def me(user: UserDep, auth: AuthDep) -> Dict[str, Any]:
    return {"name": user.name, "role": user.role, "auth": auth.no_auth_user is None}


@router.post("/users", summary="Add a local account (admins only)")
def new_user(body: NewUser, admin: AdminDep, db: CaseDBDep) -> Dict[str, Any]:
    with db.session() as session:
        user = add_user(session, body.name, body.password, body.role, admin.name)
        return {"name": user.name, "role": user.role}
