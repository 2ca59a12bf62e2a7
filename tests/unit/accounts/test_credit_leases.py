"""Credit leases (accounts/leases.py): a worker leases a slice of a key's balance in one
write and holds from it in memory. Writes are counted in the database (statements that
reach it, rows it keeps), never timed; every test ends on the books' invariant."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from books import assert_books_balance
from imagegate.accounts.keys import KeyStore
from imagegate.accounts.leases import refund as lease_refund
from imagegate.accounts.ledger import Hold, Ledger
from imagegate.accounts.usage import UsageRecord
from imagegate.config import ConfigError, load_settings
from imagegate.core.errors import InsufficientCredits
from imagegate.db.models import CreditHoldRow, CreditLeaseRow, LedgerEntryRow, UsageRow
from imagegate.db.session import Database

PRICE = 10_000  # micro-USD held and charged per request


def _key(db: Database, credits_usd: float) -> str:
    key, _ = KeyStore(db).create("k", credits_usd=credits_usd)
    return key.id


def _usage(key_id: str, gen: str) -> UsageRecord:
    return UsageRecord(gen, key_id, "m/a", "generate", provider="p", images=1)


@contextmanager
def _key_writes(db: Database) -> Iterator[Counter[str]]:
    """Count the statements that write a key's row or open a hold or a lease."""
    seen: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        head = " ".join(statement.split()[:3]).lower()
        for table in ("api_keys", "credit_holds", "credit_leases"):
            if table in head and head.startswith(("update", "insert")):
                seen[f"{head.split()[0]} {table}"] += 1

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def _rows(db: Database, model: Any) -> list[Any]:
    with db.session() as session:
        return list(session.scalars(select(model)))


async def _request(ledger: Ledger, key_id: str, gen: str, cost: int = PRICE) -> Hold | None:
    hold = await ledger.hold_async(key_id, PRICE, gen)
    await asyncio.sleep(0)  # others take their holds meanwhile: many in flight at once
    await ledger.settle_async(hold, cost, _usage(key_id, gen))
    return hold


def test_fifty_requests_write_the_key_once_through_one_lease(db: Database) -> None:
    """Without leases each request writes the key's row twice (hold, settlement); with a
    lease of 1 USD, 50 requests of 0.01 write it once, open no hold, and settle through
    the lease; closing the ledger gives the rest back."""
    key_id = _key(db, 10)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=1_000_000, lease_s=600)
    gens = [f"gen_{i}" for i in range(50)]

    async def load() -> list[Hold | None]:
        return await asyncio.gather(*(_request(ledger, key_id, g) for g in gens))

    with _key_writes(db) as writes:
        holds = asyncio.run(load())
    # One lease write; then each settlement adds its cost to the lease's row, batched.
    assert writes == Counter(
        {"update api_keys": 1, "insert credit_leases": 1, "update credit_leases": 50}
    )
    assert {h.lease_id for h in holds if h is not None} == {_rows(db, CreditLeaseRow)[0].id}
    assert _rows(db, CreditHoldRow) == []
    (lease,) = _rows(db, CreditLeaseRow)
    assert (lease.status, lease.amount_micro, lease.charged_micro) == ("open", 1_000_000, 500_000)
    assert ledger.balance(key_id) == 9_000_000
    assert_books_balance(db)  # an open lease is money held: the books balance meanwhile
    ledger.close()
    (lease,) = _rows(db, CreditLeaseRow)
    assert lease.status == "returned"
    assert ledger.balance(key_id) == 10_000_000 - 50 * PRICE
    kinds = [(e.kind, e.amount_micro, e.hold_id) for e in ledger.entries(key_id)]
    assert kinds == [
        ("open", 10_000_000, None),
        ("lease", -1_000_000, lease.id),
        ("lease_return", 500_000, lease.id),
    ]
    assert {u.lease_id for u in _rows(db, UsageRow)} == {lease.id}
    assert_books_balance(db)


