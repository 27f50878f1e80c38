"""The login rate limit in the database: ``login_failures`` (one row per failed login and per
what it counts against: the user name, the client address), so that every server of the database
shares the limit and a restart keeps it. The table starts empty.

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table and its indexes (by subject and time; by time, for pruning)."""
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('name', 'address')", name="ck_login_failures_kind"),
        sa.PrimaryKeyConstraint("id", name="pk_login_failures"),
    )
    op.create_index("ix_login_failures_at", "login_failures", ["at"])
    op.create_index(
        "ix_login_failures_kind_subject_at", "login_failures", ["kind", "subject", "at"]
    )


def downgrade() -> None:
    """Drop the table (the failures counted so far are forgotten)."""
    op.drop_index("ix_login_failures_kind_subject_at", table_name="login_failures")
    op.drop_index("ix_login_failures_at", table_name="login_failures")
    op.drop_table("login_failures")
