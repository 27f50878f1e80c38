"""Where the case database lives, its engine, its schema version and its sessions.

Which database: the URL given (``--db URL``), else ``$BMC_CASES_DB``, else an SQLite file
``$XDG_DATA_HOME/bmc-detectron/cases.db`` (``~/.local/share/bmc-detectron/cases.db``). Any
SQLAlchemy URL works, e.g. ``postgresql+psycopg://user@host/bmc`` for a lab server. On SQLite
foreign keys are on and the journal is WAL (readers do not block the writer).

The images (:mod:`.store`) lie beside an SQLite file (``<folder of cases.db>/images``); for
another database in ``$BMC_CASES_IMAGES``, else ``<data folder>/images``.

The schema is Alembic's (``migrations/``). Every open checks the database's revision against the
package's head: an empty database must be created (``bmc cases init``), an older one upgraded
(``bmc cases upgrade``), a newer one (written by a newer bmc-detectron) is refused.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional, Tuple

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.orm import Session, sessionmaker

from bmc_detectron.cases.errors import CaseError, SchemaError
from bmc_detectron.cases.integrity import IntegrityReport, check_integrity
from bmc_detectron.cases.store import ImageStore

DB_ENV = "BMC_CASES_DB"
IMAGES_ENV = "BMC_CASES_IMAGES"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def data_dir() -> Path:
    """The user's data folder for bmc-detectron (``$XDG_DATA_HOME/bmc-detectron``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bmc-detectron"


def default_url() -> str:
    """``$BMC_CASES_DB``, else the SQLite file in the data folder."""
    return os.environ.get(DB_ENV) or f"sqlite:///{data_dir() / 'cases.db'}"


def db_folder(url: str) -> Path:
    """The folder of an SQLite file database, else the user's data folder: where files that
    belong with the database lie (e.g. the web page's session key)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).expanduser().resolve().parent
    return data_dir()


def images_dir(url: str) -> Path:
    """The image store's folder for the database at ``url`` (see the module doc)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return db_folder(url) / "images"
    return Path(os.environ.get(IMAGES_ENV) or data_dir() / "images")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; an SQLite file's folder is created, its pragmas set."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(migrations: Path = MIGRATIONS) -> Config:
    """Alembic's configuration for the package's migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    return config


def head_revision(migrations: Path = MIGRATIONS) -> str:
    """The newest revision of the migrations."""
    head = ScriptDirectory.from_config(alembic_config(migrations)).get_current_head()
    if head is None:
        raise SchemaError(f"{migrations}: no migration found")
    return head


def revision_of(engine: Engine) -> Optional[str]:
    """The database's revision (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_state(engine: Engine, migrations: Path = MIGRATIONS) -> Tuple[str, Optional[str]]:
    """("empty" | "current" | "older" | "newer", the database's revision)."""
    current = revision_of(engine)
    if current is None:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
        if tables:
            return "newer", None  # tables but no revision: not a database this package made
        return "empty", None
    script = ScriptDirectory.from_config(alembic_config(migrations))
    if current == head_revision(migrations):
        return "current", current
    known = {rev.revision for rev in script.walk_revisions()}
    return ("older" if current in known else "newer"), current


def check_schema(engine: Engine, migrations: Path = MIGRATIONS) -> None:
    """Raise :class:`SchemaError` unless the database is at the package's head revision."""
    state, current = schema_state(engine, migrations)
    where = engine.url.render_as_string(hide_password=True)
    if state == "empty":
        raise SchemaError(f"{where}: no case database there yet; run `bmc cases init`")
    if state == "older":
        raise SchemaError(
            f"{where}: the case database is at revision {current}, older than this "
            f"bmc-detectron's {head_revision(migrations)}; run `bmc cases upgrade`"
        )
    if state == "newer":
        raise SchemaError(
            f"{where}: the case database is at revision {current or 'unknown'}, unknown to this "
            f"bmc-detectron (head {head_revision(migrations)}): written by a newer version? "
            "Refused; upgrade bmc-detectron"
        )


def upgrade(engine: Engine, revision: str = "head", migrations: Path = MIGRATIONS) -> str:
    """``alembic upgrade`` the database to ``revision``; returns the revision it is at.

    A database newer than the package is refused (:class:`SchemaError`)."""
    if schema_state(engine, migrations)[0] == "newer":
        check_schema(engine, migrations)
    config = alembic_config(migrations)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return revision_of(engine) or ""


class CaseDB:
    """The case database at ``url`` (default :func:`default_url`) and its image store.

    ``check`` (default): refuse a database not at the package's head (:func:`check_schema`).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        images: Optional[Path] = None,
        *,
        check: bool = True,
        migrations: Path = MIGRATIONS,
    ) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self.store = ImageStore(images or images_dir(self.url))
        self.migrations = migrations
        if check:
            check_schema(self.engine, migrations)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        with self._sessions() as session, session.begin():
            yield session

    def create(self) -> Tuple[Optional[str], bool]:
        """Bring a new (empty) database to the head revision: (revision, created). A database at
        the head is left as it is; an older one is refused (``bmc cases upgrade`` migrates it)."""
        state, current = schema_state(self.engine)
        if state == "older":
            raise CaseError(
                f"{self.url}: a case database at revision {current}; run `bmc cases upgrade`"
            )
        if state == "current":
            return current, False
        return self.upgrade(), True  # a database newer than this package is refused there

    def upgrade(self, revision: str = "head") -> str:
        """Migrate the database (:func:`upgrade`); returns its revision."""
        return upgrade(self.engine, revision, self.migrations)

    def check_integrity(self, *, create_amcheck: bool = False) -> IntegrityReport:
        """Whether the database and its images are whole (:mod:`.integrity`), read in one
        snapshot (PostgreSQL: a repeatable-read transaction); nothing is written."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            return check_integrity(conn, self.store, create_amcheck=create_amcheck)

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"CaseDB({self.engine.url.render_as_string(hide_password=True)!r})"