def test_without_leases_every_request_writes_the_key_twice(db: Database) -> None:
    key_id = _key(db, 10)
    ledger = Ledger(db, hold_ttl_s=60)

    async def load() -> None:
        await asyncio.gather(*(_request(ledger, key_id, f"gen_{i}") for i in range(20)))

    with _key_writes(db) as writes:
        asyncio.run(load())
    ledger.close()
    assert writes == Counter(
        {"update api_keys": 40, "insert credit_holds": 20, "update credit_holds": 20}
    )
    assert_books_balance(db)


def test_a_slice_fits_exactly_its_holds_and_the_next_one_leases_again(db: Database) -> None:
    """A 0.03 lease takes exactly three holds of 0.01; the fourth leases a second slice,
    the first closing (returning nothing) once its last hold ends."""
    key_id = _key(db, 1)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=3 * PRICE, lease_s=600)
    assert ledger.leases is not None

    async def run() -> list[Hold | None]:
        holds = [await ledger.hold_async(key_id, PRICE, f"gen_{i}") for i in range(4)]
        for i, hold in enumerate(holds):
            await ledger.settle_async(hold, PRICE, _usage(key_id, f"gen_{i}"))
        return holds

    holds = asyncio.run(run())
    first, second = (h.lease_id for h in (holds[0], holds[3]) if h is not None)
    assert [h.lease_id for h in holds if h is not None] == [first, first, first, second]
    leases = {lease.id: lease for lease in _rows(db, CreditLeaseRow)}
    assert (leases[first].status, leases[first].charged_micro) == ("returned", 3 * PRICE)
    assert (leases[second].status, leases[second].charged_micro) == ("open", PRICE)
    returns = [e for e in ledger.entries(key_id) if e.hold_id == first]
    assert [(e.kind, e.amount_micro) for e in returns] == [("lease", -3 * PRICE)]
    ledger.close()
    assert ledger.balance(key_id) == 1_000_000 - 4 * PRICE
    assert_books_balance(db)


def test_a_balance_one_micro_short_of_a_slice_holds_per_request(db: Database) -> None:
    """A balance of exactly one slice is leased; one micro-USD less falls back to a
    per-request hold; a request bigger than a slice never takes one from a lease."""
    exact, short = _key(db, 0.03), _key(db, 0.029999)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=3 * PRICE, lease_s=600)

    async def run() -> tuple[Hold | None, Hold | None]:
        return (
            await ledger.hold_async(exact, PRICE, "gen_a"),
            await ledger.hold_async(short, PRICE, "gen_b"),
        )

    a, b = asyncio.run(run())
    assert a is not None and a.lease_id is not None
    assert b is not None and b.lease_id is None
    assert ledger.open_holds(short) == 1 and ledger.open_holds(exact) == 0
    assert ledger.balance(exact) == 0 and ledger.balance(short) == 29_999 - PRICE
    big = _key(db, 1)

    async def bigger() -> tuple[Hold | None, Hold | None]:
        return (
            await ledger.hold_async(big, 3 * PRICE, "gen_d"),
            await ledger.hold_async(big, 3 * PRICE + 1, "gen_e"),
        )

    d, e = asyncio.run(bigger())
    assert d is not None and d.lease_id is not None  # a slice exactly its size
    assert e is not None and e.lease_id is None
    ledger.close()
    assert_books_balance(db)


def test_a_request_that_does_not_fit_gives_the_remainder_back_in_the_same_write(
    db: Database,
) -> None:
    """Balance 0.06, slices of 0.05, holds of 0.02: two fit the slice; the third gives the
    unreserved 0.01 back and, the balance (0.02) being short of a slice, holds it per
    request, in one transaction: the key is drained to exactly zero."""
    key_id = _key(db, 0.06)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=5 * PRICE, lease_s=600)

    async def run() -> list[Hold | None]:
        return [await ledger.hold_async(key_id, 2 * PRICE, f"gen_{i}") for i in range(3)]

    with _key_writes(db) as writes:
        holds = asyncio.run(run())
    assert [h is not None and h.lease_id is not None for h in holds] == [True, True, False]
    assert ledger.balance(key_id) == 0
    # The lease; then in one transaction the give-back, a slice refused, the hold.
    assert writes["update api_keys"] == 4
    (lease,) = _rows(db, CreditLeaseRow)
    assert (lease.status, lease.amount_micro) == ("open", 4 * PRICE)
    rows = [(e.kind, e.amount_micro, e.balance_micro) for e in ledger.entries(key_id)][1:]
    assert rows == [
        ("lease", -5 * PRICE, PRICE),
        ("lease_return", PRICE, 2 * PRICE),
        ("hold", -2 * PRICE, 0),
    ]
    assert_books_balance(db)

    async def settle() -> None:
        for i, hold in enumerate(holds):
            await ledger.settle_async(hold, 2 * PRICE, _usage(key_id, f"gen_{i}"))

    asyncio.run(settle())
    ledger.close()
    assert ledger.balance(key_id) == 0
    assert _rows(db, CreditLeaseRow)[0].status == "returned"
    assert_books_balance(db)


