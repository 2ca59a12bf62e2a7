"""Ledger write cost per request: one transaction each vs the write batcher (group commit).

Each request holds credit and later settles it (the two writes every priced request makes).
``sequential`` runs them one transaction each, as the CLI does; ``batched, N in flight``
runs N requests' writes concurrently through ``Ledger.hold_async``/``settle_async``, as the
gateway does. Prints microseconds of wall time per request, on SQLite by default::

    .venv/bin/python bench/ledger_writes.py [--url postgresql://127.0.0.1/test] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'ledger.db'}"
    db = Database(url)
    db.migrate()
    key, _ = KeyStore(db).create("bench-ledger")
    ledger = Ledger(db, hold_ttl_s=600)
    ledger.top_up(key.id, 10**15)
    sequential(ledger, key.id, 100)  # warm caches
    print(f"{db!r}, {args.requests} requests (hold + settle each)\n")
    print("| mode | µs per request |\n|---|---:|")
    print(f"| sequential, one transaction each | {sequential(ledger, key.id, args.requests):.0f} |")
    for in_flight in (1, 16, 500):
        cost = asyncio.run(batched(ledger, key.id, args.requests, in_flight))
        print(f"| batched, {in_flight} in flight | {cost:.0f} |")
    ledger.close()
    db.dispose()


if __name__ == "__main__":
    main()
