"""Cases owned by a lab: ``cases.lab`` (indexed) and ``users.lab``; what was there before is in
lab "default".

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DEFAULT_LAB = "default"  # the value of this revision, whatever later code calls it


def upgrade() -> None:
    """Add the columns; every existing case and user is in lab "default"."""
    with op.batch_alter_table("cases") as batch:
        batch.add_column(
            sa.Column("lab", sa.String(64), nullable=False, server_default=DEFAULT_LAB)
        )
        batch.create_index("ix_cases_lab", ["lab"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("lab", sa.String(64), nullable=True))
    op.execute(sa.text("UPDATE users SET lab = :lab").bindparams(lab=DEFAULT_LAB))


def downgrade() -> None:
    """Drop the columns (the labs are lost)."""
    with op.batch_alter_table("users") as batch:
        batch.drop_column("lab")
    with op.batch_alter_table("cases") as batch:
        batch.drop_index("ix_cases_lab")
        batch.drop_column("lab")
