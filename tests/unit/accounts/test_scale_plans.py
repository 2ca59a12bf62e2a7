"""The reads that must stay flat as data grows use indexes and keyset pages.

bench/scale.py times them over 1,000,000 records; this checks the reason they are flat,
without timing: every statement the read functions send is captured and explained by the
database itself, on 20,000 records. A plan that scans a big table, sorts it, or skips
rows with OFFSET would cost more with every record added.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, event, insert

from imagegate.accounts.history import list_generations
from imagegate.accounts.keys import KeyStore
from imagegate.accounts.ledger import Ledger
from imagegate.accounts.rollup import Rollup
from imagegate.accounts.usage import UsageBook, UsageRecord, insert_usage
from imagegate.db.batch import WriteBatcher
from imagegate.db.models import LedgerEntryRow, UsageRow
from imagegate.db.session import Database

ROWS = 20_000
KEYS = 200
BIG_TABLES = (
    "usage_records",
    "ledger_entries",
    "usage_hourly",
    "usage_upstream_hourly",
    "usage_key_daily",
)


def _fill(db: Database, now: datetime) -> None:
    rng = random.Random(3)
    usage: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    rollup = Rollup()
    for i in range(ROWS):
        key_id = f"key{i % KEYS:04d}"
        created = now - timedelta(seconds=rng.random() * 30 * 86400)
        gen = f"gen_{i:08d}"
        usage.append(
            {
                "generation_id": gen,
                "key_id": key_id,
                "model": "m1",
                "operation": "generate",
                "provider": "p1",
                "upstream_model": "m1",
                "status": 200,
                "error_code": None,
                "attempts": [{"provider": "p1", "status": 200, "cost_micro": 5}],
                "images": 1,
                "latency_ms": 1.0,
                "cost_micro": 5,
                "created_at": created,
            }
        )
        rollup.add(key_id, created, "m1", "p1", 200, 1, 5, usage[-1]["attempts"])
        ledger.append(
            {"key_id": key_id, "kind": "charge", "amount_micro": -5, "created_at": created}
        )
    with db.engine.begin() as conn:
        conn.execute(insert(UsageRow), usage)
        conn.execute(insert(LedgerEntryRow), ledger)
        rollup.write(conn)
        conn.exec_driver_sql("ANALYZE")


@contextmanager
def _captured(db: Database) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def listen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", listen)


def _plan(db: Database, statement: str, params: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + statement, params).all()
    return "\n".join(str(row[-1]) for row in rows)


def _check(db: Database, read: Callable[[], object]) -> None:
    with _captured(db) as seen:
        read()
    assert seen
    for statement, params in seen:
        # SQLAlchemy's SQLite dialect writes LIMIT ? OFFSET ? even without an offset: 0.
        assert "OFFSET" not in statement.upper() or params[-1] == 0, statement
        plan = _plan(db, statement, params)
        for table in BIG_TABLES:
            if db.is_sqlite:
                assert f"SCAN {table}\n" not in plan + "\n", (statement, plan)
                assert not re.search("TEMP B-TREE FOR .*ORDER BY", plan), (statement, plan)
            else:
                assert f"Seq Scan on {table}" not in plan, (statement, plan)
                assert f"Sort Key: {table}" not in plan, (statement, plan)


def test_per_key_reads_use_indexes_and_keyset_pages(db: Database) -> None:
    now = datetime.now(UTC).replace(minute=30)
    _fill(db, now)
    keys, ledger, usage = KeyStore(db), Ledger(db, 60), UsageBook(db)
    _, token = keys.create("scale")
    key = "key0007"
    first = list_generations(db, key, None, 10)
    entries = ledger.entries(key, 10)
    start, end = now - timedelta(days=30), now + timedelta(minutes=5)

    _check(db, lambda: keys.authenticate(token))
    _check(db, lambda: list_generations(db, key, None, 10))
    _check(db, lambda: list_generations(db, key, first.records[-1].generation_id, 10))
    _check(db, lambda: list_generations(db, None, first.records[-1].generation_id, 10))
    _check(db, lambda: ledger.entries(key, 10))
    _check(db, lambda: ledger.entries(key, 10, entries[-1].id))
    for group_by in (None, "day", "model"):
        _check(db, lambda g=group_by: usage.summary(start, end, g, key))  # type: ignore[misc]


def test_usage_by_key_pages_through_the_daily_rollups_by_keyset(db: Database) -> None:
    """An admin's usage grouped by key reads one page of keys: the daily rows of those
    keys (one index range to find them, one lookup per key to sum them), no scan."""
    now = datetime.now(UTC).replace(minute=30)
    _fill(db, now)
    usage = UsageBook(db)
    start, end = now - timedelta(days=30, hours=5), now + timedelta(minutes=5)
    first = usage.summary(start, end, "key", None, limit=10)
    assert first["has_more"] and first["last_id"] == "key0009"
    assert [g["group"] for g in first["data"]] == [f"key{i:04d}" for i in range(10)]
    _check(db, lambda: usage.summary(start, end, "key", None, limit=10))
    _check(db, lambda: usage.summary(start, end, "key", None, limit=10, after="key0150"))


def test_usage_over_every_key_reads_rollups_and_edge_records_by_index(db: Database) -> None:
    """An admin's usage over every key: the every-key rollup rows, and the records of the
    two partial hours summed by the database (attempts expanded as JSON), by index."""
    now = datetime.now(UTC).replace(minute=30)
    _fill(db, now)
    usage = UsageBook(db)
    start, end = now - timedelta(days=30, minutes=13), now + timedelta(minutes=5)
    for group_by in (None, "day", "model", "provider"):
        _check(db, lambda g=group_by: usage.summary(start, end, g, None))  # type: ignore[misc]
    _check(db, lambda: usage.summary(now - timedelta(minutes=20), now, "model", None))


def _recorded(
    book: UsageBook, n: int, fields: Callable[[int], dict[str, Any]], rng: random.Random
) -> list[UsageRecord]:
    """``n`` records of two models, one in three failed, one upstream call of 7 micro-USD
    each; ``fields(i)`` gives the rest (id, key, provider, images, time). Each is written
    as a request's would be, with its rollups."""
    records = []
    for i in range(n):
        record = UsageRecord(
            **fields(i),
            model=rng.choice(("m1", "m2")),
            operation="generate",
            status=rng.choice((200, 200, 502)),
            attempts=[{"provider": "p1", "status": 200, "cost_micro": 7}],
            cost_micro=rng.randrange(100),
        )
        book.record(record)
        records.append(record)
    return records


