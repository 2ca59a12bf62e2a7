"""Group commit: short write jobs from many requests share one transaction and one commit.

Every request writes to the ledger twice (the hold before the upstream call, the settlement
after). Run each in its own transaction from a thread pool and the requests queue for the
database's single writer, each paying a ``BEGIN``/``COMMIT`` and a thread hand-off, and the
pool's threads fight over the GIL. A :class:`WriteBatcher` instead runs every job waiting in
its queue on one writer thread, in one transaction:

- each job runs inside its own ``SAVEPOINT``, so a job that raises (a hold refused for lack
  of credits) undoes only its own statements and gets its exception back;
- a job's result is delivered only after the transaction that holds it has committed, so
  nothing is answered that a crash could still lose;
- if the commit itself fails, every job in the batch gets that error.

The jobs keep the ledger's guarantees (conditional updates, one writer at a time); only the
number of commits and thread hand-offs changes.

Several processes each run a batcher against one PostgreSQL. A batch holds the row locks
of every job it ran until its commit, so two batches that lock the same ``api_keys`` rows in
different orders would deadlock. Jobs therefore carry an ``order`` (the key id they lock)
and a batch runs them sorted by it: every batch takes key locks in one global order. A job
that still loses a deadlock or serialization check (SQLSTATE 40P01 / 40001, e.g. against a
sweeper) is rolled back to its savepoint and run again in a fresh transaction right after
the batch commits, so the caller never sees a spurious failure. A job may therefore run
more than once: it must leave the objects it was given as it found them (what it changes in
memory, its caller changes once ``run`` returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from imagegate.db.session import Database

T = TypeVar("T")
# ``conn.info`` key of a dict where a job leaves writes to make once per batch, after every
# job (values with ``merge(other)`` and ``flush(conn)``, e.g. rows every request updates,
# which must be locked last and in one order; see accounts/rollup.py). Outside a batch the
# key is absent and the job writes them itself.
DEFERRED = "imagegate.deferred"
log = logging.getLogger("imagegate.db")

MAX_BATCH = 256
MAX_TRIES = 5  # runs of a job that keeps losing deadlocks before its error is returned
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure


@dataclass(slots=True)
class _Job(Generic[T]):
    func: Callable[[Connection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    order: str = ""
    ok: bool = False
    retry: bool = False
    value: Any = None
    error: BaseException | None = field(default=None)


class WriteBatcher:
    """One writer thread that commits the jobs queued meanwhile together."""

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    async def run(self, func: Callable[[Connection], T], order: str = "") -> T:
        """Run ``func(conn)`` in the next batch; returns once its transaction committed.

        ``order`` names the row the job locks first (the ledger passes the key id): a
        batch runs its jobs sorted by it, so concurrent batches never deadlock.

        Cancelling the caller does not stop the job: it runs and commits regardless (a
        settlement must not be lost because its client went away). Callers that must undo
        a job they no longer wait for shield the await and handle it themselves.
        """
        if self._closed:
            raise RuntimeError("the write batcher is closed")
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(func, loop, loop.create_future(), order)
        self._ensure_thread()
        self._queue.put(job)
        return await job.future

    def close(self) -> None:
        """Finish the queued jobs, then stop the writer thread."""
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=30)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._work, name="imagegate-writer", daemon=True)
                thread.start()
                self._thread = thread

    def _work(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            batch.sort(key=_order)
            self._commit_retrying(batch)
            _deliver(batch)

    def _commit_retrying(self, batch: list[_Job[Any]]) -> None:
        """Commit the batch; run again, in a transaction of their own, the jobs that lost
        a deadlock (their savepoint undid them, the rest of the batch is committed)."""
        pending = batch
        for attempt in range(1, MAX_TRIES + 1):
            self._commit(pending)
            pending = [job for job in pending if job.retry]
            if not pending or attempt == MAX_TRIES:
                return
            log.warning("write jobs lost a deadlock; running again", extra={"jobs": len(pending)})
            for job in pending:
                job.retry, job.error = False, None

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            with self._db.write() as conn:
                deferred: dict[str, Any] = {}
                try:
                    for job in batch:
                        mine: dict[str, Any] = {}
                        conn.info[DEFERRED] = mine
                        _run_in_savepoint(conn, job)
                        if job.ok:
                            _merge(deferred, mine)
                finally:  # the pooled connection outlives the batch
                    conn.info.pop(DEFERRED, None)
                for name in sorted(deferred):
                    deferred[name].flush(conn)
        except BaseException as exc:  # BEGIN or COMMIT failed: nothing of the batch is kept
            if _outage(exc):  # the database is down or hung: one line, not a traceback
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                log.error(
                    "write batch failed: database unavailable: %s",
                    first,
                    extra={"jobs": len(batch)},
                )
            else:
                log.error("write batch failed", exc_info=exc, extra={"jobs": len(batch)})
            for job in batch:  # those that never ran too: the caller gets the real cause
                if job.ok or job.error is None:
                    job.ok, job.value, job.error = False, None, exc


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for name, item in new.items():
        if name in into:
            into[name].merge(item)
        else:
            into[name] = item


def _run_in_savepoint(conn: Connection, job: _Job[Any]) -> None:
    _savepoint_sql(conn, "SAVEPOINT imagegate_job")
    try:
        job.value = job.func(conn)
    except Exception as exc:
        _savepoint_sql(conn, "ROLLBACK TO SAVEPOINT imagegate_job")
        job.error = exc
        job.retry = _retryable(exc)
    else:
        job.ok = True
    _savepoint_sql(conn, "RELEASE SAVEPOINT imagegate_job")


def _savepoint_sql(conn: Connection, sql: str) -> None:
    """Send a savepoint statement straight to the driver's connection: through SQLAlchemy's
    execution path each costs ~50 µs of Python (GIL time), and there are two per job, four
    of a request's eleven statements. A driver error sends it again through SQLAlchemy, so
    that what the caller gets (the wrapped error, a dead connection invalidated) is as
    before; if it then succeeds, the statement simply ran."""
    driver = conn.connection.driver_connection
    if driver is None:  # no live connection: SQLAlchemy says so its own way
        conn.exec_driver_sql(sql)
        return
    try:
        driver.execute(sql)
    except conn.dialect.loaded_dbapi.Error:
        conn.exec_driver_sql(sql)


def _order(job: _Job[Any]) -> str:
    return job.order


def _outage(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout)


def _retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the job did nothing wrong, run it again."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _deliver(batch: list[_Job[Any]]) -> None:
    """Hand results back with one wake-up per event loop, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job[Any]]] = {}
    for job in batch:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, jobs)


def _resolve(jobs: list[_Job[Any]]) -> None:
    for job in jobs:
        if job.future.done():  # the caller was cancelled; the job still ran and committed
            continue
        if job.ok:
            job.future.set_result(job.value)
        else:
            job.future.set_exception(job.error or RuntimeError("write job failed"))
