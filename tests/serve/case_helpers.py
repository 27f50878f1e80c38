"""A case database with two users and one imported case, and the web app around it.

Users: ``ada`` (admin, no lab) and ``rex`` (reviewer, lab "default"), password :data:`PASSWORD`;
case ``case42`` (lab "default") is the hand-made report of ``tests.cases.helpers`` (fields f1,
f2; classes Lym, Red, Myelo).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from bmc_detectron.cases.db import CaseDB
from bmc_detectron.cases.importer import import_report
from bmc_detectron.cases.users import add_user
from tests.cases.helpers import make_report, new_db

PASSWORD = "correct horse 42"
CSRF = "test-csrf-token"


def case_db(tmp: Path, cases: int = 1, url: Optional[str] = None) -> CaseDB:
    """A fresh database with ada (admin), rex (reviewer) and ``case42`` (+ ``case43``, ...); at
    ``url`` (an empty database) or in an SQLite file under ``tmp``."""
    db = new_db(tmp, url)
    with db.session() as s:
        add_user(s, "ada", PASSWORD, "admin", "test")
        add_user(s, "rex", PASSWORD, "reviewer", "test", "default")
        for i in range(cases):
            name = f"case{42 + i}"
            import_report(s, db.store, make_report(tmp / "reports", name, offset=i), "test")
    return db


def case_app(counter: Any, db: CaseDB, hosts=("testserver",), auth: Optional[Any] = None):
    """The web app with the case database."""
    from bmc_detectron.serve import ServeSettings, create_app

    settings = ServeSettings(allowed_hosts=tuple(hosts), max_pixels=2_000_000)
    return create_app(counter, settings=settings, cases=db, auth=auth)


def login(client: Any, name: str = "rex", password: str = PASSWORD) -> Any:
    """Log ``client`` (a TestClient or httpx client) in; sets the CSRF cookie and header."""
    client.cookies.set("bmc_csrf", CSRF)
    client.headers["x-csrf-token"] = CSRF
    response = client.post("/api/v1/auth/login", json={"name": name, "password": password})
    assert response.status_code == 200, response.text
    return response