def test_draining_a_key_to_zero_through_leases_wins_exactly_what_it_can_pay(
    db: Database,
) -> None:
    """220 concurrent requests on a key funded for 37 at 0.01 with 0.03 slices: twelve
    leases, then one per-request hold for the last 0.01; 183 refused; balance zero."""
    key_id = _key(db, 0.37)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=3 * PRICE, lease_s=600)

    async def one(i: int) -> int:
        try:
            await _request(ledger, key_id, f"gen_{i}")
        except InsufficientCredits:
            return 402
        return 200

    async def burst() -> Counter[int]:
        return Counter(await asyncio.gather(*(one(i) for i in range(220))))

    assert asyncio.run(burst()) == Counter({200: 37, 402: 183})
    ledger.close()
    assert ledger.balance(key_id) == 0
    assert len(_rows(db, CreditLeaseRow)) == 12
    assert len(_rows(db, CreditHoldRow)) == 1
    assert all(e.balance_micro is None or e.balance_micro >= 0 for e in ledger.entries(key_id))
    assert_books_balance(db)


def test_a_failed_request_returns_its_hold_to_the_lease_and_is_not_charged(
    db: Database,
) -> None:
    key_id = _key(db, 1)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=5 * PRICE, lease_s=600)
    usage = _usage(key_id, "gen_f")

    async def run() -> None:
        hold = await ledger.hold_async(key_id, PRICE, "gen_f")
        usage.status, usage.error_code = 502, "upstream_error"
        await ledger.release_async(hold, usage)

    asyncio.run(run())
    assert ledger.leases is not None and ledger.leases.open()[0].free_micro() == 5 * PRICE
    ledger.close()
    (row,) = _rows(db, UsageRow)
    assert (row.status, row.cost_micro) == (502, 0)
    assert ledger.balance(key_id) == 1_000_000
    assert_books_balance(db)


def test_an_undelivered_response_is_refunded_once_through_an_open_or_closed_lease(
    db: Database,
) -> None:
    key_id = _key(db, 1)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=5 * PRICE, lease_s=600)
    a, b = _usage(key_id, "gen_a"), _usage(key_id, "gen_b")

    async def settle() -> tuple[Hold | None, Hold | None]:
        ha = await ledger.hold_async(key_id, PRICE, "gen_a")
        hb = await ledger.hold_async(key_id, PRICE, "gen_b")
        await ledger.settle_async(ha, 7_000, a)
        await ledger.settle_async(hb, 8_000, b)
        return ha, hb

    async def refund(hold: Hold | None, usage: UsageRecord) -> None:
        usage.status, usage.error_code = 503, "storage_unavailable"
        await ledger.refund_async(hold, usage)

    ha, hb = asyncio.run(settle())
    asyncio.run(refund(ha, a))  # lease open: the charge goes back into the lease
    a.cost_micro = 7_000
    asyncio.run(refund(ha, a))  # a second refund gives nothing
    (lease,) = _rows(db, CreditLeaseRow)
    assert lease.charged_micro == 8_000
    assert ledger.leases is not None
    ledger.leases.return_all(db)  # lease returned: a refund now goes to the key
    asyncio.run(refund(hb, b))
    ledger.close()
    assert ledger.balance(key_id) == 1_000_000
    assert [e.kind for e in ledger.entries(key_id)][-1] == "refund"
    assert {u.generation_id: u.cost_micro for u in _rows(db, UsageRow)} == {
        "gen_a": 0,
        "gen_b": 0,
    }
    assert_books_balance(db)


