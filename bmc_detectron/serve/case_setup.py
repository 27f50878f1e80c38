"""The case database side of ``bmc serve`` (:mod:`bmc_detectron.tools.serve`): open (and, when
empty, create) the database, the login mode and where its session key lies, importing a finished
count once (``make serve`` after ``make demo``)."""

from __future__ import annotations

import getpass
import re
import secrets
from pathlib import Path
from typing import Any, Optional, Tuple

NO_AUTH_ENV_USER = "workstation"
SECRET_FILE = "serve_secret"


class CasesSetupError(RuntimeError):
    """The case database cannot be served as asked; the message says what to do."""


def open_cases(url: Optional[str], images: Optional[str]) -> Any:
    """The :class:`~bmc_detectron.cases.db.CaseDB` at ``url`` (default as ``bmc cases``); an
    empty database is created (``bmc cases init``), an older one refused (upgrade it)."""
    try:
        from bmc_detectron.cases.db import CaseDB, check_schema, schema_state
        from bmc_detectron.cases.errors import SchemaError
    except ImportError as e:
        raise CasesSetupError(
            f"the case pages need the cases extra ({e.name} is missing): pip install -e "
            "'.[cases]'; or serve the count page alone with --no-cases"
        ) from None
    db = CaseDB(url, None if images is None else Path(images), check=False)
    if schema_state(db.engine)[0] == "empty":
        db.upgrade()
        print(f"created the case database at {db}")
    try:
        check_schema(db.engine)
    except SchemaError as e:
        raise CasesSetupError(str(e)) from None
    return db


def secret_file(db_url: str, configured: Optional[Path] = None) -> Path:
    """Where the session key lies: ``configured`` (``ServeSettings.secret_file``), else
    ``serve_secret`` beside an SQLite database (else in the user's data folder)."""
    if configured is not None:
        return Path(configured).expanduser()
    from bmc_detectron.cases.db import db_folder

    return db_folder(db_url) / SECRET_FILE


def workstation_user() -> str:
    """The login name if it is a valid user name, else ``workstation``."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", name) else NO_AUTH_ENV_USER


def auth_mode(
    db: Any,
    no_auth: bool,
    loopback: bool,
    session_hours: float,
    key_file: Optional[Path] = None,
) -> Tuple[Any, str]:
    """The :class:`~bmc_detectron.serve.auth.AuthSettings` and a line saying how users log in.

    ``no_auth`` is refused unless the server listens on a loopback address; without it the
    database must have a user. ``key_file``: where the session key lies (default
    :func:`secret_file`); it is made now if missing (a key file that is not one is refused)."""
    from sqlalchemy import func, select

    from bmc_detectron.cases.models import User
    from bmc_detectron.cases.users import add_user
    from bmc_detectron.serve.auth import AuthSettings, load_or_create_secret

    if no_auth and not loopback:
        raise CasesSetupError(
            "--no-auth is for a single-user workstation: allowed only with --host 127.0.0.1"
        )
    if no_auth:
        name = workstation_user()
        with db.session() as s:
            if s.scalar(select(User).where(User.name == name)) is None:
                add_user(s, name, secrets.token_urlsafe(24), "admin", "bmc serve --no-auth")
        return AuthSettings(no_auth_user=name, session_s=session_hours * 3600), (
            f"no login (--no-auth): every change is made as {name}"
        )
    with db.session() as s:
        users = s.scalar(select(func.count()).select_from(User))
    if not users:
        raise CasesSetupError(
            "the case database has no user yet: add one with `bmc cases add-user NAME --role "
            "admin`, or run a single-user workstation with --no-auth"
        )
    path = secret_file(db.url, key_file)
    try:
        load_or_create_secret(path)
    except OSError as e:
        raise CasesSetupError(f"{path}: cannot keep the session key there ({e})") from None
    except ValueError as e:
        raise CasesSetupError(str(e)) from None
    auth = AuthSettings(session_s=session_hours * 3600, secret_file=path)
    return auth, f"users log in at /login (session key: {path})"


def import_once(db: Any, report: str, case_id: str) -> str:
    """Import the count report ``report`` as ``case_id`` unless that case is there already;
    a line saying what happened (a missing report is not an error: the demo was not run)."""
    from sqlalchemy import select

    from bmc_detectron.cases.importer import import_report
    from bmc_detectron.cases.models import Case

    if not (Path(report) / "summary.json").is_file():
        return f"no count report at {report} (run `make demo` first): nothing imported"
    with db.session() as s:
        if s.scalar(select(Case.id).where(Case.case_id == case_id)) is not None:
            return f"case {case_id} is in the database already"
        import_report(s, db.store, Path(report), "bmc serve", case_id)
    return f"imported the count {report} as case {case_id}"
