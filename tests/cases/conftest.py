"""The case database's tests need the ``cases`` extra (``pip install -e '.[cases]'``): without
it they are not collected."""

from __future__ import annotations

import importlib.util

MISSING = [n for n in ("sqlalchemy", "alembic", "argon2") if importlib.util.find_spec(n) is None]
collect_ignore_glob = ["test_*.py"] if MISSING else []
