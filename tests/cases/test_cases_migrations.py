"""The case database's schema: created by the migrations as the models say, checked at every
open (empty, older, newer), upgraded on a copy, and its audit log append-only in the database."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DatabaseError

from bmc_detectron.cases.db import (
    MIGRATIONS,
    CaseDB,
    alembic_config,
    make_engine,
    revision_of,
    upgrade,
)
from bmc_detectron.cases.errors import SchemaError
from bmc_detectron.cases.importer import import_report
from bmc_detectron.cases.models import Base

from .helpers import integrity_problems, make_report, new_db
from .postgres import copy_database

# A later schema revision, as a future bmc-detectron would ship it (test only).
NEXT_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "0099"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("note")
"""


@pytest.fixture
def later_migrations(tmp_path: Path) -> Path:
    """The package's migrations plus revision 0099."""
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "0099_note.py").write_text(NEXT_REVISION)
    return folder


def test_upgrade_from_empty_gives_the_models_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    assert revision_of(engine) is None
    assert upgrade(engine) == "0004"
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        tables = set(inspect(conn).get_table_names())
        assert {
            "cases",
            "fields",
            "cells",
            "users",
            "sign_offs",
            "audit_log",
            "login_failures",
        } <= tables
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert integrity_problems(conn) == []
    assert upgrade(engine) == "0004"  # again: nothing to do
    engine.dispose()


def test_an_empty_database_is_refused_with_the_way_out(db_url: str) -> None:
    with pytest.raises(SchemaError, match="no case database there yet; run `bmc cases init`"):
        CaseDB(db_url)


def test_older_database_refused_then_upgraded_on_a_copy(
    tmp_path: Path, db_url: str, later_migrations: Path
) -> None:
    db = new_db(tmp_path, db_url)
    with db.session() as s:
        import_report(s, db.store, make_report(tmp_path), "tester")
    db.close()
    with copy_database(db_url) as url:
        with pytest.raises(SchemaError, match=r"revision 0004, older .* run `bmc cases upgrade`"):
            CaseDB(url, migrations=later_migrations)
        older = CaseDB(url, check=False, migrations=later_migrations)
        assert older.upgrade() == "0099"
        older.close()
        db = CaseDB(url, migrations=later_migrations)  # now current: opens
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT case_id, note FROM cases")).all() == [("case42", None)]
            assert conn.execute(text("SELECT count(*) FROM cells")).scalar() == 4
            assert integrity_problems(conn) == []
        db.close()
        original = make_engine(db_url)
        assert revision_of(original) == "0004"  # the original untouched
        original.dispose()
        with pytest.raises(SchemaError, match=r"revision 0099, unknown to this .*Refused"):
            CaseDB(url)  # this package's head is 0004: a newer database is refused
        copy = make_engine(url)
        with pytest.raises(SchemaError, match="Refused"):
            upgrade(copy)
        copy.dispose()


