"""The case server under stress, on SQLite and on PostgreSQL (``any_db_url``): killed mid-review
(SIGKILL) and restarted, nothing acknowledged is lost and the database passes the integrity check
(``cases.integrity``: the database's own page checks, SQLite's integrity_check or PostgreSQL's
amcheck; every foreign key; every cell edit's audit entry; the images); 8 reviewers editing 8
cases at once (bounded, on localhost): no error, no lost update; two editing the same cell: the
later one is told (409)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bmc_detectron.cases.db import CaseDB
from tests.cases.helpers import integrity_problems
from tests.serve.case_helpers import CSRF, PASSWORD, case_app, case_db
from tests.serve.helpers import free_port, running_server, tiny_counter

httpx = pytest.importorskip("httpx")
pytest.importorskip("sqlalchemy", reason="pip install -e '.[cases]'")
ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["Lym", "Red", "Myelo"]


def client(url: str, user: str = "rex") -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=30, headers={"x-csrf-token": CSRF})
    c.cookies.set("bmc_csrf", CSRF)
    r = c.post("/api/v1/auth/login", json={"name": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return c


def start(url: str, port: int, images: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "tests.serve.case_server", url, str(port), str(images)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the case server did not start")


def test_killed_mid_review_loses_nothing_acknowledged(tmp_path, any_db_url):
    db = case_db(tmp_path, url=any_db_url)
    url, port, images = db.url, free_port(), db.store.root
    db.close()
    proc = start(url, port, images)
    acknowledged = {}
    try:
        c = client(f"http://127.0.0.1:{port}")
        v = "/api/v1/cases/case42/versions/1"
        stop = threading.Event()

        def review() -> None:
            version = {i: 1 for i in (1, 2, 3, 4)}
            n = 0
            while not stop.is_set():
                cell = 1 + n % 4
                name = CLASSES[n % 3]
                try:
                    r = c.post(
                        f"{v}/cells/{cell}/class", json={"class": name, "version": version[cell]}
                    )
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    version[cell] = r.json()["cell"]["version"]
                    acknowledged[cell] = (name, version[cell])
                n += 1

        worker = threading.Thread(target=review)
        worker.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        worker.join(timeout=30)
        assert len(acknowledged) == 4
    finally:
        proc.kill()
    proc = start(url, port, images)
    try:
        case = client(f"http://127.0.0.1:{port}").get("/api/v1/cases/case42").json()
        stored = {
            c["id"]: (c["reviewed_class"], c["version"]) for f in case["fields"] for c in f["cells"]
        }
        for cell, (name, version) in acknowledged.items():
            # what was acknowledged is there (a later write may have landed unacknowledged)
            assert stored[cell][1] >= version
            if stored[cell][1] == version:
                assert stored[cell][0] == name
    finally:
        proc.kill()
        proc.wait(timeout=10)
    db = CaseDB(url, images)
    with db.engine.connect() as conn:
        assert integrity_problems(conn) == []  # pages (amcheck as a PostgreSQL superuser), keys,
    report = db.check_integrity()  # every cell edit's audit entry; the images too
    assert report.ok, report.problems
    assert "2 field images in the store" in report.checked
    db.close()


def test_eight_reviewers_at_once_no_error_no_lost_update(tmp_path, any_db_url):
    db = case_db(tmp_path, cases=8, url=any_db_url)
    app = case_app(tiny_counter(), db, hosts=("127.0.0.1",))
    errors, rounds = [], 6
    with running_server(app) as url:

        def reviewer(i: int) -> None:
            c = client(url)
            base = f"/api/v1/cases/case{42 + i}/versions/1"
            version = 1
            for n in range(rounds):
                r = c.post(
                    f"{base}/cells/{1 + 4 * i}/class",
                    json={"class": CLASSES[n % 3], "version": version},
                )
                if r.status_code != 200:
                    errors.append((i, r.status_code, r.text))
                    return
                version = r.json()["cell"]["version"]

        threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        c = client(url)
        for i in range(8):
            case = c.get(f"/api/v1/cases/case{42 + i}").json()
            cell = next(x for f in case["fields"] for x in f["cells"] if x["id"] == 1 + 4 * i)
            assert (cell["reviewed_class"], cell["version"]) == (
                CLASSES[(rounds - 1) % 3],
                rounds + 1,
            )
        # two editors of one cell: the later one is told
        a, b = client(url, "rex"), client(url, "ada")
        first = a.post(
            "/api/v1/cases/case42/versions/1/cells/2/class", json={"class": "Lym", "version": 1}
        )
        later = b.post(
            "/api/v1/cases/case42/versions/1/cells/2/class", json={"class": "Red", "version": 1}
        )
        assert first.status_code == 200 and later.status_code == 409
    report = db.check_integrity()
    assert report.ok, report.problems
    db.close()
