"""Logins that outlive a restart (the session key file beside the database), logouts that
outlive one too (the session epoch in the database, on SQLite and PostgreSQL), and the login rate
limit (a fake clock: N failures per name or address in a window, then 429 + Retry-After; each
failure and refusal in the audit log; counted in the database, on SQLite and PostgreSQL: two
servers on one database share it, a restart keeps it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat

import pytest
from sqlalchemy import select

from tests.serve.helpers import tiny_counter

pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")
pytest.importorskip("sqlalchemy", reason="pip install -e '.[cases]'")
from fastapi.testclient import TestClient  # noqa: E402

from bmc_detectron.cases.db import CaseDB  # noqa: E402
from bmc_detectron.cases.models import AuditEntry  # noqa: E402
from bmc_detectron.serve import ServeSettings, create_app  # noqa: E402
from bmc_detectron.serve.auth import AuthSettings, load_or_create_secret  # noqa: E402
from bmc_detectron.serve.case_setup import CasesSetupError, auth_mode  # noqa: E402
from tests.serve.case_helpers import CSRF, PASSWORD, case_app, case_db, login  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def counter():
    return tiny_counter()


def _me(app, token: str) -> int:
    with TestClient(app) as client:
        client.cookies.set("bmc_session", token)
        return client.get("/api/v1/auth/me").status_code


def test_two_app_instances_on_one_db_folder_accept_each_others_cookie(tmp_path, counter):
    db = case_db(tmp_path)
    first = case_app(counter, db)  # the session key file beside the database
    with TestClient(first) as client:
        login(client, "rex")
        token = client.cookies.get("bmc_session")
    key = tmp_path / "db" / "serve_secret"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    second_db = CaseDB(db.url)  # "after a restart": a new app, a new engine
    second = case_app(counter, second_db)
    assert _me(second, token) == 200
    payload, _, signature = token.partition(".")
    assert _me(second, payload[:-3] + "AAA." + signature) == 401  # tampered payload
    assert _me(second, payload + "." + signature[:-3] + "AAA") == 401  # tampered signature
    key.unlink()  # deleting the key logs everybody out, at once
    assert _me(second, token) == 401 and _me(first, token) == 401
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600  # a new key
    with TestClient(second) as client:
        login(client, "rex")
        assert _me(first, client.cookies.get("bmc_session")) == 200
    second_db.close()
    db.close()


def test_the_key_file_setting_and_a_corrupt_key(tmp_path, counter, monkeypatch):
    db = case_db(tmp_path)
    where = tmp_path / "keys" / "bmc.key"
    monkeypatch.setenv("BMC_SERVE_SECRET_FILE", str(where))
    settings = ServeSettings(allowed_hosts=("testserver",))
    assert settings.secret_file == where
    with TestClient(create_app(counter, settings=settings, cases=db)) as client:
        login(client, "rex")
    assert where.is_file() and not (tmp_path / "db" / "serve_secret").exists()
    assert load_or_create_secret(where) == load_or_create_secret(where)
    where.write_text("not hex\n")
    with pytest.raises(ValueError, match="bmc.key: not a session key"):
        load_or_create_secret(where)
    with pytest.raises(CasesSetupError, match="not a session key"):
        auth_mode(db, False, True, 8.0, where)
    auth, how = auth_mode(db, False, True, 8.0)  # the default: beside the database
    assert auth.secret_file == tmp_path / "db" / "serve_secret" and "session key" in how
    db.close()


def _audit(db) -> list:
    with db.session() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.entity == "login"))
        return [(a.user_name, a.action, a.new) for a in rows]


def test_five_failures_lock_the_name_out_for_the_window_even_with_the_password(tmp_path, counter):
    db = case_db(tmp_path)
    clock = Clock()
    app = case_app(counter, db, auth=AuthSettings(clock=clock))
    with TestClient(app) as client:
        client.cookies.set("bmc_csrf", CSRF)
        client.headers["x-csrf-token"] = CSRF

        def attempt(password: str, name: str = "rex"):
            return client.post("/api/v1/auth/login", json={"name": name, "password": password})

        for _ in range(5):
            assert attempt("wrong password").status_code == 401
            clock.now += 10
        r = attempt(PASSWORD)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_logins"
        assert r.headers["retry-after"] == str(900 - 50)
        clock.now = 1000 + 899
        assert attempt(PASSWORD).headers["retry-after"] == "1"
        clock.now = 1000 + 900  # the first failure left the window
        assert attempt(PASSWORD).status_code == 200
    failed = [("rex", "login_failed", {"address": "testclient"})] * 5
    refused = [
        ("rex", "login_refused", {"address": "testclient", "retry_after_s": 850}),
        ("rex", "login_refused", {"address": "testclient", "retry_after_s": 1}),
    ]
    assert _audit(db) == failed + refused
    db.close()


def test_failures_from_one_address_lock_every_name_out(tmp_path, counter):
    db = case_db(tmp_path)
    clock = Clock()
    app = case_app(counter, db, auth=AuthSettings(clock=clock))
    with TestClient(app, client=("10.0.0.7", 5000)) as client:
        client.cookies.set("bmc_csrf", CSRF)
        client.headers["x-csrf-token"] = CSRF
        for name in ("u1", "u2", "u3", "u4", "u5"):
            body = {"name": name, "password": "guess guess"}
            assert client.post("/api/v1/auth/login", json=body).status_code == 401
        body = {"name": "ada", "password": PASSWORD}
        assert client.post("/api/v1/auth/login", json=body).status_code == 429
    with TestClient(app, client=("10.0.0.8", 5000)) as other:  # another address: allowed
        login(other, "ada")
    assert [a[1] for a in _audit(db)] == ["login_failed"] * 5 + ["login_refused"]
    db.close()


def test_two_servers_share_the_login_limit_and_a_restart_keeps_it(tmp_path, counter, any_db_url):
    db, clock = case_db(tmp_path, url=any_db_url), Clock()
    images = tmp_path / "db" / "images"
    other_db = CaseDB(db.url, images)  # a second server process on the same database
    first = case_app(counter, db, auth=AuthSettings(clock=clock))
    second = case_app(counter, other_db, auth=AuthSettings(clock=clock))

    def attempt(app, name: str, password: str, address: str = "10.0.0.7"):
        with TestClient(app, client=(address, 5000)) as client:
            client.cookies.set("bmc_csrf", CSRF)
            client.headers["x-csrf-token"] = CSRF
            return client.post("/api/v1/auth/login", json={"name": name, "password": password})

    for app, failures in ((first, 3), (second, 2)):
        for _ in range(failures):
            assert attempt(app, "rex", "wrong password").status_code == 401
            clock.now += 10
    for app in (first, second):  # the 6th attempt, on either, right password, another address
        r = attempt(app, "rex", PASSWORD, "10.0.0.8")
        assert r.status_code == 429 and r.headers["retry-after"] == str(900 - 50)
    assert attempt(second, "ada", PASSWORD, "10.0.0.9").status_code == 200  # not rex's reset
    other_db.close()
    db.close()
    again_db = CaseDB(db.url, images)  # "after a restart": a new engine, a new app
    again = case_app(counter, again_db, auth=AuthSettings(clock=clock))
    assert attempt(again, "rex", PASSWORD, "10.0.0.8").status_code == 429  # still limited
    assert attempt(again, "ada", PASSWORD).status_code == 429  # the address's 5 failures too
    clock.now = 1000 + 900  # the first failure left the window
    assert attempt(again, "rex", PASSWORD, "10.0.0.8").status_code == 200
    audit = _audit(again_db)
    assert [(a[0], a[1]) for a in audit] == [("rex", "login_failed")] * 5 + [
        ("rex", "login_refused"),
        ("rex", "login_refused"),
        ("rex", "login_refused"),
        ("ada", "login_refused"),
    ]
    assert audit[-1][2] == {"address": "10.0.0.7", "retry_after_s": 850}
    again_db.close()


def test_a_logout_lasts_across_a_restart(tmp_path, counter, any_db_url):
    db = case_db(tmp_path, url=any_db_url)
    first = case_app(counter, db)
    with TestClient(first) as rex, TestClient(first) as ada:
        login(rex, "rex")
        kept = rex.cookies.get("bmc_session")  # a copy someone kept
        login(ada, "ada")
        ada_token = ada.cookies.get("bmc_session")
        assert rex.post("/api/v1/auth/logout").status_code == 200
        assert rex.post("/api/v1/auth/logout").status_code == 200  # again: nothing more
    assert _me(first, kept) == 401
    second_db = CaseDB(db.url, tmp_path / "db" / "images")  # a restart: new app, same key file
    second = case_app(counter, second_db)
    assert _me(second, kept) == 401  # the logged-out cookie stays refused
    assert _me(second, ada_token) == 200  # another user's session is unaffected
    with TestClient(second) as client:
        login(client, "rex")  # rex logs in again: a new cookie, accepted by both servers
        fresh = client.cookies.get("bmc_session")
    assert _me(first, fresh) == 200 and _me(second, fresh) == 200 and _me(second, kept) == 401
    with db.session() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.action == "end_sessions")).all()
        assert [(a.user_name, a.old, a.new) for a in rows] == [("rex", {"epoch": 0}, {"epoch": 1})]
    second_db.close()
    db.close()


def test_end_sessions_command_and_tokens_without_an_epoch(tmp_path, counter, capsys):
    from bmc_detectron.serve.auth import Sessions
    from bmc_detectron.tools import cases as cases_tool

    db = case_db(tmp_path)
    app = case_app(counter, db)
    with TestClient(app) as client:
        login(client, "ada")
        token = client.cookies.get("bmc_session")
    assert _me(app, token) == 200
    argv = ["end-sessions", "ada", "--db", db.url, "--images", str(tmp_path / "db" / "images")]
    assert cases_tool.main(argv + ["--user", "root"]) == 0
    assert "ended every session of ada" in capsys.readouterr().out
    assert _me(app, token) == 401
    assert cases_tool.main(["end-sessions", "nobody"] + argv[2:]) == 2
    assert "unknown user 'nobody'" in capsys.readouterr().err
    sessions = Sessions(app.state.auth)
    assert sessions.claim_of(sessions.issue("ada", 1)).epoch == 1
    assert _me(app, sessions.issue("ada", 1)) == 200 and _me(app, sessions.issue("ada", 0)) == 401

    def signed(body: dict) -> str:
        b64 = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        digest = hmac.new(sessions.key(), b64.encode(), hashlib.sha256).digest()
        return b64 + "." + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    body = {"u": "ada", "exp": 10**10, "sid": "x"}
    assert _me(app, signed({**body, "ep": 1})) == 200
    assert _me(app, signed(body)) == 401  # a token without an epoch (before 0003): refused
    db.close()