def test_a_cost_above_its_hold_is_charged_whole_through_the_lease(db: Database) -> None:
    key_id = _key(db, 1)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=5 * PRICE, lease_s=600)
    asyncio.run(_request(ledger, key_id, "gen_x", cost=PRICE + 1))
    ledger.close()
    assert ledger.balance(key_id) == 1_000_000 - PRICE - 1
    assert_books_balance(db)


def test_a_crashed_workers_lease_is_reclaimed_after_its_expiry_and_a_late_settle_charges(
    db: Database,
) -> None:
    """A worker dies holding a lease: its expiry (window + hold TTL) is good up to and
    including the instant; one microsecond past, any worker's sweep returns amount less
    charged (an ``expire`` row); a settlement arriving after that charges the key."""
    key_id = _key(db, 1)
    dead = Ledger(db, hold_ttl_s=60, lease_micro=5 * PRICE, lease_s=30)
    usage = _usage(key_id, "gen_late")

    async def crash() -> Hold | None:
        settled = await dead.hold_async(key_id, PRICE, "gen_done")
        await dead.settle_async(settled, 4_000, _usage(key_id, "gen_done"))
        return await dead.hold_async(key_id, PRICE, "gen_late")

    in_flight = asyncio.run(crash())
    dead.batcher.close()  # the process is gone: nothing returns its lease
    (lease,) = _rows(db, CreditLeaseRow)
    assert lease.worker.endswith(f":{os.getpid()}")
    assert lease.expires_at - lease.created_at == timedelta(seconds=30 + 60)
    sweeper = Ledger(db, hold_ttl_s=60)
    assert sweeper.expire_stale(now=lease.expires_at) == 0
    assert sweeper.balance(key_id) == 1_000_000 - 5 * PRICE
    assert sweeper.expire_stale(now=lease.expires_at + timedelta(microseconds=1)) == 1
    assert sweeper.expire_stale(now=lease.expires_at + timedelta(seconds=1)) == 0
    (lease,) = _rows(db, CreditLeaseRow)
    assert lease.status == "expired"
    assert sweeper.balance(key_id) == 1_000_000 - 4_000
    assert [(e.kind, e.amount_micro) for e in sweeper.entries(key_id)][-1] == (
        "expire",
        5 * PRICE - 4_000,
    )
    assert_books_balance(db)

    async def late() -> None:
        await sweeper.settle_async(in_flight, 6_000, usage)

    asyncio.run(late())
    sweeper.close()
    assert sweeper.balance(key_id) == 1_000_000 - 10_000
    assert sweeper.entries(key_id)[-1].kind == "charge"
    assert_books_balance(db)


def test_a_lease_past_its_window_is_returned_by_the_sweep_or_by_its_last_hold(
    db: Database,
) -> None:
    """Past its window an idle lease is closed by the sweep; a busy one takes no new hold
    and is closed by the settlement of its last one."""
    busy_key, idle_key = _key(db, 1), _key(db, 1)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=5 * PRICE, lease_s=0.001)
    assert ledger.leases is not None

    async def run() -> tuple[int, int, int]:
        assert ledger.leases is not None
        await _request(ledger, idle_key, "gen_idle")
        hold = await ledger.hold_async(busy_key, PRICE, "gen_a")
        await asyncio.sleep(0.01)  # both windows pass; one hold is still in flight
        swept = await ledger.leases.return_idle()  # the idle lease only
        await ledger.settle_async(hold, PRICE, _usage(busy_key, "gen_a"))  # its last hold
        return swept, len(ledger.leases.open()), await ledger.leases.return_idle()

    assert asyncio.run(run()) == (1, 0, 0)
    assert [lease.status for lease in _rows(db, CreditLeaseRow)] == ["returned", "returned"]
    assert ledger.balance(busy_key) == ledger.balance(idle_key) == 1_000_000 - PRICE
    ledger.close()
    assert_books_balance(db)


