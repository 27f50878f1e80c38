"""A PostgreSQL server for the case database's tests: a lab's own (``$BMC_TEST_POSTGRES_URL``, a
role allowed to create databases) or a throwaway cluster (``initdb`` + ``pg_ctl`` from the PATH
or ``/usr/lib/postgresql/*/bin``) in a temporary folder, its socket there too, trust auth, no
fsync, stopped (fast) at the end of the session. Every test gets a database of its own.

Skipped, with the reason, when the driver (``psycopg``) or the server programs are missing. Run
as root, the cluster runs as the ``postgres`` user (``initdb`` refuses root).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

POSTGRES_ENV = "BMC_TEST_POSTGRES_URL"
_COUNTER = itertools.count()


def _program(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user() -> List[str]:
    """The command prefix that runs a program as the server's user (``postgres`` when root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("PostgreSQL tests run as root need a 'postgres' user to run the server")
    if runuser is None:
        pytest.skip("PostgreSQL tests run as root need runuser to run the server as 'postgres'")
    return [runuser, "-u", "postgres", "--"]


def _run(argv: List[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")


def throwaway_cluster() -> Iterator[str]:
    """Start a cluster in a temporary folder; yields its superuser's URL; stops and removes it."""
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip(f"PostgreSQL's initdb / pg_ctl not found (set {POSTGRES_ENV} to a server)")
    prefix = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="bmc-pg-"))
    if prefix:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    options = (
        f"-p {port} -c listen_addresses='' -c unix_socket_directories='{root}' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    try:
        _run([*prefix, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
              "--locale=C", "--no-sync"])  # fmt: skip
        _run([*prefix, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-o", options, "-w",
              "start"])  # fmt: skip
        try:
            yield f"postgresql+psycopg://postgres@/postgres?host={root}&port={port}"
        finally:
            _run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL role that may create databases (see the module doc)."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL driver missing: pip install 'psycopg[binary]' (the cases extra)")
    if os.environ.get(POSTGRES_ENV):
        yield os.environ[POSTGRES_ENV]
        return
    yield from throwaway_cluster()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database's URL: an SQLite file ``tmp_path/db/cases.db``, or a new database on
    the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'cases.db'}"
        return
    yield from fresh_database(request.getfixturevalue("postgres_server"))


def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server (dropped afterwards); yields its URL."""
    from sqlalchemy import create_engine, make_url

    name = f"bmc_test_{os.getpid()}_{next(_COUNTER)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextlib.contextmanager
def copy_database(url: str) -> Iterator[str]:
    """A copy of the database at ``url`` (nobody connected to it); yields the copy's URL. SQLite:
    the file copied beside it (kept); PostgreSQL: a database made from it as a template (dropped
    afterwards)."""
    from sqlalchemy import create_engine, make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        copy = Path(parsed.database).parent / "copy" / Path(parsed.database).name
        copy.parent.mkdir(parents=True)
        shutil.copyfile(parsed.database, copy)
        yield f"sqlite:///{copy}"
        return
    name = f"{parsed.database}_copy"  # made from the maintenance database: nobody in the original
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{parsed.database}"')
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
