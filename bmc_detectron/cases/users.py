"""Local accounts: a name, a role (reviewer or admin), a lab (:mod:`.labs`: required for a
reviewer; an admin without one sees every lab, as every admin does) and an argon2 password hash
(argon2-cffi's defaults).

Sessions end for good: a session cookie of the web page carries the user's ``session_epoch`` as
it was at login; :func:`end_sessions` (a logout) increments it, and a cookie of an older epoch is
refused by every server, after any restart."""

from __future__ import annotations

import re
from typing import Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bmc_detectron.cases.audit import record
from bmc_detectron.cases.errors import CaseError, NotFoundError
from bmc_detectron.cases.labs import check_lab
from bmc_detectron.cases.models import ROLES, User, storable

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 8
_HASHER = PasswordHasher()


def get_user(session: Session, name: str) -> User:
    """The user called ``name``; :class:`NotFoundError` if there is none."""
    user = session.scalar(select(User).where(User.name == name)) if storable(name) else None
    if user is None:
        raise NotFoundError(f"unknown user {name!r} (add one with `bmc cases add-user`)")
    return user


def add_user(
    session: Session,
    name: str,
    password: str,
    role: str,
    actor: str,
    lab: Optional[str] = None,
) -> User:
    """A new account; ``actor``: who adds it (written to the audit log); ``lab``: the user's
    lab (required for a reviewer)."""
    if not USER_NAME.fullmatch(name):
        raise CaseError(f"user name {name!r}: letters, digits and . _ @ - only, up to 64")
    if role not in ROLES:
        raise CaseError(f"role {role!r}: one of {', '.join(ROLES)}")
    if lab is None and role == "reviewer":
        raise CaseError(f"reviewer {name!r} needs a lab (--lab LAB): a reviewer sees one lab")
    if lab is not None:
        check_lab(lab)
    if len(password) < MIN_PASSWORD:
        raise CaseError(f"the password of {name!r} is shorter than {MIN_PASSWORD} characters")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise CaseError(f"user {name!r} exists already")
    user = User(name=name, role=role, lab=lab, password_hash=_HASHER.hash(password))
    session.add(user)
    session.flush()
    new = {"name": name, "role": role, "lab": lab}
    record(session, actor, "add_user", "user", user.id, new=new)
    return user


def verify_password(session: Session, name: str, password: str) -> bool:
    """True when ``password`` is the user's (False for an unknown user or a wrong password)."""
    user = session.scalar(select(User).where(User.name == name)) if storable(name) else None
    if user is None:
        return False
    try:
        return _HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def end_sessions(session: Session, name: str, actor: str) -> int:
    """Log ``name`` out everywhere: increment their session epoch (every session issued before
    is refused from now on); ``actor``: who does it (audit log). Returns the new epoch."""
    user = get_user(session, name)
    old = user.session_epoch
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(session_epoch=User.session_epoch + 1)
        .execution_options(synchronize_session=False)
    )
    session.refresh(user)
    new = {"epoch": user.session_epoch}
    record(session, actor, "end_sessions", "user", user.id, old={"epoch": old}, new=new)
    return user.session_epoch
