"""Alembic's environment for the case database: run by :func:`bmc_detectron.cases.db.upgrade`
(``bmc cases init`` / ``bmc cases upgrade``) on the connection it passes in, or on
``sqlalchemy.url`` of the config (``alembic -x`` style use by a developer)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from bmc_detectron.cases.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, else on a new one to ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the case database's migrations run online only")
run_migrations_online()
