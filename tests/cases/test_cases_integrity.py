"""The integrity check (``cases.integrity``, ``bmc cases check``) on SQLite and PostgreSQL: a
reviewed, signed, re-opened case is whole; each kind of damage is named (an image gone from the
store, a cell edit without its audit entry, a signed version without a sign-off and a sign-off of
an unsigned one, a reference to no row)."""

from __future__ import annotations

from sqlalchemy import text

from bmc_detectron.cases.importer import import_report
from bmc_detectron.cases.queries import get_case
from bmc_detectron.cases.review import reclassify, reopen, sign
from bmc_detectron.cases.users import add_user
from bmc_detectron.tools import cases as cases_tool

from .helpers import integrity_problems, make_report, new_db


def _superuser(conn) -> bool:
    return conn.dialect.name == "sqlite" or bool(
        conn.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar()
    )


def test_a_reviewed_case_is_whole_and_each_damage_is_named(tmp_path, db_url, capsys):
    db = new_db(tmp_path, db_url)
    with db.session() as s:
        add_user(s, "rex", "correct horse 42", "reviewer", "test", "default")
        import_report(s, db.store, make_report(tmp_path / "reports"), "test")
    with db.session() as s:
        case = get_case(s, "case42")
        cell = case.fields[0].cells[0].id
        reclassify(s, case, cell, "Red", 1, "rex")
        reclassify(s, case, cell, "Myelo", 2, "rex")
        sign(s, case, "rex")
        v1, v2 = case.id, reopen(s, case, "rex").id
    argv = ["check", "--db", db.url, "--images", str(db.store.root)]
    assert cases_tool.main(argv) == 0
    out = capsys.readouterr().out
    assert "whole" in out and "foreign keys" in out and "2 field images" in out
    with db.engine.connect() as conn:
        assert integrity_problems(conn) == []  # amcheck's pages too, as a PostgreSQL superuser
        damage_references = _superuser(conn)

    image = next(db.store.root.rglob("*.png"))
    image.unlink()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE cells SET version = version + 1 WHERE id = :c"), {"c": cell})
        conn.execute(text("UPDATE cases SET status = 'in_review' WHERE id = :v"), {"v": v1})
        conn.execute(text("UPDATE cases SET status = 'signed' WHERE id = :v"), {"v": v2})
    if damage_references:  # a reference to no row, past the database's own enforcement
        with db.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            replica = "SET LOCAL session_replication_role = replica"  # no key triggers
            conn.exec_driver_sql("PRAGMA foreign_keys = OFF" if sqlite else replica)
            conn.execute(
                text(
                    "INSERT INTO cells (id, field_id, x0, y0, x1, y1, det_class, deleted, added, "
                    "version) VALUES (990, 999, 1, 1, 2, 2, 'cell', false, false, 1)"
                )
            )
            conn.commit()
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys = ON")
    report = db.check_integrity()
    expected = [
        f"cells with fewer audit entries than edits: {cell}",
        f"signed case versions without a sign-off: {v2}",
        "sign-offs of case versions not signed: 1",
        f"field images missing from {db.store.root}: {image.stem}.png",
    ]
    if damage_references:
        expected.insert(0, "cells.field_id names no fields row, in cells rows: 990")
    assert report.problems == expected and not report.ok
    assert cases_tool.main(argv) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM: signed case versions without a sign-off: {v2}" in out
    assert f"{len(expected)} problem(s)" in out
    db.close()
