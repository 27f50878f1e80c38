"""Whether a case database is whole: the same promises checked on SQLite and on PostgreSQL.

:func:`check_integrity` runs, in one read transaction:

* the database's own checks of its pages: SQLite ``PRAGMA integrity_check``; PostgreSQL amcheck
  (``verify_heapam`` of every table, ``bt_index_check`` of every B-tree index) where the
  extension is installed (``CREATE EXTENSION amcheck``, or ``create_amcheck=True`` for a role
  allowed to), else said in :attr:`IntegrityReport.skipped`; no constraint left unvalidated;
* every foreign key holds: each reference of every table of the models (a cell's field, a
  field's case, a sign-off's case and user, an audit entry's case, ...) names a row that is there,
  asked with the same query on both databases (SQLite does not enforce a key when foreign keys
  were off, PostgreSQL's ``NOT VALID`` constraints do not cover older rows);
* every cell edit has its trail: a cell at row version *v* has at least *v* - 1 audit entries
  (each reclassify, delete, undo raises the version by one and writes one entry in the same
  transaction); a case version is ``signed`` exactly when it has a sign-off;
* with an image store: every field's image is there.

The audit log's ids are not checked for gaps: PostgreSQL's sequences skip the ids of rolled-back
transactions, so a gap is no sign of loss there; the per-cell trail is what must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from sqlalchemy import Connection, and_, func, select

from bmc_detectron.cases.models import AuditEntry, Base, Case, Cell, Field, SignOff
from bmc_detectron.cases.store import ImageStore

MAX_LISTED = 20  # rows named per kind of problem (the rest counted)


@dataclass
class IntegrityReport:
    """What :func:`check_integrity` found: ``problems`` (empty: whole), what it ``checked``, and
    what it could not check (``skipped``, with the reason)."""

    problems: List[str] = field(default_factory=list)
    checked: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self, where: str) -> str:
        """The report as ``bmc cases check`` prints it, its last line naming ``where``."""
        lines = [f"checked: {x}" for x in self.checked]
        lines += [f"not checked: {x}" for x in self.skipped]
        lines += [f"PROBLEM: {x}" for x in self.problems]
        verdict = "whole" if self.ok else f"{len(self.problems)} problem(s)"
        return "\n".join(lines + [f"{where}: {verdict}"])


def _listed(what: str, ids: List) -> List[str]:
    if not ids:
        return []
    more = f" (and {len(ids) - MAX_LISTED} more)" if len(ids) > MAX_LISTED else ""
    return [f"{what}: {', '.join(str(i) for i in ids[:MAX_LISTED])}{more}"]


def _sqlite_pages(conn: Connection, report: IntegrityReport) -> None:
    rows = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check")]
    report.problems += [] if rows == ["ok"] else [f"sqlite integrity_check: {r}" for r in rows]
    report.checked.append("SQLite integrity_check")


def _postgres_pages(conn: Connection, report: IntegrityReport, create_amcheck: bool) -> None:
    unvalidated = conn.exec_driver_sql(
        "SELECT conname FROM pg_constraint WHERE connamespace = current_schema()::regnamespace "
        "AND NOT convalidated"
    ).scalars()
    report.problems += [f"constraint {name} not validated" for name in unvalidated]
    if create_amcheck:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS amcheck")
    if not conn.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").first():
        report.skipped.append("PostgreSQL pages: the amcheck extension is not installed")
        return
    relations = conn.exec_driver_sql(
        "SELECT c.oid::regclass::text, c.relkind FROM pg_class c JOIN pg_am a ON a.oid = c.relam "
        "WHERE c.relnamespace = current_schema()::regnamespace AND a.amname IN ('heap', 'btree') "
        "AND c.relpersistence <> 't'"
    ).all()
    for name, kind in relations:
        if kind == "i":
            conn.exec_driver_sql("SELECT bt_index_check(%(r)s::regclass, true)", {"r": name})
        else:
            rows = conn.exec_driver_sql(
                "SELECT blkno, offnum, msg FROM verify_heapam(%(r)s::regclass)", {"r": name}
            ).all()
            report.problems += [f"{name}: block {b} item {o}: {m}" for b, o, m in rows]
    report.checked.append(f"PostgreSQL amcheck of {len(relations)} tables and indexes")


def _foreign_keys(conn: Connection, report: IntegrityReport) -> None:
    """Every reference names a row that is there (each single-column key of the models)."""
    n = 0
    for table in Base.metadata.sorted_tables:
        for key in sorted(table.foreign_keys, key=lambda k: k.parent.name):
            parent = key.column.table.alias("parent")
            column = key.parent
            query = (
                select(list(table.primary_key.columns)[0])
                .select_from(table.outerjoin(parent, parent.c[key.column.name] == column))
                .where(column.is_not(None), parent.c[key.column.name].is_(None))
                .order_by(column)
            )
            missing = list(conn.execute(query).scalars())
            report.problems += _listed(
                f"{table.name}.{column.name} names no {key.column.table.name} row, in "
                f"{table.name} rows",
                missing,
            )
            n += 1
    report.checked.append(f"{n} foreign keys")


def _trails(conn: Connection, report: IntegrityReport) -> None:
    """Each cell edit has its audit entry; signed exactly when signed off."""
    edits = (
        select(AuditEntry.entity_id, func.count().label("n"))
        .where(AuditEntry.entity == "cell")
        .group_by(AuditEntry.entity_id)
        .subquery()
    )
    short = conn.execute(
        select(Cell.id)
        .outerjoin(edits, edits.c.entity_id == Cell.id)
        .where(Cell.version - 1 > func.coalesce(edits.c.n, 0))
        .order_by(Cell.id)
    ).scalars()
    report.problems += _listed("cells with fewer audit entries than edits", list(short))
    signed_off = select(SignOff.case_pk)
    unsigned = conn.execute(
        select(Case.id).where(Case.status == "signed", Case.id.not_in(signed_off)).order_by(Case.id)
    ).scalars()
    report.problems += _listed("signed case versions without a sign-off", list(unsigned))
    stray = conn.execute(
        select(SignOff.id)
        .join(Case, and_(Case.id == SignOff.case_pk, Case.status != "signed"))
        .order_by(SignOff.id)
    ).scalars()
    report.problems += _listed("sign-offs of case versions not signed", list(stray))
    report.checked.append("audit trail of every cell edit, sign-offs")


def _images(conn: Connection, store: ImageStore, report: IntegrityReport) -> None:
    rows = conn.execute(
        select(Field.image_sha256, Field.image_suffix).distinct().order_by(Field.image_sha256)
    ).all()
    gone = []
    for sha, suffix in rows:
        try:
            present = store.path(sha, suffix).is_file()
        except ValueError:
            present = False
        if not present:
            gone.append(f"{sha}{suffix}")
    report.problems += _listed(f"field images missing from {store.root}", gone)
    report.checked.append(f"{len(rows)} field images in the store")


def check_integrity(
    conn: Connection, store: Optional[ImageStore] = None, *, create_amcheck: bool = False
) -> IntegrityReport:
    """Check the database on ``conn`` (and the images in ``store``); see the module doc."""
    report = IntegrityReport()
    if conn.dialect.name == "sqlite":
        _sqlite_pages(conn, report)
    elif conn.dialect.name == "postgresql":
        _postgres_pages(conn, report, create_amcheck)
    else:
        report.skipped.append(f"{conn.dialect.name}: no page check known")
    _foreign_keys(conn, report)
    _trails(conn, report)
    if store is not None:
        _images(conn, store, report)
    return report
