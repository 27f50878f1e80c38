"""The case routes of the web app (FastAPI TestClient, a hand-made case database).

Every route needs a login; every change needs the CSRF header; a stale row version gets 409; a
signed case refuses edits; injection strings in text fields and file names are refused or kept
inert; sessions expire and log out; --no-auth only on 127.0.0.1.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.serve.helpers import encode, smear, tiny_counter

pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")
pytest.importorskip("sqlalchemy", reason="pip install -e '.[cases]'")
from fastapi.testclient import TestClient  # noqa: E402

from bmc_detectron.serve.auth import AuthSettings  # noqa: E402
from tests.serve.case_helpers import CSRF, PASSWORD, case_app, case_db, login  # noqa: E402

INJECTIONS = ["x'; DROP TABLE cases; --", "../../etc/passwd", "<script>alert(1)</script>", "a\x00b"]
V1 = "/api/v1/cases/case42/versions/1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def counter():
    return tiny_counter()


@pytest.fixture()
def env(tmp_path, counter):
    db = case_db(tmp_path)
    clock = Clock()
    app = case_app(counter, db, auth=AuthSettings(session_s=600, clock=clock))
    with TestClient(app) as client:
        yield client, db, clock
    db.close()


def cells_of(client) -> dict:
    case = client.get("/api/v1/cases/case42").json()
    return {c["id"]: c for f in case["fields"] for c in f["cells"]}


def test_every_route_needs_a_login(env):
    client, _, _ = env
    client.cookies.set("bmc_csrf", CSRF)
    client.headers["x-csrf-token"] = CSRF
    gets = ["/api/v1/cases", "/api/v1/cases/case42", f"{V1}/fields/f1/image", f"{V1}/report.csv"]
    posts = [f"{V1}/cells/1/class", f"{V1}/cells/1/delete", f"{V1}/cells/1/restore"]
    posts += [f"{V1}/cells", f"{V1}/sign", f"{V1}/reopen", "/api/v1/users", "/api/v1/cases"]
    for path in gets:
        assert client.get(path).status_code == 401, path
    for path in posts:
        assert client.post(path, json={}).status_code == 401, path
    assert client.get("/api/v1/auth/me").json()["error"]["code"] == "login_required"
    bad = client.post("/api/v1/auth/login", json={"name": "rex", "password": "wrong password"})
    assert bad.status_code == 401


def test_session_cookie_is_http_only_strict_and_expires(env):
    client, _, clock = env
    cookie = login(client).headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http on the workstation
    assert client.get("/api/v1/auth/me").json()["name"] == "rex"
    clock.now += 599
    assert client.get("/api/v1/cases").status_code == 200
    clock.now += 2
    assert client.get("/api/v1/cases").status_code == 401


def test_logout_ends_the_session_even_with_the_old_cookie(env):
    client, _, _ = env
    login(client)
    token = client.cookies.get("bmc_session")
    assert client.post("/api/v1/auth/logout").status_code == 200
    client.cookies.clear()
    client.cookies.set("bmc_session", token)
    assert client.get("/api/v1/cases").status_code == 401


def test_a_forged_token_is_refused(env):
    client, _, _ = env
    login(client)
    token = client.cookies.get("bmc_session")
    payload, _, sig = token.partition(".")
    client.cookies.clear()
    client.cookies.set("bmc_session", payload[:-2] + "AA." + sig)
    assert client.get("/api/v1/cases").status_code == 401


def test_changes_without_the_csrf_token_are_refused(env):
    client, _, _ = env
    login(client)
    for header in ("", "another-token"):
        client.headers["x-csrf-token"] = header
        r = client.post(f"{V1}/cells/1/class", json={"class": "Red", "version": 1})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf"
        assert client.post("/api/v1/auth/logout").status_code == 403
    client.headers["x-csrf-token"] = CSRF
    assert cells_of(client)[1]["reviewed_class"] is None  # nothing was written
    assert client.get("/api/v1/cases").status_code == 200  # reading needs no token


def test_review_edits_undo_and_the_differential(env):
    client, _, _ = env
    login(client)
    r = client.post(f"{V1}/cells/1/class", json={"class": "Myelo", "version": 1})
    assert r.status_code == 200
    assert r.json()["cell"]["reviewed_class"] == "Myelo" and r.json()["cell"]["version"] == 2
    rows = {row["class"]: row["count"] for row in r.json()["differential"]["reviewed"]["classes"]}
    assert rows["Myelo"] == 2 and rows["Lym"] == 0
    r = client.post(f"{V1}/cells/2/delete", json={"version": 1})
    assert r.json()["cell"]["deleted"] is True
    r = client.post(f"{V1}/cells/1/restore", json={"reviewed_class": None, "version": 2})
    assert r.json()["cell"]["reviewed_class"] is None and r.json()["cell"]["reviewed_by"] is None
    r = client.post(f"{V1}/cells", json={"field": "f2", "box": [1, 2, 20, 21], "class": "Red"})
    added = r.json()["cell"]
    assert added["added"] and added["reviewed_class"] == "Red" and added["reviewed_by"] == "rex"
    case = client.get("/api/v1/cases/case42").json()
    assert case["status"] == "in_review"
    assert [len(f["cells"]) for f in case["fields"]] == [3, 2]


def test_stale_row_version_gets_409_and_writes_nothing(env):
    client, _, _ = env
    login(client)
    assert client.post(f"{V1}/cells/1/class", json={"class": "Red", "version": 1}).is_success
    r = client.post(f"{V1}/cells/1/class", json={"class": "Myelo", "version": 1})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert client.post(f"{V1}/cells/1/delete", json={"version": 1}).status_code == 409
    assert cells_of(client)[1]["reviewed_class"] == "Red"


def test_signed_case_refuses_edits_and_reopens_as_a_new_version(env):
    client, _, _ = env
    login(client)
    client.post(f"{V1}/cells/1/class", json={"class": "Red", "version": 1})
    signed = client.post(f"{V1}/sign")
    assert signed.status_code == 200 and not signed.json()["editable"]
    assert signed.json()["sign_offs"][0]["user"] == "rex"
    edits = [
        (f"{V1}/cells/3/class", {"class": "Red", "version": 1}),
        (f"{V1}/cells/3/delete", {"version": 1}),
        (f"{V1}/cells/1/restore", {"version": 2}),
        (f"{V1}/cells", {"field": "f1", "box": [1, 1, 9, 9]}),
        (f"{V1}/sign", {}),
    ]
    for path, body in edits:
        r = client.post(path, json=body)
        assert r.status_code == 409 and r.json()["error"]["code"] == "read_only", path
    report = client.get(f"{V1}/report.json").json()
    assert report["signed"][0]["reviewer"] == "rex"
    assert {r["class"]: (r["model"], r["reviewer"]) for r in report["classes"]}["Red"] == (0, 1)
    html = client.get(f"{V1}/report.html").text
    assert "Signed by <strong>rex</strong>" in html
    csv = client.get(f"{V1}/report.csv").text.splitlines()
    assert csv[0] == "class,model,model_percent,reviewer,reviewer_percent"
    reopened = client.post(f"{V1}/reopen").json()
    assert reopened["version"] == 2 and reopened["editable"]
    assert client.get("/api/v1/cases/case42?version=1").json()["status"] == "signed"
    r = client.post(
        "/api/v1/cases/case42/versions/2/cells/6/class", json={"class": "Lym", "version": 1}
    )
    assert r.status_code == 200, r.text


def test_unknown_case_field_cell_is_404(env):
    client, _, _ = env
    login(client)
    assert client.get("/api/v1/cases/nope").status_code == 404
    assert client.get("/api/v1/cases/case42/versions/7/report.json").status_code == 404
    assert client.get(f"{V1}/fields/nope/image").status_code == 404
    r = client.post(f"{V1}/cells/999/class", json={"class": "Red", "version": 1})
    assert r.status_code == 404


def test_injection_strings_are_refused_or_inert(env, counter):
    client, db, _ = env
    login(client, "ada")
    for text in INJECTIONS:
        assert client.get("/api/v1/cases", params={"search": text}).json() == {"cases": []}
        assert client.get(f"/api/v1/cases/{quote(text, safe='')}").status_code == 404
        r = client.post(f"{V1}/cells/1/class", json={"class": text, "version": 1})
        assert r.status_code == 422
        r = client.post(f"{V1}/cells", json={"field": text, "box": [1, 1, 9, 9]})
        assert r.status_code == 404
        r = client.post("/api/v1/users", json={"name": text, "password": PASSWORD})
        assert r.status_code == 422
        assert client.get(f"{V1}/fields/{quote(text, safe='')}/image").status_code == 404
    assert client.get("/api/v1/cases", params={"since": "2025-13-40"}).status_code == 422
    png = encode(smear(64, 80, seed=3))
    for case_id in INJECTIONS:
        files = [("files", ("f.png", png, "image/png"))]
        r = client.post("/api/v1/cases", data={"case_id": case_id}, files=files)
        assert r.status_code == 422, r.text
    # a hostile file name is never a path: the field gets a safe name, the store its hash
    files = [("files", ("../../<script>x.png", png, "image/png"))]
    r = client.post("/api/v1/cases", data={"case_id": "web1"}, files=files)
    assert r.status_code == 201, r.text
    field = client.get("/api/v1/cases/web1").json()["fields"][0]
    assert "/" not in field["name"] and "<" not in field["name"]
    assert field["source_image"].endswith(".png") and "/" not in field["source_image"]
    assert db.store.path(field["image_sha256"], ".png").read_bytes() == png
    assert [c["case_id"] for c in client.get("/api/v1/cases").json()["cases"]] == ["web1", "case42"]


def test_only_an_admin_adds_users(env):
    client, _, _ = env
    login(client, "rex")
    body = {"name": "eve", "password": PASSWORD, "role": "reviewer", "lab": "default"}
    assert client.post("/api/v1/users", json=body).status_code == 403
    login(client, "ada")
    added = client.post("/api/v1/users", json=body).json()
    assert added == {"name": "eve", "role": "reviewer", "lab": "default"}
    login(client, "eve")
    assert client.get("/api/v1/auth/me").json()["role"] == "reviewer"


def test_pages_set_the_csrf_cookie_and_keep_the_csp(env):
    client, _, _ = env
    for path in ("/", "/login", "/review/case42", "/count"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.cookies.get("bmc_csrf")


def test_no_auth_acts_as_the_workstation_user(tmp_path, counter):
    db = case_db(tmp_path)
    app = case_app(counter, db, auth=AuthSettings(no_auth_user="ada"))
    with TestClient(app) as client:
        client.cookies.set("bmc_csrf", CSRF)
        client.headers["x-csrf-token"] = CSRF
        assert client.get("/api/v1/auth/me").json() == {
            "name": "ada",
            "role": "admin",
            "lab": None,
            "auth": False,
        }
        r = client.post(f"{V1}/cells/1/class", json={"class": "Red", "version": 1})
        assert r.json()["cell"]["reviewed_by"] == "ada"
    db.close()
