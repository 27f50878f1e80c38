"""Cases owned by a lab, through the web app: two labs, two reviewers, each lists and opens only
their lab's cases; any route of the other lab's case (read, edit, sign, export, report) is 403;
an admin sees all; a case counted in the page takes the uploader's lab."""

from __future__ import annotations

import pytest

from tests.serve.helpers import encode, smear, tiny_counter

pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")
pytest.importorskip("sqlalchemy", reason="pip install -e '.[cases]'")
from fastapi.testclient import TestClient  # noqa: E402

from bmc_detectron.cases.importer import import_report  # noqa: E402
from bmc_detectron.cases.users import add_user  # noqa: E402
from tests.cases.helpers import make_report, new_db  # noqa: E402
from tests.serve.case_helpers import PASSWORD, case_app, login  # noqa: E402


def routes(case_id: str, cell: int) -> list:
    """(method, path, body) of every route family on one case (version 1, one of its cells)."""
    v1 = f"/api/v1/cases/{case_id}/versions/1"
    return [
        ("get", f"/api/v1/cases/{case_id}", None),  # read
        ("get", f"{v1}/fields/f1/image", None),
        ("post", f"{v1}/cells/{cell}/class", {"class": "Red", "version": 1}),  # edit
        ("post", f"{v1}/cells/{cell}/delete", {"version": 1}),
        ("post", f"{v1}/cells/{cell}/restore", {"reviewed_class": None, "version": 1}),
        ("post", f"{v1}/cells", {"field": "f1", "box": [1, 1, 9, 9], "class": "Red"}),
        ("post", f"{v1}/sign", {}),  # sign
        ("post", f"{v1}/reopen", {}),
        ("get", f"/api/v1/cases/{case_id}/coco.json", None),  # export
        ("get", f"{v1}/report.json", None),  # report
        ("get", f"{v1}/report.csv", None),
        ("get", f"{v1}/report.html", None),
    ]


@pytest.fixture(scope="module")
def counter():
    return tiny_counter()


@pytest.fixture()
def client(tmp_path, counter):
    """caseA (lab-a, cells 1-4) and caseB (lab-b, cells 5-8); amy reviews lab-a, ben lab-b,
    ada is an admin without a lab."""
    db = new_db(tmp_path)
    with db.session() as s:
        for name, lab, offset in (("caseA", "lab-a", 0), ("caseB", "lab-b", 3)):
            report = make_report(tmp_path / "reports", name, offset)
            import_report(s, db.store, report, "test", lab=lab)
        add_user(s, "amy", PASSWORD, "reviewer", "test", "lab-a")
        add_user(s, "ben", PASSWORD, "reviewer", "test", "lab-b")
        add_user(s, "ada", PASSWORD, "admin", "test")
    with TestClient(case_app(counter, db)) as client:
        yield client
    db.close()


def listed(client) -> list:
    return sorted((c["case_id"], c["lab"]) for c in client.get("/api/v1/cases").json()["cases"])


def test_each_reviewer_sees_only_their_lab_and_the_admin_sees_all(client):
    login(client, "amy")
    assert listed(client) == [("caseA", "lab-a")]
    assert client.get("/api/v1/auth/me").json()["lab"] == "lab-a"
    login(client, "ben")
    assert listed(client) == [("caseB", "lab-b")]
    login(client, "ada")
    assert listed(client) == [("caseA", "lab-a"), ("caseB", "lab-b")]
    assert client.get("/api/v1/cases/caseA").json()["lab"] == "lab-a"


def test_the_list_filtered_by_lab(client):
    def labs(lab: str):
        r = client.get("/api/v1/cases", params={"lab": lab})
        return r.status_code, sorted(c["lab"] for c in r.json().get("cases", []))

    login(client, "ada")  # an admin filters to any lab
    assert labs("lab-b") == (200, ["lab-b"]) and labs("lab-a") == (200, ["lab-a"])
    assert labs("") == (200, ["lab-a", "lab-b"]) and labs("lab-c") == (200, [])
    assert labs("../etc")[0] == 422
    login(client, "amy")  # a reviewer: their own lab only
    assert labs("lab-a") == (200, ["lab-a"]) and labs("") == (200, ["lab-a"])
    r = client.get("/api/v1/cases", params={"lab": "lab-b"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("user,theirs,other", [("amy", 1, "caseB"), ("ben", 5, "caseA")])
def test_every_route_of_the_other_labs_case_is_403(client, user, theirs, other):
    login(client, user)
    other_cell = 5 if other == "caseB" else 1
    for method, path, body in routes(other, other_cell):
        r = getattr(client, method)(path, **({} if body is None else {"json": body}))
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "forbidden", path
        assert "another lab" in r.json()["error"]["message"]
    login(client, "ada")  # nothing of the other case was changed
    case = client.get(f"/api/v1/cases/{other}").json()
    assert case["status"] == "counted" and case["version"] == 1
    assert [len(f["cells"]) for f in case["fields"]] == [3, 1]
    login(client, user)  # their own case: the same routes work
    mine = "caseA" if other == "caseB" else "caseB"
    for method, path, body in routes(mine, theirs)[:3]:
        r = getattr(client, method)(path, **({} if body is None else {"json": body}))
        assert r.status_code == 200, (path, r.text)
    assert client.post(f"/api/v1/cases/{mine}/versions/1/sign").status_code == 200
    coco = client.get(f"/api/v1/cases/{mine}/coco.json")
    assert coco.status_code == 200 and coco.json()["info"]["bmc_cases"][0]["reviewer"] == user


def test_a_case_counted_in_the_page_takes_the_uploaders_lab(client):
    png = encode(smear(64, 80, seed=3))

    def upload(case_id: str, lab: str = ""):
        files = [("files", ("f.png", png, "image/png"))]
        return client.post("/api/v1/cases", data={"case_id": case_id, "lab": lab}, files=files)

    login(client, "amy")
    assert upload("webA").json()["lab"] == "lab-a"
    r = upload("webX", lab="lab-b")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    login(client, "ada")
    assert upload("webB", lab="lab-b").json()["lab"] == "lab-b"
    assert upload("webD").json()["lab"] == "default"  # an admin without a lab
    login(client, "ben")
    assert listed(client) == [("caseB", "lab-b"), ("webB", "lab-b")]


def test_admin_adds_a_reviewer_to_a_lab(client):
    login(client, "ada")
    body = {"name": "cy", "password": PASSWORD, "role": "reviewer"}
    r = client.post("/api/v1/users", json=body)
    assert r.status_code == 422 and "needs a lab" in r.json()["error"]["message"]
    r = client.post("/api/v1/users", json={**body, "lab": "lab-b"})
    assert r.json() == {"name": "cy", "role": "reviewer", "lab": "lab-b"}
    login(client, "cy")
    assert listed(client) == [("caseB", "lab-b")]
