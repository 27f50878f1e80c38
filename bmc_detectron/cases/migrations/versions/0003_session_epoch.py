"""Durable logout: ``users.session_epoch``, the generation of the user's sessions. A session
cookie carries the epoch it was issued at; logging out increments it, so every cookie issued
before is refused, by every server, after any restart. Existing users start at 0.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column; every existing user is at epoch 0."""
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    """Drop the column (sessions are then only refused while they are unexpired)."""
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_epoch")
