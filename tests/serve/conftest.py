"""Fixtures of the web page's tests. ``any_db_url``: a test that takes it runs on an SQLite file
and on PostgreSQL (:mod:`tests.cases.postgres`: a throwaway cluster or
``$BMC_TEST_POSTGRES_URL``; that half skipped, with the reason, without a server or driver)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.cases.postgres import fresh_database, postgres_server  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty database: an SQLite file ``tmp_path/db/cases.db``, or one on PostgreSQL (its
    session key file then in the data folder, ``tmp_path/data``)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'cases.db'}"
        return
    yield from fresh_database(request.getfixturevalue("postgres_server"))