@pytest.mark.postgres
def test_two_workers_on_postgresql_never_overdraw_a_key(pg_url: str) -> None:
    """Two workers (own engine, writer thread and event loop each) race 300 requests for
    a key funded for 200 with slices of five: no more than 200 are charged, no balance is
    ever negative, and what was charged plus the balance is what the key was given."""
    setup = Database(pg_url)
    setup.migrate()
    key_id = _key(setup, 2)
    results: list[Counter[int]] = []
    start = threading.Barrier(2)

    def worker(n: int) -> None:
        db = Database(pg_url)
        ledger = Ledger(db, hold_ttl_s=60, lease_micro=5 * PRICE, lease_s=600)

        async def one(i: int) -> int:
            try:
                await _request(ledger, key_id, f"gen_{n}_{i}")
            except InsufficientCredits:
                return 402
            return 200

        async def burst() -> Counter[int]:
            return Counter(await asyncio.gather(*(one(i) for i in range(150))))

        start.wait()
        results.append(asyncio.run(burst()))
        ledger.close()
        db.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    served = sum(r[200] for r in results)
    assert served + sum(r[402] for r in results) == 300
    ledger = Ledger(setup, hold_ttl_s=60)
    charged = sum(u.cost_micro for u in _rows(setup, UsageRow))
    assert charged == served * PRICE <= 2_000_000
    assert ledger.balance(key_id) == 2_000_000 - charged
    assert all(e.balance_micro is None or e.balance_micro >= 0 for e in ledger.entries(key_id))
    assert all(lease.status == "returned" for lease in _rows(setup, CreditLeaseRow))
    assert len(_rows(setup, CreditLeaseRow)) >= 2  # both workers leased
    with setup.engine.connect() as conn:
        kinds = Counter(conn.execute(select(LedgerEntryRow.kind)).scalars())
    assert kinds["lease"] < served  # fewer key writes than requests
    assert_books_balance(setup)
    setup.dispose()


@pytest.mark.parametrize(
    ("line", "usd", "seconds"),
    [("{}", 0.0, 30.0), ("{lease_usd: 0}", 0.0, 30.0), ("{lease_usd: 1.5, lease_s: 5}", 1.5, 5.0)],
)
def test_credits_lease_keys_configure_the_slice_and_window(
    tmp_path: Path, line: str, usd: float, seconds: float
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"credits: {line}\n")
    settings = load_settings(config)
    assert (settings.credit_lease_usd, settings.credit_lease_s) == (usd, seconds)


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("{lease_usd: -1}", "credits.lease_usd"),
        ("{lease_s: 0}", "credits.lease_s"),
        ("{lease: 1}", "credits.lease"),
    ],
)
def test_a_bad_lease_key_is_refused_naming_it(tmp_path: Path, line: str, named: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"credits: {line}\n")
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(config)


GATEWAY_CONFIG = """
providers:
  - {{id: up, type: openai_compatible, base_url: "{url}/v1", api_key: sk-fake}}
models:
  - id: test/priced
    operations: [generate]
    sizes: [256x256]
    endpoints:
      - {{provider: up, upstream_model: up-m, pricing: {{per_image: 0.01}}}}
credits: {{lease_usd: 0.05}}
"""