def test_usage_by_key_pages_sum_like_a_count_of_the_records(db: Database) -> None:
    """Pages of keys (whole days from the daily rollups, partial days from the hourly ones
    and the records) add up to a count of the records per key; totals are every key's."""
    book, rng = UsageBook(db), random.Random(9)
    now = datetime.now(UTC)
    records = _recorded(
        book,
        150,
        lambda i: {
            "generation_id": f"gen_p{i}",
            "key_id": f"k{rng.randrange(7)}",
            "provider": "p1",
            "images": rng.randrange(3),
            "created_at": now - timedelta(minutes=rng.randrange(60 * 24 * 5)),
        },
        rng,
    )
    start, end = now - timedelta(days=3, hours=7, minutes=13), now - timedelta(minutes=17)
    inside = [r for r in records if start <= r.created_at < end]
    expected = {
        k: (sum(r.key_id == k for r in inside), sum(r.cost_micro for r in inside if r.key_id == k))
        for k in sorted({r.key_id for r in inside})
    }
    seen: dict[str, tuple[int, int]] = {}
    after, pages = None, 0
    while True:
        page = book.summary(start, end, "key", None, limit=2, after=after)
        pages += 1
        assert page["totals"]["requests"] == len(inside)
        assert page["upstream"]["calls"] == len(inside)
        for g in page["data"]:
            seen[g["group"]] = (g["requests"], round(g["cost_usd"] * 1_000_000))
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == expected and pages == 4
    everyone = book.summary(start, end, "key", None)
    assert {g["group"]: g["requests"] for g in everyone["data"]} == {
        k: n for k, (n, _) in expected.items()
    }


