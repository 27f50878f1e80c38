"""The case database's tests need the ``cases`` extra (``pip install -e '.[cases]'``): without
it they are not collected. ``db_url``: each test that takes it runs on SQLite and on PostgreSQL
(:mod:`.postgres`: skipped, with the reason, without a server or driver)."""

from __future__ import annotations

import importlib.util

MISSING = [n for n in ("sqlalchemy", "alembic", "argon2") if importlib.util.find_spec(n) is None]
collect_ignore_glob = ["test_*.py"] if MISSING else []

if not MISSING:
    from .postgres import db_url, postgres_server  # noqa: F401  (fixtures)
