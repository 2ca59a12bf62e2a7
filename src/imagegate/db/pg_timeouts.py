"""Bounded waits on PostgreSQL (psycopg 3), so a hung database fails requests fast.

Three bounds, all from the ``database:`` config section:

* opening a connection: libpq's ``connect_timeout`` (whole seconds, at least 2);
* waiting for a free pooled connection: the same time (SQLAlchemy's ``pool_timeout``);
* one statement: ``statement_timeout`` in the server, and the same time (plus a second)
  in the client. The server-side limit alone cannot help when the server or the network
  in between hangs (its answer never arrives), so :class:`DeadlineConnection` also stops
  waiting on the socket, closes the connection (the pool discards it) and raises
  ``OperationalError``, which the API turns into 503 with ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL

CLIENT_MARGIN_S = 1.0  # let the server's own statement_timeout answer first


class DriverMissing(ValueError):
    """The PostgreSQL driver is not installed; names the extra that brings it."""


def _connection_class(io_timeout_s: float) -> Any:
    try:
        import psycopg
    except ImportError:
        raise DriverMissing(
            "IMAGEGATE_DATABASE_URL names PostgreSQL, but its driver (psycopg) is not "
            "installed: pip install 'imagegate[postgres]'"
        ) from None

    class DeadlineConnection(psycopg.Connection):
        """A psycopg connection that gives up on a server that stops answering."""

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            bounded = _with_deadline(self, gen, time.monotonic() + io_timeout_s)
            if timeout is None:  # psycopg < 3.2 has no timeout argument
                return super().wait(bounded, interval or 0.1)
            return super().wait(bounded, interval or 0.1, timeout)

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
    _connection_class(0)  # fails early, naming the extra, when psycopg is missing
    statement_ms = max(1, int(statement_timeout_s * 1000))
    connect_args: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(connect_timeout_s)),
        "options": f"-c statement_timeout={statement_ms}",
    }
    if "connect_timeout" in url.query:  # the operator's URL wins
        connect_args.pop("connect_timeout")
    return {
        "pool_pre_ping": True,
        "pool_timeout": connect_timeout_s,
        "connect_args": connect_args,
    }


def bound_engine(engine: Engine, statement_timeout_s: float) -> None:
    """Make ``engine`` open connections that give up on a silent server."""
    connection_class = _connection_class(statement_timeout_s + CLIENT_MARGIN_S)

    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        return connection_class.connect(*cargs, **cparams)

    event.listen(engine, "do_connect", connect)
