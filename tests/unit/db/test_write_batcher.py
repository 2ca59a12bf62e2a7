"""Group commit of ledger writes: shared commits, per-job atomicity, results after commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, insert, select
from sqlalchemy.exc import IntegrityError

from imagegate.accounts.keys import KeyStore
from imagegate.accounts.ledger import Hold, Ledger
from imagegate.accounts.usage import UsageRecord
from imagegate.core.errors import InsufficientCredits
from imagegate.db.batch import WriteBatcher
from imagegate.db.models import CreditHoldRow, LedgerEntryRow, UsageRow
from imagegate.db.session import Database


def _usage_row(generation_id: str) -> dict[str, object]:
    return {
        "generation_id": generation_id,
        "key_id": "k",
        "model": "m",
        "operation": "generate",
        "status": 200,
        "attempts": [],
        "images": 1,
        "latency_ms": 1.0,
        "cost_micro": 0,
    }


def _count(db: Database, column: Any) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count(column))).scalar_one())


def _commits(db: Database) -> list[int]:
    commits: list[int] = []
    event.listen(db.engine, "commit", lambda _conn: commits.append(1))
    return commits


async def _gather_in_one_batch(batcher: WriteBatcher, jobs: list[Any]) -> list[Any]:
    """Queue every job before the writer thread can start on them (it starts on first use)."""
    return await asyncio.gather(*(batcher.run(job) for job in jobs), return_exceptions=True)


def test_concurrent_jobs_share_commits_and_all_land(db: Database) -> None:
    batcher = WriteBatcher(db)
    commits = _commits(db)

    def job(i: int) -> Callable[[Connection], int]:
        def write(conn: Connection) -> int:
            conn.execute(insert(UsageRow).values(**_usage_row(f"gen_{i}")))
            return i

        return write

    results = asyncio.run(_gather_in_one_batch(batcher, [job(i) for i in range(200)]))
    batcher.close()
    assert results == list(range(200))
    assert _count(db, UsageRow.generation_id) == 200
    assert 1 <= len(commits) < 200  # queued writes were committed together


def test_a_failing_job_undoes_only_its_own_writes(db: Database) -> None:
    batcher = WriteBatcher(db)
    with db.write() as conn:
        conn.execute(insert(UsageRow).values(**_usage_row("taken")))

    def ok(i: int) -> Callable[[Connection], object]:
        return lambda conn: conn.execute(insert(UsageRow).values(**_usage_row(f"ok_{i}")))

    def half_then_fail(conn: Connection) -> None:
        conn.execute(insert(UsageRow).values(**_usage_row("half")))  # undone with the job
        conn.execute(insert(UsageRow).values(**_usage_row("taken")))  # duplicate key

    jobs = [ok(0), ok(1), half_then_fail, ok(2), ok(3)]
    results = asyncio.run(_gather_in_one_batch(batcher, jobs))
    batcher.close()
    assert isinstance(results[2], IntegrityError)  # the duplicate key, handed back to its caller
    assert not any(isinstance(r, BaseException) for i, r in enumerate(results) if i != 2)
    with db.engine.connect() as conn:
        ids = set(conn.execute(select(UsageRow.generation_id)).scalars())
    assert ids == {"taken", "ok_0", "ok_1", "ok_2", "ok_3"}


def test_a_result_arrives_only_once_it_is_committed(db: Database) -> None:
    batcher = WriteBatcher(db)

    async def main() -> int:
        await batcher.run(lambda conn: conn.execute(insert(UsageRow).values(**_usage_row("g"))))
        return _count(db, UsageRow.generation_id)  # read on another connection, right away

    assert asyncio.run(main()) == 1
    batcher.close()


def test_a_cancelled_caller_does_not_stop_its_write(db: Database) -> None:
    batcher = WriteBatcher(db)

    async def main() -> None:
        task = asyncio.ensure_future(
            batcher.run(lambda conn: conn.execute(insert(UsageRow).values(**_usage_row("g"))))
        )
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    batcher.close()  # waits for the queued job
    assert _count(db, UsageRow.generation_id) == 1


def test_batched_holds_never_overdraw(db: Database) -> None:
    """100 holds of 0.10 USD at once against 1.00 USD: exactly 10 are taken, in few commits."""
    key, _ = KeyStore(db).create("k")
    ledger = Ledger(db, hold_ttl_s=60)
    ledger.top_up(key.id, 1_000_000)
    commits = _commits(db)

    async def main() -> list[object]:
        holds = [ledger.hold_async(key.id, 100_000, f"gen_{i}") for i in range(100)]
        return await asyncio.gather(*holds, return_exceptions=True)

    results = asyncio.run(main())
    taken = [r for r in results if isinstance(r, Hold)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    assert len(taken) == 10 and len(refused) == 90
    assert len(commits) < 100
    assert ledger.balance(key.id) == 0
    assert _count(db, CreditHoldRow.id) == 10

    async def settle_all() -> None:
        usages = [UsageRecord(h.generation_id, key.id, "m", "generate") for h in taken]
        await asyncio.gather(
            *(ledger.settle_async(h, 40_000, u) for h, u in zip(taken, usages, strict=True))
        )

    asyncio.run(settle_all())
    ledger.close()
    assert ledger.balance(key.id) == 600_000  # 10 x (0.10 held - 0.04 charged) returned
    assert sum(e.amount_micro for e in ledger.entries(key.id)) == 600_000
    assert _count(db, LedgerEntryRow.id) == 1 + 10 + 10  # top-up, holds, settlements
    assert ledger.open_holds(key.id) == 0


@pytest.mark.postgres
def test_a_job_that_loses_a_deadlock_runs_again(pg_url: str) -> None:
    """PostgreSQL picks a job as a deadlock victim (SQLSTATE 40P01): it is rolled back to its
    savepoint, the rest of its batch commits, and it runs again; its caller sees success."""
    db = Database(pg_url)
    db.migrate()
    batcher = WriteBatcher(db)
    runs: list[int] = []

    def victim(conn: Connection) -> str:
        runs.append(1)
        conn.execute(insert(UsageRow).values(**_usage_row(f"victim_{len(runs)}")))
        if len(runs) == 1:  # what PostgreSQL raises in a deadlock victim
            conn.exec_driver_sql(
                "DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"
            )
        return "settled"

    def ok(i: int) -> Callable[[Connection], object]:
        return lambda conn: conn.execute(insert(UsageRow).values(**_usage_row(f"ok_{i}")))

    try:
        results = asyncio.run(_gather_in_one_batch(batcher, [ok(0), victim, ok(1)]))
        batcher.close()
        assert results[1] == "settled" and len(runs) == 2
        with db.engine.connect() as conn:
            ids = set(conn.execute(select(UsageRow.generation_id)).scalars())
        assert ids == {"ok_0", "ok_1", "victim_2"}  # the first run's write was undone
    finally:
        db.dispose()


def test_jobs_run_in_the_order_of_the_rows_they_lock(db: Database) -> None:
    """Within a batch, jobs run sorted by ``order`` (the key id), so concurrent batches take
    key rows in one order and cannot deadlock."""
    batcher = WriteBatcher(db)
    ran: list[str] = []

    def job(name: str) -> Callable[[Connection], None]:
        return lambda conn: ran.append(name)

    async def main() -> None:
        names = ["k3", "k1", "k2", "k1"]
        await asyncio.gather(*(batcher.run(job(f"{n}#{i}"), order=n) for i, n in enumerate(names)))

    asyncio.run(main())
    batcher.close()
    assert ran == ["k1#1", "k1#3", "k2#2", "k3#0"]
