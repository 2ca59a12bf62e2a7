"""Read costs at scale: 10,000 keys, 1,000,000 usage records and ledger rows.

Fills a fresh database (SQLite file, or a PostgreSQL database it creates) in bulk, then
times the reads a user makes, at two sizes, so a cost that grows with the data shows:

- key lookup (``KeyStore.authenticate``, what every request does),
- ``GET /v1/usage`` over 30 days: totals and by day / model for a busy key, by model for
  an admin (every key), by key for an admin (a page of 100 keys, first and deep, and every
  key at once as the CLI asks),
- a key's ledger page (first and deep, ``after``),
- ``GET /v1/generations`` pages (first and deep, ``after``), a key's and an admin's.

The functions the routes call are timed (the database work); the HTTP layer adds a
constant. Traffic is skewed as in practice: a few keys make most of the requests.

    .venv/bin/python bench/scale.py --db sqlite --rows 1000000
    .venv/bin/python bench/scale.py --db postgresql --rows 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from imagegate.accounts.history import list_generations
from imagegate.accounts.keys import KeyStore
from imagegate.accounts.ledger import Ledger
from imagegate.accounts.rollup import Rollup
from imagegate.accounts.usage import UsageBook
from imagegate.db.models import ApiKeyRow, LedgerEntryRow, UsageRow
from imagegate.db.session import Database

KEYS = 10_000
MODELS = ("gpt-image-1", "flux-dev", "sdxl", "imagen-4", "grok-2-image")
PROVIDERS = ("openai", "fal", "together", "google", "xai")
DAYS = 30
CHUNK = 50_000
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def key_ids() -> list[str]:
    return [f"k{i:011d}" for i in range(KEYS)]


def token(key_id: str) -> str:
    return f"ig_{key_id}_secret-{key_id}"


def fill_keys(db: Database) -> None:
    rows = [
        {
            "id": kid,
            "name": kid,
            "secret_hash": hashlib.sha256(f"secret-{kid}".encode()).hexdigest(),
            "is_admin": False,
            "credits_micro": 10**12,
            "created_at": datetime.now(UTC) - timedelta(days=DAYS + 1),
        }
        for kid in key_ids()
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(ApiKeyRow), rows)


def fill_usage(db: Database, count: int, seed: int, now: datetime) -> None:
    """``count`` records (with their rollups and two ledger rows each) over 30 days.

    Key ``i`` is drawn with weight ``1 / (i + 1)``: key 0 is the busiest.
    """
    rng = random.Random(seed)
    ids = key_ids()
    weights = [1 / (i + 1) for i in range(KEYS)]
    span = DAYS * 86400
    done = 0
    while done < count:
        n = min(CHUNK, count - done)
        usage, ledger, rollup = [], [], Rollup()
        for kid in rng.choices(ids, weights, k=n):
            created = now - timedelta(seconds=rng.random() * span)
            m = rng.randrange(len(MODELS))
            cost = rng.choice((40_000, 80_000, 190_000))
            gen = f"gen_{uuid.UUID(int=rng.getrandbits(128)).hex}"
            attempts = [{"provider": PROVIDERS[m], "status": 200, "cost_micro": cost}]
            usage.append(
                {
                    "generation_id": gen,
                    "key_id": kid,
                    "model": MODELS[m],
                    "operation": "generate",
                    "provider": PROVIDERS[m],
                    "upstream_model": MODELS[m],
                    "status": 200,
                    "error_code": None,
                    "attempts": attempts,
                    "images": 1,
                    "latency_ms": 900.0,
                    "cost_micro": cost,
                    "created_at": created,
                }
            )
            for kind, amount in (("hold", -cost), ("charge", 0)):
                ledger.append(
                    {
                        "key_id": kid,
                        "kind": kind,
                        "amount_micro": amount,
                        "balance_micro": None,
                        "hold_id": None,
                        "generation_id": gen,
                        "note": None,
                        "created_at": created,
                    }
                )
            rollup.add(kid, created, MODELS[m], PROVIDERS[m], 200, 1, cost, attempts)
        with db.engine.begin() as conn:
            conn.execute(insert(UsageRow), usage)
            conn.execute(insert(LedgerEntryRow), ledger)
            rollup.write(conn)
        done += n
        print(f"  filled {done:,} usage rows", flush=True)


def timed(fn: Callable[[], Any], repeat: int = 15) -> float:
    """Median milliseconds of ``fn`` after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def measure(db: Database, now: datetime) -> dict[str, float]:
    keys, ledger, usage = KeyStore(db), Ledger(db, 60), UsageBook(db)
    hot, typical = "k00000000000", "k00000000500"
    start, end = now - timedelta(days=DAYS), now
    first = ledger.entries(hot, 101)
    deep_ledger = (ledger.entries(hot, 1000, first[-1].id) or first)[-2].id
    page = list_generations(db, hot, None, 100)
    deep_gen = page.records[-1].generation_id
    for _ in range(20):  # up to 20 pages down
        if not page.has_more:
            break
        page = list_generations(db, hot, deep_gen, 100)
        deep_gen = page.records[-1].generation_id
    rng = random.Random(7)
    ids = key_ids()
    deep_key = ids[KEYS // 2]  # the page after half the keys
    results = {
        "key lookup (authenticate)": timed(lambda: keys.authenticate(token(rng.choice(ids)))),
        "usage 30d totals, busy key": timed(lambda: usage.summary(start, end, None, hot)),
        "usage 30d by day, busy key": timed(lambda: usage.summary(start, end, "day", hot)),
        "usage 30d by model, busy key": timed(lambda: usage.summary(start, end, "model", hot)),
        "usage 30d by day, typical key": timed(lambda: usage.summary(start, end, "day", typical)),
        "usage 30d by model, all keys (admin)": timed(
            lambda: usage.summary(start, end, "model", None), 5
        ),
        "usage 30d by key, page 1 (100 keys, admin)": timed(
            lambda: usage.summary(start, end, "key", None, limit=100)
        ),
        "usage 30d by key, deep page (after, admin)": timed(
            lambda: usage.summary(start, end, "key", None, limit=100, after=deep_key)
        ),
        "usage 30d by key, all 10,000 keys (CLI, unpaged)": timed(
            lambda: usage.summary(start, end, "key", None), 5
        ),
        "ledger page 1 (100), busy key": timed(lambda: ledger.entries(hot, 101)),
        "ledger deep page (after), busy key": timed(lambda: ledger.entries(hot, 101, deep_ledger)),
        "generations page 1 (100), busy key": timed(lambda: list_generations(db, hot, None, 100)),
        "generations deep page (after), busy key": timed(
            lambda: list_generations(db, hot, deep_gen, 100)
        ),
        "generations page 1 (100), admin": timed(lambda: list_generations(db, None, None, 100)),
    }
    return results


def open_db(kind: str, workdir: Path) -> tuple[Database, Callable[[], None]]:
    if kind == "sqlite":
        db = Database(f"sqlite:///{workdir / 'scale.db'}")
        db.migrate()
        return db, db.dispose
    import psycopg

    name = f"imagegate_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    db = Database(url, statement_timeout_s=3600)  # bulk fills on a busy machine
    db.migrate()

    def drop() -> None:
        db.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return db, drop


def analyze(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = parser.parse_args()
    now = datetime.now(UTC).replace(minute=30)
    small = args.rows // 10
    with tempfile.TemporaryDirectory() as tmp:
        db, close = open_db(args.db, Path(tmp))
        try:
            fill_keys(db)
            fill_usage(db, small, 1, now)
            analyze(db)
            before = measure(db, now)
            fill_usage(db, args.rows - small, 2, now)
            analyze(db)
            after = measure(db, now)
        finally:
            close()
    write(args, small, before, after)


def write(
    args: argparse.Namespace, small: int, before: dict[str, float], after: dict[str, float]
) -> None:
    lines = [
        f"# bench/scale.py --db {args.db} --rows {args.rows}",
        "",
        f"{KEYS:,} keys; usage rows over {DAYS} days (and 2 ledger rows each), key i drawn "
        f"with weight 1/(i+1); the busy key holds ~10% of the rows. Median of 15 runs "
        "(admin over every key at once: 5), ms. Measured "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on the shared 2-core machine under load "
        "from other sessions.",
        "",
        f"| read | {small:,} rows | {args.rows:,} rows |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {before[name]:.1f} | {after[name]:.1f} |" for name in before]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale-{args.db}.md"
    path.write_text("\n".join(lines) + "\n")
    (args.out / f"scale-{args.db}.json").write_bytes(
        orjson.dumps({"rows": [small, args.rows], "before": before, "after": after})
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
