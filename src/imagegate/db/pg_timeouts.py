"""Bounded waits on PostgreSQL (psycopg 3), so a hung database fails requests fast.

Bounds, from the ``database:`` config section:

* opening a connection: libpq's ``connect_timeout`` (whole seconds, at least 2), which is
  also how long a request waits for a free pooled connection (``pool_timeout``);
* checking a pooled connection before use: a ``SELECT 1`` bounded by the connect timeout
  (instead of SQLAlchemy's unbounded ``pool_pre_ping``); a silent one is thrown away;
* one statement: ``statement_timeout`` in the server, and the same time plus a second in
  the client. The server-side limit alone cannot help when the server or the network in
  between hangs (its answer never arrives), so :class:`DeadlineConnection` also stops
  waiting on the socket, closes the connection (the pool discards it) and raises
  ``OperationalError``, which the API turns into 503 with ``Retry-After``.

Migrations lift both statement limits (:func:`unbounded`): a schema change on a big table,
or waiting for another host's migration lock, may rightly take longer.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Generator, Iterator
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError

CLIENT_MARGIN_S = 1.0  # let the server's own statement_timeout answer first


class DriverMissing(ValueError):
    """The PostgreSQL driver is not installed; names the extra that brings it."""


def _connection_class() -> Any:
    try:
        import psycopg
    except ImportError:
        raise DriverMissing(
            "IMAGEGATE_DATABASE_URL names PostgreSQL, but its driver (psycopg) is not "
            "installed: pip install 'imagegate[postgres]'"
        ) from None

    class DeadlineConnection(psycopg.Connection):
        """A psycopg connection that gives up on a server that stops answering."""

        io_timeout_s: float | None = None  # set per connection; None waits for ever

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            if self.io_timeout_s is not None:
                gen = _with_deadline(self, gen, time.monotonic() + self.io_timeout_s)
            if timeout is None:  # psycopg < 3.2 has no timeout argument
                return super().wait(gen, interval or 0.1)
            return super().wait(gen, interval or 0.1, timeout)

    return DeadlineConnection


def _with_deadline(conn: Any, gen: Generator[Any, Any, Any], deadline: float) -> Any:
    """Drive ``gen`` like psycopg's wait loop does, but stop once ``deadline`` passes.

    psycopg resumes the generator every ``interval`` even when the socket stays silent,
    which is where the clock is checked.
    """
    import psycopg

    try:
        wanted = next(gen)
    except StopIteration as stop:  # nothing to wait for
        return stop.value
    while True:
        ready = yield wanted
        if time.monotonic() > deadline:
            conn.pgconn.finish()  # the protocol state is unknown now: the pool drops it
            raise psycopg.OperationalError(
                "the database did not answer in time (database.statement_timeout_s); "
                "the connection was closed"
            )
        try:
            wanted = gen.send(ready)
        except StopIteration as stop:
            return stop.value


def engine_options(
    url: URL, connect_timeout_s: float, statement_timeout_s: float
) -> dict[str, Any]:
    """``create_engine`` keyword arguments for a PostgreSQL URL."""
    _connection_class()  # fails early, naming the extra, when psycopg is missing
    statement_ms = max(1, int(statement_timeout_s * 1000))
    connect_args: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(connect_timeout_s)),
        "options": f"-c statement_timeout={statement_ms}",
    }
    if "connect_timeout" in url.query:  # the operator's URL wins
        connect_args.pop("connect_timeout")
    return {"pool_timeout": connect_timeout_s, "connect_args": connect_args}


def bound_engine(engine: Engine, connect_timeout_s: float, statement_timeout_s: float) -> None:
    """Make ``engine`` open deadline-bound connections and check pooled ones before use."""
    connection_class = _connection_class()
    statement_s = statement_timeout_s + CLIENT_MARGIN_S
    ping_s = max(1.0, connect_timeout_s)

    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        conn = connection_class.connect(*cargs, **cparams)
        conn.io_timeout_s = statement_s
        return conn

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        dbapi_conn.io_timeout_s = ping_s
        autocommit = dbapi_conn.autocommit
        try:
            dbapi_conn.autocommit = True
            dbapi_conn.execute("SELECT 1")
            dbapi_conn.autocommit = autocommit
        except Exception as exc:  # gone or silent: the pool replaces it with a new one
            raise DisconnectionError(str(exc)) from exc
        finally:
            dbapi_conn.io_timeout_s = statement_s

    event.listen(engine, "do_connect", connect)
    event.listen(engine, "checkout", checkout)


@contextlib.contextmanager
def unbounded(dbapi_conn: Any) -> Iterator[None]:
    """No client-side deadline on ``dbapi_conn`` meanwhile (migrations)."""
    before = getattr(dbapi_conn, "io_timeout_s", None)
    dbapi_conn.io_timeout_s = None
    try:
        yield
    finally:
        dbapi_conn.io_timeout_s = before
