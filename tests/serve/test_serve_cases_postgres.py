"""The web app's review on a PostgreSQL case database (a lab server; :mod:`tests.cases.postgres`
starts a throwaway one, or uses ``$BMC_TEST_POSTGRES_URL``): login, the case list, open a case,
reclassify, a stale edit told (409), sign, the signed case read-only, the report; text the
database cannot hold (a NUL byte) refused like any other bad input."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.serve.helpers import tiny_counter

pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")
pytest.importorskip("sqlalchemy", reason="pip install -e '.[cases]'")
from fastapi.testclient import TestClient  # noqa: E402

from tests.cases.postgres import fresh_database, postgres_server  # noqa: E402, F401
from tests.serve.case_helpers import CSRF, PASSWORD, case_app, case_db, login  # noqa: E402

V1 = "/api/v1/cases/case42/versions/1"


@pytest.fixture()
def client(tmp_path, postgres_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for url in fresh_database(postgres_server):
        db = case_db(tmp_path, url=url)
        assert db.engine.dialect.name == "postgresql"
        with TestClient(case_app(tiny_counter(), db)) as client:
            yield client
        db.close()


def test_review_and_sign_a_case_on_postgresql(client):
    login(client)
    listed = client.get("/api/v1/cases", params={"search": "CASE4"}).json()["cases"]
    assert [(c["case_id"], c["status"]) for c in listed] == [("case42", "counted")]
    case = client.get("/api/v1/cases/case42").json()
    first = case["fields"][0]["cells"][1]
    assert (first["model_class"], first["reviewed_class"], first["version"]) == ("Red", None, 1)
    cell = f"{V1}/cells/{first['id']}"
    r = client.post(f"{cell}/class", json={"class": "Lym", "version": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["cell"]["reviewed_class"], r.json()["cell"]["reviewed_by"]) == ("Lym", "rex")
    stale = client.post(f"{cell}/class", json={"class": "Myelo", "version": 1})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
    assert client.get("/api/v1/cases", params={"status": "in_review"}).json()["cases"]
    signed = client.post(f"{V1}/sign")
    assert signed.status_code == 200 and not signed.json()["editable"]
    r = client.post(f"{cell}/class", json={"class": "Red", "version": 2})
    assert r.status_code == 409 and r.json()["error"]["code"] == "read_only"
    report = client.get(f"{V1}/report.json").json()
    assert report["signed"][0]["reviewer"] == "rex"
    rows = {r["class"]: (r["model"], r["reviewer"]) for r in report["classes"]}
    assert rows["Lym"] == (1, 2) and rows["Red"] == (0, 0)
    reopened = client.post(f"{V1}/reopen").json()
    assert reopened["version"] == 2 and reopened["editable"]
    again = client.get("/api/v1/cases/case42").json()["fields"][0]["cells"][1]
    assert (again["reviewed_class"], again["version"]) == ("Lym", 1)


def test_a_nul_byte_is_refused_not_a_server_error(client):
    login(client, "ada")
    text = "a\x00b"
    assert client.get("/api/v1/cases", params={"search": text}).json() == {"cases": []}
    assert client.get(f"/api/v1/cases/{quote(text, safe='')}").status_code == 404
    assert client.get(f"{V1}/fields/{quote(text, safe='')}/image").status_code == 404
    r = client.post(f"{V1}/cells", json={"field": text, "box": [1, 1, 9, 9]})
    assert r.status_code == 404
    r = client.post("/api/v1/users", json={"name": text, "password": PASSWORD})
    assert r.status_code == 422
    client.cookies.clear()
    client.cookies.set("bmc_csrf", CSRF)
    r = client.post("/api/v1/auth/login", json={"name": text, "password": PASSWORD})
    assert r.status_code == 401
