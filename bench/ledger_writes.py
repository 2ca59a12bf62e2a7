"""Ledger write cost per request: one transaction each vs the write batcher (group commit).

Each request holds credit and later settles it (the two writes every priced request makes).
``sequential`` runs them one transaction each, as the CLI does; ``batched, N in flight``
runs N requests' writes concurrently through ``Ledger.hold_async``/``settle_async``, as the
gateway does. Prints microseconds of wall time per request, on SQLite by default::

    .venv/bin/python bench/ledger_writes.py [--url postgresql://127.0.0.1/test] [--requests 2000]

``--lease-usd 1`` adds the batched runs with credit leases of that size (accounts/leases.py)
and counts, per request, the commits, the writes of the key's row and all statements sent.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event

from imagegate.accounts.keys import KeyStore
from imagegate.accounts.ledger import Ledger
from imagegate.accounts.usage import UsageRecord
from imagegate.db.session import Database

_ids = itertools.count()


def _usage(key_id: str) -> UsageRecord:
    return UsageRecord(f"gen_bench_{time.time_ns()}_{next(_ids)}", key_id, "m", "generate")


def sequential(ledger: Ledger, key_id: str, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        usage = _usage(key_id)
        hold = ledger.hold(key_id, 1_000, usage.generation_id)
        ledger.settle(hold, 500, usage)
    return (time.perf_counter() - started) / n * 1e6


async def batched(ledger: Ledger, key_id: str, n: int, in_flight: int) -> float:
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            usage = _usage(key_id)
            hold = await ledger.hold_async(key_id, 1_000, usage.generation_id)
            await ledger.settle_async(hold, 500, usage)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return (time.perf_counter() - started) / n * 1e6


class Writes:
    """Statements, key-row writes and commits that reach the database."""

    def __init__(self, db: Database) -> None:
        self.seen: Counter[str] = Counter()
        event.listen(db.engine, "before_cursor_execute", self._statement)
        event.listen(db.engine, "commit", self._commit)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen["statements"] += 1
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            self.seen["key_writes"] += 1

    def _commit(self, _conn: Any) -> None:
        self.seen["commits"] += 1

    def per_request(self, n: int) -> str:
        s = self.seen
        return f"{s['commits'] / n:.3f} | {s['key_writes'] / n:.3f} | {s['statements'] / n:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--lease-usd", type=float, default=0.0, help="also run with leases")
    args = parser.parse_args()
    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'ledger.db'}"
    db = Database(url)
    db.migrate()
    key, _ = KeyStore(db).create("bench-ledger")
    ledger = Ledger(db, hold_ttl_s=600)
    ledger.top_up(key.id, 10**15)
    sequential(ledger, key.id, 100)  # warm caches
    n = args.requests
    print(f"{db!r}, {n} requests (hold + settle each)\n")
    print("| mode | µs per request | commits | key-row writes | statements |")
    print("|---|---:|---:|---:|---:|")
    writes = Writes(db)
    cost = sequential(ledger, key.id, n)
    print(f"| sequential, one transaction each | {cost:.0f} | {writes.per_request(n)} |")
    modes: list[tuple[str, Ledger]] = [("batched", ledger)]
    if args.lease_usd > 0:
        lease = round(args.lease_usd * 1_000_000)
        modes.append((f"leases of {args.lease_usd:g} USD", Ledger(db, 600, lease, 600)))
    for name, used in modes:
        for in_flight in (1, 16, 500):
            writes.seen.clear()
            cost = asyncio.run(batched(used, key.id, n, in_flight))
            print(f"| {name}, {in_flight} in flight | {cost:.0f} | {writes.per_request(n)} |")
        used.close()
    db.dispose()


if __name__ == "__main__":
    main()
