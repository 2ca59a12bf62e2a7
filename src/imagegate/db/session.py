"""Engine, sessions and schema migrations for SQLite and PostgreSQL.

One :class:`Database` per process wraps a synchronous SQLAlchemy engine. SQLite is the
zero-configuration default; PostgreSQL is for several workers or hosts sharing one state.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Key of the PostgreSQL advisory lock that serialises migrations and bootstrap across
# processes ("imagega" as a 56-bit integer; advisory locks are per database).
_PG_LOCK_KEY = 0x696D6167656761


def database_url_for(data_dir: Path, env_url: str | None) -> str:
    """The URL to use: ``IMAGEGATE_DATABASE_URL`` if set, else SQLite in the data dir."""
    if env_url and env_url.strip():
        return env_url.strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = (data_dir / "imagegate.db").absolute()
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def normalize_url(url: str) -> URL:
    """Parse ``url``, pointing bare ``postgresql://`` (and ``postgres://``) at psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # busy_timeout first: switching to WAL needs a lock that a concurrent starter may hold.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch to WAL (persistent, so usually already done), retrying while locked.

    SQLite can report "database is locked" for the switch without waiting out the busy
    timeout when another process is opening or converting the same new file.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() not in ("wal", "memory"):
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _private_sqlite_files(url: URL) -> None:
    """Create the SQLite file 0600 (SQLite gives -wal and -shm the database's mode) and
    tighten files an older version left world-readable: they hold key hashes and usage."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chmod(f"{path}{suffix}", 0o600)


class SchemaNotCurrent(ValueError):
    """The database is not migrated to the revision this code needs."""


class Database:
    """A sync engine plus a session factory for one database URL.

    On PostgreSQL every wait is bounded: opening a connection by ``connect_timeout_s``
    (also the wait for a free pooled connection), and each statement by
    ``statement_timeout_s`` both in the server and in the client (see ``db/pg_timeouts.py``),
    so a hung server fails requests in seconds instead of holding them.
    """

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 30.0,
    ) -> None:
        self.url = normalize_url(url)
        if self.is_sqlite:
            _private_sqlite_files(self.url)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_postgresql:
            from imagegate.db.pg_timeouts import engine_options

            kwargs.update(engine_options(self.url, connect_timeout_s, statement_timeout_s))
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_postgresql:
            from imagegate.db.pg_timeouts import bound_engine

            bound_engine(self.engine, connect_timeout_s, statement_timeout_s)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _configure_sqlite)
        self.sessions: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time. Threads of this process queue on this lock in
        # order instead of in SQLite's busy handler, which sleeps in growing steps (a tail
        # of seconds under load); other processes still wait through busy_timeout.
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    @property
    def reads_inline(self) -> bool:
        """Whether a point read is cheap enough to run on the event loop.

        SQLite in WAL mode: a primary-key read is a few microseconds of local I/O and never
        waits for a writer, so running it in place is cheaper than a thread hand-off.
        PostgreSQL reads cross the network and go to a worker thread.
        """
        return self.is_sqlite

    def session(self) -> Session:
        """A new ORM session; use it as a context manager."""
        return self.sessions()

    @contextmanager
    def exclusive(self, *, unbounded: bool = False) -> Iterator[Connection]:
        """A connection in a transaction that no other process can run alongside.

        PostgreSQL takes a transaction-scoped advisory lock; SQLite starts the transaction
        with ``BEGIN IMMEDIATE`` (the write lock). Commits on success, rolls back on error.
        For short check-then-write steps at startup (migrations, admin bootstrap); do not
        nest it, since a second connection would wait for the first. ``unbounded`` lifts the
        PostgreSQL statement timeouts for it (migrations).
        """
        with self.engine.connect() as conn, conn.begin():
            if self.is_sqlite:
                # pysqlite begins transactions lazily, so this is the first statement.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
                return
            if not (self.is_postgresql and unbounded):
                if self.is_postgresql:
                    conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
                yield conn
                return
            from imagegate.db.pg_timeouts import unbounded as no_deadline

            # Migrations: waiting for another host's lock, or a long schema change, is fine.
            with no_deadline(conn.connection.dbapi_connection):
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a short write transaction (commit on success, else rollback).

        SQLite starts it with ``BEGIN IMMEDIATE`` so that a read-then-write transaction
        waits for the write lock up front instead of failing with "database is locked"
        when another writer got there first; PostgreSQL runs a plain transaction and relies
        on conditional ``UPDATE`` statements for atomicity.
        """
        with self._write_lock, self.engine.connect() as conn, conn.begin():
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    def ping(self) -> None:
        """One round trip (``SELECT 1``); raises if the database does not answer."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def alembic_config(self) -> Config:
        """An Alembic config built in code: no ``alembic.ini`` is needed at runtime."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        # Kept out of set_main_option, which would %-interpolate an escaped password.
        config.attributes["database"] = self
        return config

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision``; safe when several processes start at once.

        The whole upgrade runs in one :meth:`exclusive` transaction, so a second process
        waits and then finds the schema already current.
        """
        config = self.alembic_config()
        with self.exclusive(unbounded=True) as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    def head_revision(self) -> str | None:
        """The newest revision this version of imagegate knows."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def require_current(self) -> None:
        """Raise :class:`SchemaNotCurrent` unless the schema is at the newest revision
        (``serve --no-migrate``: the schema is someone else's job)."""
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            raise SchemaNotCurrent(
                f"the database schema is at revision {current or 'none (empty database)'}, "
                f"this imagegate needs {head}: run `imagegate migrate` first "
                f"(or serve without --no-migrate)"
            )

    def current_revision(self) -> str | None:
        """The schema revision the database is at, or None before the first migration."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        """Close pooled connections (at shutdown, and in tests)."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"