def test_audit_log_is_append_only_in_the_database(tmp_path: Path, db_url: str) -> None:
    db = new_db(tmp_path, db_url)
    with db.session() as s:
        import_report(s, db.store, make_report(tmp_path), "tester")
    for statement in ("UPDATE audit_log SET user_name = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError, match="append-only"):
            with db.engine.begin() as conn:
                conn.execute(text(statement))
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT user_name FROM audit_log")).all() == [("tester",)]
    db.close()


# rows as revision 0001 held them (no lab anywhere)
OLD_ROWS = [
    "INSERT INTO users (id, name, role, password_hash, created) "
    "VALUES (1, 'olga', 'reviewer', 'x', '2025-01-02 03:04:05')",
    "INSERT INTO cases (id, case_id, version, status, created, source, detector, classifier, "
    "class_names, uncertain_below, settings) VALUES (1, 'old1', 1, 'in_review', "
    "'2025-01-02 03:04:05', 'r', 'd', 'c', '[\"Lym\", \"Red\"]', 0.5, '{}')",
    "INSERT INTO fields (id, case_pk, name, image_sha256, image_suffix, source_image, height, "
    "width, flags) VALUES (1, 1, 'f1', '" + "a" * 64 + "', '.png', 'f1.png', 48, 64, '[]')",
    "INSERT INTO cells (id, field_id, x0, y0, x1, y1, det_class, model_class, reviewed_class, "
    "deleted, added, reviewed_by, version) VALUES (1, 1, 1, 2, 3, 4, 'cell', 'Lym', 'Red', "
    "false, false, 1, 2)",
    "INSERT INTO audit_log (at, user_name, case_pk, entity, entity_id, action) "
    "VALUES ('2025-01-02 03:04:05', 'olga', 1, 'cell', 1, 'reclassify')",
]


def _old_database_upgraded(
    db_url: str, images: Path, capsys, revision: str, extra: tuple = ()
) -> CaseDB:
    """A database at ``revision`` holding :data:`OLD_ROWS` (and the ``extra`` statements):
    refused by :class:`CaseDB`, upgraded by ``bmc cases upgrade``, then opened."""
    from bmc_detectron.tools import cases as cases_tool

    engine = make_engine(db_url)
    assert upgrade(engine, revision) == revision
    with engine.begin() as conn:
        for statement in [*OLD_ROWS, *extra]:
            conn.execute(text(statement))
    engine.dispose()
    older = rf"revision {revision}, older than this bmc-detectron's 0004"
    with pytest.raises(SchemaError, match=older):
        CaseDB(db_url)
    assert cases_tool.main(["upgrade", "--db", db_url, "--images", str(images)]) == 0
    assert f"revision {revision} -> 0004" in capsys.readouterr().out
    return CaseDB(db_url, images)  # current now


def test_labs_revision_upgrades_a_0001_database_keeping_its_data(
    tmp_path: Path, db_url: str, capsys
) -> None:
    from bmc_detectron.cases.queries import find_cases, get_case

    # the schema before labs, built by Alembic
    db = _old_database_upgraded(db_url, tmp_path / "images", capsys, "0001")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT name, lab FROM users")).all() == [("olga", "default")]
        assert conn.execute(text("SELECT case_id, lab, status FROM cases")).all() == [
            ("old1", "default", "in_review")
        ]
        cell = conn.execute(text("SELECT reviewed_class, version FROM cells")).all()
        assert cell == [("Red", 2)]
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() == 1
        assert integrity_problems(conn) == []
        assert "ix_cases_lab" in {i["name"] for i in inspect(conn).get_indexes("cases")}
    with pytest.raises(DatabaseError, match="append-only"):  # the triggers survived
        with db.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log"))
    with db.session() as s:
        assert [c.case_id for c in find_cases(s, lab="default")] == ["old1"]
        assert find_cases(s, lab="hema") == []
        assert get_case(s, "old1", lab="default").fields[0].cells[0].reviewed_class == "Red"
    db.close()


def test_session_epoch_revision_upgrades_a_0002_database_keeping_its_data(
    tmp_path: Path, db_url: str, capsys
) -> None:
    from bmc_detectron.cases.users import end_sessions, get_user, verify_password

    labs = ("UPDATE users SET lab = 'hema'", "UPDATE cases SET lab = 'hema'")
    # labs, no session epoch
    db = _old_database_upgraded(db_url, tmp_path / "im", capsys, "0002", labs)
    with db.engine.connect() as conn:
        users = conn.execute(text("SELECT name, lab, role, session_epoch FROM users")).all()
        assert users == [("olga", "hema", "reviewer", 0)]
        assert conn.execute(text("SELECT case_id, lab, status FROM cases")).all() == [
            ("old1", "hema", "in_review")
        ]
        assert conn.execute(text("SELECT reviewed_class, version FROM cells")).all() == [("Red", 2)]
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() == 1
        assert integrity_problems(conn) == []
    with db.session() as s:
        assert not verify_password(s, "olga", "whatever")  # the old hash row is untouched
        assert end_sessions(s, "olga", "root") == 1
    with db.session() as s:
        assert get_user(s, "olga").session_epoch == 1
    with pytest.raises(DatabaseError, match="append-only"):  # the triggers survived
        with db.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log"))
    db.close()


def test_login_failures_revision_upgrades_a_0003_database_and_downgrades(
    tmp_path: Path, db_url: str, capsys
) -> None:
    from bmc_detectron.cases.logins import LoginLimit

    epochs = ("UPDATE users SET session_epoch = 2",)
    # session epochs, the login limit in memory
    db = _old_database_upgraded(db_url, tmp_path / "im", capsys, "0003", epochs)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT name, session_epoch FROM users")).all() == [("olga", 2)]
        assert conn.execute(text("SELECT reviewed_class, version FROM cells")).all() == [("Red", 2)]
        assert conn.execute(text("SELECT count(*) FROM login_failures")).scalar() == 0
        indexes = {i["name"] for i in inspect(conn).get_indexes("login_failures")}
        assert indexes == {"ix_login_failures_at", "ix_login_failures_kind_subject_at"}
        assert integrity_problems(conn) == []
    limit = LoginLimit(1, 60.0)
    with db.session() as s:
        limit.failed(s, "olga", "10.0.0.1")
    with db.session() as s:
        assert limit.retry_after(s, "olga", "10.0.0.2") == 60
    with pytest.raises(DatabaseError):  # a kind the limit does not know: refused
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO login_failures (kind, subject, at) "
                              "VALUES ('port', 'x', '2025-01-01 00:00:00')"))  # fmt: skip
    config = alembic_config()
    with db.engine.begin() as conn:  # back: the table goes, the rest stays
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with db.engine.connect() as conn:
        assert "login_failures" not in inspect(conn).get_table_names()
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() == 2
    assert revision_of(db.engine) == "0003"
    db.close()