@pytest.mark.postgres
def test_two_gateway_processes_with_leases_serve_and_return_every_slice(
    tmp_path: Path, pg_url: str
) -> None:
    """Two gateway processes on one PostgreSQL with 0.05 slices: 300 requests over 4 keys
    at c=32, each key on both, all served and charged once with far fewer key
    writes than requests; after shutdown no lease is open and the books balance with
    every upstream call on them."""
    import httpx

    from fakes.openai_images import FakeOpenAI, serve_fake
    from gateway import ADMIN_KEY, run_gateway

    env = {"IMAGEGATE_DATABASE_URL": pg_url}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serve_fake(FakeOpenAI(delay_s=0.02)) as up:
        config = GATEWAY_CONFIG.format(url=up.url)
        with (
            run_gateway(tmp_path / "a", config, env=env) as first,
            run_gateway(tmp_path / "b", config, env=env) as second,
        ):
            keys = [
                httpx.post(
                    f"{first.v1}/admin/keys", json={"name": "u", "credits": 10}, headers=admin
                ).json()["key"]
                for _ in range(4)
            ]

            async def load() -> Counter[int]:
                gate = asyncio.Semaphore(32)
                async with httpx.AsyncClient(timeout=60) as client:

                    async def one(i: int) -> int:
                        async with gate:
                            response = await client.post(
                                f"{(first, second)[i % 2].v1}/images/generations",
                                json={"model": "test/priced", "prompt": "p", "size": "256x256"},
                                headers={"Authorization": f"Bearer {keys[(i // 2) % 4]}"},
                            )
                            return response.status_code

                    return Counter(await asyncio.gather(*(one(i) for i in range(300))))

            statuses = asyncio.run(load())
    assert statuses == Counter({200: 300}), statuses
    db = Database(pg_url)
    try:
        leases = _rows(db, CreditLeaseRow)
        assert len({lease.worker for lease in leases}) == 2
        assert all(lease.status == "returned" for lease in leases)
        # Five requests fit a slice; partial slices at the ends (and windows) cost a few more.
        assert len(leases) <= 300 // 3
        assert _rows(db, CreditHoldRow) == []
        summary = assert_books_balance(db, upstream_calls=len(up.calls))
        assert summary.upstream_calls == 300
        assert summary.charged_micro == 300 * PRICE
    finally:
        db.dispose()


def _orphan_usage(conn: Any) -> None:
    from imagegate.accounts.usage import insert_usage

    insert_usage(conn, _usage("k", "gen_orphan"), "lease_gone")


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        ("UPDATE credit_leases SET amount_micro = amount_micro - 1", "its entries sum to"),
        ("UPDATE credit_leases SET charged_micro = charged_micro + 1", "its usage records cost"),
        (_orphan_usage, "lease lease_gone, which does not exist"),
    ],
)
def test_the_books_catch_a_lease_whose_money_does_not_add_up(
    db: Database, tamper: Any, named: str
) -> None:
    from sqlalchemy import text

    from imagegate.accounts.audit import BooksUnbalanced, verify_books

    key_id = _key(db, 1)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=5 * PRICE, lease_s=600)
    asyncio.run(_request(ledger, key_id, "gen_a"))
    verify_books(db)  # an open lease with one charge: balanced
    with db.write() as conn:
        if callable(tamper):
            tamper(conn)
        else:
            conn.execute(text(tamper))
    with pytest.raises(BooksUnbalanced, match=named):
        verify_books(db)
    ledger.batcher.close()


class _Undone(Exception):
    """Stands for the deadlock that rolls a write-batch job back before it is run again."""


def test_a_lease_refund_run_again_after_its_transaction_was_undone_gives_the_charge_back(
    db: Database,
) -> None:
    """A write-batch job may run twice (its first run undone by a lost deadlock): the
    second run of a lease refund must still give the charge back to the lease."""
    key_id = _key(db, 1)
    ledger = Ledger(db, hold_ttl_s=60, lease_micro=5 * PRICE, lease_s=600)
    usage = _usage(key_id, "gen_u")

    async def settle() -> Hold | None:
        hold = await ledger.hold_async(key_id, PRICE, "gen_u")
        await ledger.settle_async(hold, 7_000, usage)
        return hold

    hold = asyncio.run(settle())
    assert hold is not None and hold.lease_id is not None
    usage.status, usage.error_code = 503, "storage_unavailable"
    with pytest.raises(_Undone), db.write() as conn:
        lease_refund(conn, hold, usage)  # the first run, rolled back
        raise _Undone
    asyncio.run(ledger.refund_async(hold, usage))  # the run that commits
    (lease,) = _rows(db, CreditLeaseRow)
    assert lease.charged_micro == 0 and usage.cost_micro == 0
    ledger.close()
    assert ledger.balance(key_id) == 1_000_000
    assert {u.generation_id: u.cost_micro for u in _rows(db, UsageRow)} == {"gen_u": 0}
    assert_books_balance(db)
