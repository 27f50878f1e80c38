"""Logins that outlive a restart (the session key file beside the database) and the login rate
limit (a fake clock: N failures per name or address in a window, then 429 + Retry-After; each
failure and refusal in the audit log)."""

from __future__ import annotations

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
from bmc_detectron.serve.login_limit import LoginLimiter  # noqa: E402
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


def test_limiter_windows_per_name_and_per_address():
    clock = Clock()
    limiter = LoginLimiter(3, 60.0, clock)
    for address in ("a1", "a2", "a3"):  # one name from three addresses
        assert limiter.retry_after("rex", address) is None
        limiter.failed("rex", address)
    assert limiter.retry_after("rex", "a4") == 60
    assert limiter.retry_after("ada", "a4") is None
    clock.now += 59.5
    assert limiter.retry_after("rex", "a4") == 1  # rounded up
    clock.now += 0.5
    assert limiter.retry_after("rex", "a4") is None
    limiter.failed("ada", "a9")
    limiter.failed("ada", "a9")
    limiter.succeeded("ada")  # the right password forgets the name's failures...
    limiter.failed("bob", "a9")
    assert limiter.retry_after("ada", "a8") is None
    assert limiter.retry_after("zed", "a9") == 60  # ...not the address's
    with pytest.raises(ValueError):
        LoginLimiter(0, 60.0, clock)