def test_usage_from_rollups_matches_the_records(db: Database) -> None:
    """Whole hours come from the rollups, partial ones from records: same sums as a count."""
    book, rng = UsageBook(db), random.Random(5)
    now = datetime.now(UTC)
    records = _recorded(
        book,
        120,
        lambda i: {
            "generation_id": f"gen_r{i}",
            "key_id": rng.choice(("ka", "kb")),
            "provider": rng.choice(("p1", None)),
            "images": 1,
            "created_at": now - timedelta(minutes=rng.randrange(60 * 50)),
        },
        rng,
    )
    start, end = now - timedelta(hours=37, minutes=13), now - timedelta(minutes=17)
    inside = [r for r in records if start <= r.created_at < end and r.key_id == "ka"]
    summary = book.summary(start, end, "model", "ka")
    assert summary["totals"]["requests"] == len(inside)
    assert summary["totals"]["succeeded"] == sum(r.status == 200 for r in inside)
    assert summary["totals"]["cost_usd"] == round(sum(r.cost_micro for r in inside) / 1e6, 6)
    by_model = {g["group"]: g["requests"] for g in summary["data"]}
    assert by_model == {m: n for m in ("m1", "m2") if (n := sum(r.model == m for r in inside))}
    assert summary["upstream"]["calls"] == len(inside)
    by_day = book.summary(start, end, "day", None)["data"]
    assert sum(g["requests"] for g in by_day) == sum(start <= r.created_at < end for r in records)


async def test_all_keys_totals_are_written_once_per_batch_and_only_for_committed_jobs(
    db: Database,
) -> None:
    """The every-key rows are deferred to the end of a write batch; a job that fails
    leaves nothing in them."""
    batcher, book = WriteBatcher(db), UsageBook(db)
    now = datetime.now(UTC)

    def job(record: UsageRecord, fail: bool) -> Callable[[Connection], None]:
        def run(conn: Connection) -> None:
            insert_usage(conn, record)
            if fail:
                raise ValueError("refused")

        return run

    async def one(i: int) -> None:
        record = UsageRecord(
            generation_id=f"gen_b{i}",
            key_id=f"key{i % 7}",
            model="m1",
            operation="generate",
            cost_micro=3,
            attempts=[{"provider": "p1", "status": 200, "cost_micro": 2}],
            created_at=now - timedelta(hours=i % 5, minutes=1),
        )
        with contextlib.suppress(ValueError):
            await batcher.run(job(record, fail=i % 10 == 0), order=record.key_id)

    try:
        await asyncio.gather(*(one(i) for i in range(100)))
    finally:
        batcher.close()
    summary = book.summary(now - timedelta(hours=6), now, "model", None)
    assert summary["totals"]["requests"] == 90
    assert summary["upstream"]["calls"] == 90
    by_key = book.summary(now - timedelta(hours=6), now, "key", None)["data"]
    assert sum(g["requests"] for g in by_key) == 90 and "" not in {g["group"] for g in by_key}


def test_migration_0007_sums_existing_records_into_the_rollups(database_url: str) -> None:
    """Records written before 0007 count in ``GET /v1/usage`` after it, as they did."""
    db = Database(database_url)
    try:
        db.migrate("0003")
        now = datetime.now(UTC)
        rows = [
            {
                "generation_id": f"gen_old{i}",
                "key_id": "old",
                "model": "m1",
                "operation": "generate",
                "provider": None if i % 2 else "p1",
                "upstream_model": None,
                "status": 200 if i % 3 else 500,
                "error_code": None,
                "attempts": [{"provider": "p1", "status": 200, "cost_micro": 4}],
                "images": 1,
                "latency_ms": 1.0,
                "cost_micro": 10,
                "created_at": now - timedelta(hours=i, minutes=30),
            }
            for i in range(30)
        ]
        with db.write() as conn:
            conn.execute(insert(UsageRow), rows)
        db.migrate()
        summary = UsageBook(db).summary(now - timedelta(days=2), now, "provider", None)
        assert summary["totals"]["requests"] == 30
        assert summary["totals"]["succeeded"] == sum(1 for i in range(30) if i % 3)
        assert summary["totals"]["cost_usd"] == 0.0003
        assert {g["group"]: g["requests"] for g in summary["data"]} == {"p1": 15, None: 15}
        assert summary["upstream"]["calls"] == 30
        assert (
            UsageBook(db).summary(now - timedelta(days=2), now, None, "old")["totals"]["requests"]
            == 30
        )
        by_key = UsageBook(db).summary(now - timedelta(days=3), now, "key", None, limit=5)
        assert [(g["group"], g["requests"], g["cost_usd"]) for g in by_key["data"]] == [
            ("old", 30, 0.0003)
        ]
    finally:
        db.dispose()
