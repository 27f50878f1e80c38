"""A count imported as a case exactly, found in the list, reviewed (each edit with its audit
row), protected against stale edits, signed read-only and re-opened as a new version."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select, text

from bmc_detectron.cases.errors import (
    CaseError,
    ConflictError,
    NotFoundError,
    ReadOnlyError,
    ReportError,
)
from bmc_detectron.cases.importer import import_report
from bmc_detectron.cases.models import AuditEntry
from bmc_detectron.cases.queries import case_differential, case_json, find_cases, get_case
from bmc_detectron.cases.review import add_cell, delete_cell, reclassify, reopen, sign
from bmc_detectron.cases.users import add_user, verify_password
from bmc_detectron.utils.io import file_sha256

from .helpers import CELLS, CLASSES, integrity_problems, make_report, new_db


@pytest.fixture
def db(tmp_path: Path, db_url: str):
    db = new_db(tmp_path, db_url)
    with db.session() as s:
        import_report(s, db.store, make_report(tmp_path), "importer")
        add_user(s, "alice", "correct horse", "reviewer", "admin0", "default")
        add_user(s, "bob", "battery staple", "admin", "admin0")
    yield db
    db.close()


def _audit(db) -> list:
    with db.session() as s:
        rows = s.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(a.user_name, a.action, a.entity, a.old, a.new) for a in rows]


def test_import_keeps_every_cell_exactly_and_stores_images_once(db, tmp_path: Path) -> None:
    with db.session() as s:
        case = case_json(get_case(s, "case42"))
    assert (case["case_id"], case["version"], case["status"]) == ("case42", 1, "counted")
    assert case["class_names"] == CLASSES and case["detector"] == "det.pth"
    assert [f["name"] for f in case["fields"]] == ["f1", "f2"]
    assert case["fields"][1]["flags"] == ["stain outside the training range"]
    for field in case["fields"]:
        got = [
            (
                c["box"],
                c["det_score"],
                c["det_class"],
                c["model_class"],
                c["model_prob"],
                c["probs"],
            )
            for c in field["cells"]
        ]
        want = [
            (list(c.box), c.det_score, c.det_class, c.label, c.prob, c.probs)
            for c in CELLS[field["name"]]
        ]
        assert got == want
        assert all(c["reviewed_class"] is None and c["version"] == 1 for c in field["cells"])
        stored = db.store.path(field["image_sha256"], ".png")
        assert file_sha256(stored) == field["image_sha256"]
        assert file_sha256(field["source_image"]) == field["image_sha256"]
    # a second case with the same images: stored once
    with db.session() as s:
        import_report(s, db.store, tmp_path / "case42", "importer", case_id="again")
    assert len(list(db.store.root.rglob("*.png"))) == 2


def test_bad_reports_are_refused_by_name(db, tmp_path: Path) -> None:
    with db.session() as s, pytest.raises(ReportError, match="nowhere: no such report folder"):
        import_report(s, db.store, tmp_path / "nowhere", "x")
    with db.session() as s, pytest.raises(CaseError, match="'case42' is in the database"):
        import_report(s, db.store, tmp_path / "case42", "x")
    bad = make_report(tmp_path, "bad", offset=1)
    (bad / "summary.json").write_text("{not json")
    with db.session() as s, pytest.raises(ReportError, match=r"bad/summary.json: corrupt"):
        import_report(s, db.store, bad, "x")
    gone = make_report(tmp_path, "gone", offset=2)
    (tmp_path / "inputs-gone" / "f2.png").unlink()
    with (
        db.session() as s,
        pytest.raises(ReportError, match="field 'f2': its image .*f2.png is not there"),
    ):
        import_report(s, db.store, gone, "x")
    with db.session() as s, pytest.raises(CaseError, match="case id '../x'"):
        import_report(s, db.store, tmp_path / "case42", "x", case_id="../x")
    with db.session() as s:
        assert [c.case_id for c in find_cases(s)] == ["case42"]  # nothing half-imported


def test_images_found_where_the_count_ran_or_under_inputs_root(db, tmp_path: Path) -> None:
    report = make_report(tmp_path, "rel", offset=4)
    for field in ("f1", "f2"):  # as a count run from tmp_path records them: relative paths
        path = report / "cells" / f"{field}.json"
        record = json.loads(path.read_text())
        record["image"] = f"inputs-rel/{field}.png"
        path.write_text(json.dumps(record))
    with db.session() as s:  # found under a parent of the report folder
        assert len(import_report(s, db.store, report, "x").fields) == 2
    moved = tmp_path / "archive" / "inputs"
    moved.parent.mkdir()
    (tmp_path / "inputs-rel").rename(moved)
    with db.session() as s, pytest.raises(ReportError, match="inputs-rel/f1.png is not there"):
        import_report(s, db.store, report, "x", case_id="rel2")
    with db.session() as s:
        assert import_report(s, db.store, report, "x", "rel2", inputs_root=moved).case_id == "rel2"
    (moved / "f2.png").write_bytes((moved / "f1.png").read_bytes())
    with db.session() as s, pytest.raises(ReportError, match="f2.png changed since the count"):
        import_report(s, db.store, report, "x", case_id="rel3", inputs_root=moved)


def test_list_searches_by_id_status_and_date(db, tmp_path: Path) -> None:
    with db.session() as s:
        import_report(s, db.store, make_report(tmp_path, "B-2025_7", offset=3), "x")
        today = dt.datetime.now(dt.timezone.utc).date()
        assert [c.case_id for c in find_cases(s, search="b-2025")] == ["B-2025_7"]
        assert [c.case_id for c in find_cases(s, search="%")] == []  # taken literally
        assert find_cases(s, search="case\x0042") == []  # a NUL: no case (PostgreSQL refuses it)
        assert find_cases(s, search="'; DROP TABLE cases; --") == []
        assert len(find_cases(s)) == 2
        assert len(find_cases(s, status="counted", since=today, until=today)) == 2
        assert find_cases(s, until=today - dt.timedelta(days=1)) == []
        assert find_cases(s, status="signed") == []
        with pytest.raises(CaseError, match="status 'done'"):
            find_cases(s, status="done")
    with db.session() as s, pytest.raises(NotFoundError, match="case 'nope' is not"):
        get_case(s, "nope")
    with db.session() as s, pytest.raises(NotFoundError, match="is not in the case database"):
        get_case(s, "case42\x00")


def test_edits_write_exact_audit_rows_and_the_differential(db) -> None:
    with db.session() as s:
        case = get_case(s, "case42")
        lym, red, other = (c.id for c in case.fields[0].cells)
        cell = reclassify(s, case, red, "Myelo", 1, "alice")
        assert (cell.reviewed_class, cell.version, cell.reviewer.name) == ("Myelo", 2, "alice")
        assert case.status == "in_review"
        delete_cell(s, case, other, 1, "bob")
        added = add_cell(s, case, "f2", (40, 20, 60, 40), "Red", "alice")
        assert (added.added, added.det_score, added.reviewed_class) == (True, None, "Red")
        with pytest.raises(CaseError, match="not inside field 'f2'"):
            add_cell(s, case, "f2", (40, 20, 70, 40), "Red", "alice")
        with pytest.raises(CaseError, match="class 'Baso' is not a class"):
            reclassify(s, case, lym, "Baso", 1, "alice")
        with pytest.raises(NotFoundError, match="unknown user 'eve'"):
            reclassify(s, case, lym, "Red", 1, "eve")
        diff = case_differential(case)
    box = lambda c: [c[0], c[1], c[2], c[3]]  # noqa: E731
    red_box, other_box = box(CELLS["f1"][1].box), box(CELLS["f1"][2].box)
    before = {"model_class": "Red", "reviewed_class": None, "deleted": False, "added": False}
    as_other = {**before, "model_class": "Other"}
    assert _audit(db)[3:] == [
        ("alice", "reclassify", "cell", {"box": red_box, **before, "version": 1},
         {"box": red_box, **before, "reviewed_class": "Myelo", "version": 2}),
        ("bob", "delete", "cell", {"box": other_box, **as_other, "version": 1},
         {"box": other_box, **as_other, "deleted": True, "version": 2}),
        ("alice", "add", "cell", None,
         {"box": [40.0, 20.0, 60.0, 40.0], "model_class": None, "reviewed_class": "Red",
          "deleted": False, "added": True, "version": 1}),
    ]  # fmt: skip
    model = {r["class"]: r["count"] for r in diff["model"]["classes"]}
    reviewed = {r["class"]: r["count"] for r in diff["reviewed"]["classes"]}
    # model: Lym 0.8, Red 0.4 (uncertain), Other, Myelo 0.9
    assert model == {"Lym": 1, "Red": 0, "Myelo": 1} and diff["model"]["other"] == 1
    assert diff["model"]["uncertain"]["total"] == 1
    # reviewed: Lym, Myelo (was Red), Other deleted, Myelo, Red (added)
    assert reviewed == {"Lym": 1, "Red": 1, "Myelo": 2} and diff["reviewed"]["other"] == 0
    assert diff["reviewed"]["uncertain"]["total"] == 0
    assert diff["reviewed"]["me"]["ratio"] == 2.0


def test_a_stale_row_version_is_a_conflict_never_an_overwrite(db) -> None:
    with db.session() as s:
        case = get_case(s, "case42")
        cell_id = case.fields[1].cells[0].id
        reclassify(s, case, cell_id, "Lym", 1, "alice")
    with db.session() as s, pytest.raises(ConflictError, match=r"version 2, you edited version 1"):
        reclassify(s, get_case(s, "case42"), cell_id, "Red", 1, "bob")
    # two sessions read version 2; the first to write wins, the second is told (its UPDATE
    # matches no row: the row version is checked by the database, not only by the caller)
    with db.session() as first, db.session() as second:
        case_a, case_b = get_case(first, "case42"), get_case(second, "case42")
        reclassify(first, case_a, cell_id, "Red", 2, "alice")
        first.commit()
        with pytest.raises(ConflictError, match="changed by someone else meanwhile"):
            delete_cell(second, case_b, cell_id, 2, "bob")
    with db.session() as s:
        cell = get_case(s, "case42").fields[1].cells[0]
        assert (cell.reviewed_class, cell.deleted, cell.version) == ("Red", False, 3)
    assert [a[1] for a in _audit(db)[3:]] == ["reclassify", "reclassify"]


def test_signed_case_is_read_only_and_reopen_keeps_it(db) -> None:
    with db.session() as s:
        case = get_case(s, "case42")
        cell_id = case.fields[0].cells[1].id
        reclassify(s, case, cell_id, "Lym", 1, "alice")
        sign_off = sign(s, case, "alice")
        assert sign_off.counts["reviewed"]["classes"] == {"Lym": 2, "Red": 0, "Myelo": 1}
        assert sign_off.counts["model"]["classes"] == {"Lym": 1, "Red": 0, "Myelo": 1}
    with db.session() as s:
        case = get_case(s, "case42")
        assert case.status == "signed"
        for edit in (
            lambda: reclassify(s, case, cell_id, "Red", 2, "bob"),
            lambda: delete_cell(s, case, cell_id, 2, "bob"),
            lambda: add_cell(s, case, "f1", (1, 1, 5, 5), "Red", "bob"),
            lambda: sign(s, case, "bob"),
        ):
            with pytest.raises(ReadOnlyError, match="version 1 is signed: read-only"):
                edit()
        new = reopen(s, case, "bob")
        assert (new.version, new.status, new.parent_id) == (2, "in_review", case.id)
        moved = new.fields[0].cells[1]
        assert (moved.reviewed_class, moved.version, moved.reviewer.name) == ("Lym", 1, "alice")
        reclassify(s, new, moved.id, "Red", 1, "bob")
        with pytest.raises(CaseError, match="has a newer version"):
            reopen(s, case, "bob")
    with db.session() as s:
        old, latest = get_case(s, "case42", 1), get_case(s, "case42")
        assert old.fields[0].cells[1].reviewed_class == "Lym" and old.status == "signed"
        assert latest.version == 2 and latest.fields[0].cells[1].reviewed_class == "Red"
        assert [c.version for c in find_cases(s, all_versions=True)] == [2, 1]
        assert [c.version for c in find_cases(s)] == [2]
        signed = json.loads(json.dumps(case_json(old)))["sign_offs"]
        assert [x["user"] for x in signed] == ["alice"]
    with db.engine.connect() as conn:
        assert integrity_problems(conn) == []


def test_users_have_argon2_hashes_and_checked_names(db) -> None:
    with db.session() as s:
        assert verify_password(s, "alice", "correct horse")
        assert not verify_password(s, "alice", "wrong horse")
        assert not verify_password(s, "nobody", "correct horse")
        assert not verify_password(s, "alice\x00", "correct horse")
        hashed = s.execute(text("SELECT password_hash FROM users WHERE name='alice'")).scalar()
        assert hashed.startswith("$argon2id$")
        for name, password, role, why in [
            ("alice", "long enough", "reviewer", "exists already"),
            ("x'; DROP TABLE users;--", "long enough", "reviewer", "letters, digits"),
            ("carol", "short", "reviewer", "shorter than 8"),
            ("carol", "long enough", "root", "role 'root'"),
        ]:
            with pytest.raises(CaseError, match=why):
                add_user(s, name, password, role, "admin0", "default")
        with pytest.raises(CaseError, match="reviewer 'carol' needs a lab"):
            add_user(s, "carol", "long enough", "reviewer", "admin0")
        with pytest.raises(CaseError, match="lab '../x': use letters"):
            add_user(s, "carol", "long enough", "reviewer", "admin0", "../x")
