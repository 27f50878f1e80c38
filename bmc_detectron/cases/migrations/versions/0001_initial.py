"""The initial schema: cases, fields, cells, users, sign_offs and the append-only audit_log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The audit log is append-only: the database itself refuses an UPDATE or a DELETE of a row.
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER audit_log_no_{what} BEFORE {what.upper()} ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
    for what in ("update", "delete")
]
POSTGRES_TRIGGERS = [
    "CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql",
    "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
]


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def upgrade() -> None:
    """Create the tables, their indexes and the audit log's triggers."""
    _users_and_cases()
    _fields_and_cells()
    _sign_offs_and_audit_log()
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGERS}.get(dialect, []):
        op.execute(statement)


def _users_and_cases() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.CheckConstraint("role IN ('reviewer', 'admin')", name="ck_users_role"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "cases",
        _id(),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("detector", sa.Text(), nullable=False),
        sa.Column("classifier", sa.Text(), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.Column("uncertain_below", sa.Float(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.CheckConstraint("status IN ('counted', 'in_review', 'signed')", name="ck_cases_status"),
        sa.ForeignKeyConstraint(["parent_id"], ["cases.id"], name="fk_cases_parent_id_cases"),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.UniqueConstraint("case_id", "version", name="uq_cases_case_id_version"),
    )
    for column in ("case_id", "status", "created"):
        op.create_index(f"ix_cases_{column}", "cases", [column])


def _fields_and_cells() -> None:
    op.create_table(
        "fields",
        _id(),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("image_suffix", sa.String(16), nullable=False),
        sa.Column("source_image", sa.Text(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"], name="fk_fields_case_pk_cases"),
        sa.PrimaryKeyConstraint("id", name="pk_fields"),
        sa.UniqueConstraint("case_pk", "name", name="uq_fields_case_name"),
    )
    op.create_index("ix_fields_case_pk", "fields", ["case_pk"])
    op.create_index("ix_fields_image_sha256", "fields", ["image_sha256"])
    op.create_table(
        "cells",
        _id(),
        sa.Column("field_id", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in ("x0", "y0", "x1", "y1")),
        sa.Column("det_score", sa.Float(), nullable=True),
        sa.Column("det_class", sa.String(64), nullable=False),
        sa.Column("model_class", sa.String(64), nullable=True),
        sa.Column("model_prob", sa.Float(), nullable=True),
        sa.Column("probs", sa.JSON(), nullable=True),
        sa.Column("reviewed_class", sa.String(64), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("added", sa.Boolean(), nullable=False),
        sa.Column("reviewed_by", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["field_id"], ["fields.id"], name="fk_cells_field_id_fields"),
        sa.ForeignKeyConstraint(["reviewed_by"], ["users.id"], name="fk_cells_reviewed_by_users"),
        sa.PrimaryKeyConstraint("id", name="pk_cells"),
    )
    op.create_index("ix_cells_field_id", "cells", ["field_id"])


def _sign_offs_and_audit_log() -> None:
    op.create_table(
        "sign_offs",
        _id(),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"], name="fk_sign_offs_case_pk_cases"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_sign_offs_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_sign_offs"),
    )
    op.create_index("ix_sign_offs_case_pk", "sign_offs", ["case_pk"])
    op.create_table(
        "audit_log",
        _id(),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=True),
        sa.Column("entity", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("old", sa.JSON(), nullable=True),
        sa.Column("new", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"], name="fk_audit_log_case_pk_cases"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_case_pk", "audit_log", ["case_pk"])


def downgrade() -> None:
    """Drop everything the upgrade made."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    for table in ("audit_log", "sign_offs", "cells", "fields", "cases", "users"):
        op.drop_table(table)
