"""The credit ledger, usage records and idempotency store on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from books import assert_books_balance
from imagegate.accounts.audit import BooksUnbalanced, verify_books
from imagegate.accounts.idempotency import IdempotencyStore, StoredResponse, request_hash
from imagegate.accounts.keys import KeyStore
from imagegate.accounts.ledger import Hold, HoldClosed, Ledger
from imagegate.accounts.ledger import _refund as refund_job
from imagegate.accounts.usage import UsageBook, UsageRecord
from imagegate.core.errors import Conflict, InsufficientCredits, InvalidRequest, NotFound
from imagegate.db.models import ApiKeyRow, CreditHoldRow
from imagegate.db.session import Database
from imagegate.obs import metrics


def _key(db: Database, credits: float | None) -> str:
    key, _ = KeyStore(db).create("test", credits_usd=credits)
    return key.id


def _usage(key_id: str, gen: str, model: str = "m/a", provider: str = "p") -> UsageRecord:
    return UsageRecord(gen, key_id, model, "generate", provider=provider, images=1)


def _ledger_sum(ledger: Ledger, key_id: str) -> int:
    return sum(e.amount_micro for e in ledger.entries(key_id))


def test_hold_settle_charges_actual_cost_and_returns_the_rest(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = ledger.hold(key_id, 300_000, "gen_a")
    assert hold is not None
    assert ledger.balance(key_id) == 700_000
    ledger.settle(hold, 120_000, _usage(key_id, "gen_a"))
    assert ledger.balance(key_id) == 880_000
    assert ledger.open_holds(key_id) == 0
    kinds = [e.kind for e in ledger.entries(key_id)]
    assert kinds == ["open", "hold", "settle"]
    # The credits given at creation open the ledger: the entries sum to the balance.
    assert _ledger_sum(ledger, key_id) == 880_000
    assert ledger.entries(key_id)[-1].balance_micro == 880_000
    record = UsageBook(db).get("gen_a")
    assert record is not None and record.cost_micro == 120_000 and record.status == 200


def test_release_returns_everything_and_records_failure(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 0.5)
    hold = ledger.hold(key_id, 500_000, "gen_b")
    assert ledger.balance(key_id) == 0
    usage = _usage(key_id, "gen_b")
    usage.status, usage.error_code = 502, "upstream_failed"
    ledger.release(hold, usage)
    assert ledger.balance(key_id) == 500_000
    record = UsageBook(db).get("gen_b")
    assert record is not None and (record.status, record.cost_micro) == (502, 0)


def test_hold_beyond_balance_is_402_and_changes_nothing(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 0.1)
    with pytest.raises(InsufficientCredits) as info:
        ledger.hold(key_id, 100_001, "gen_c")
    assert info.value.status == 402 and "$0.100000" in info.value.message
    assert ledger.balance(key_id) == 100_000
    assert [e.kind for e in ledger.entries(key_id)] == ["open"]


def test_key_without_credit_limit_needs_no_hold(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, None)
    assert ledger.hold(key_id, 10**12, "gen_d") is None
    ledger.settle(None, 40_000, _usage(key_id, "gen_d"))
    record = UsageBook(db).get("gen_d")
    assert record is not None and record.cost_micro == 40_000


def test_cost_above_the_hold_is_charged_by_an_adjust_entry(db: Database) -> None:
    """Never a silent cap: the excess is charged, visibly, and counted as an error."""
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = ledger.hold(key_id, 100_000, "gen_e")
    assert hold is not None  # the key has a credit limit
    usage = _usage(key_id, "gen_e")
    before = metrics.ABOVE_HOLD._value.get()
    ledger.settle(hold, 250_000, usage)
    assert ledger.balance(key_id) == 750_000
    assert usage.cost_micro == 250_000
    adjust = ledger.entries(key_id)[-1]
    assert (adjust.kind, adjust.amount_micro, adjust.hold_id) == ("adjust", -150_000, hold.id)
    assert metrics.ABOVE_HOLD._value.get() == before + 1
    assert_books_balance(db)


def test_settling_twice_charges_once(db: Database) -> None:
    """A second settlement or release of a settled hold is refused, never charged again."""
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = ledger.hold(key_id, 200_000, "gen_f")
    ledger.settle(hold, 50_000, _usage(key_id, "gen_f"))
    with pytest.raises(HoldClosed):
        ledger.settle(hold, 50_000, _usage(key_id, "gen_f2"))
    with pytest.raises(HoldClosed):
        ledger.release(hold, _usage(key_id, "gen_f3"))
    assert ledger.balance(key_id) == 950_000
    assert UsageBook(db).get("gen_f2") is None
    assert_books_balance(db)


def _undelivered(db: Database, gen: str) -> tuple[Ledger, str, Hold | None, UsageRecord]:
    """A request charged 0.05 of its 0.20 hold whose response was then not delivered."""
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = ledger.hold(key_id, 200_000, gen)
    usage = _usage(key_id, gen)
    ledger.settle(hold, 50_000, usage)
    usage.status, usage.error_code = 503, "response_not_delivered"
    return ledger, key_id, hold, usage


def test_an_undelivered_response_is_refunded(db: Database) -> None:
    ledger, key_id, hold, usage = _undelivered(db, "gen_r")
    ledger.refund(hold, usage)
    ledger.refund(hold, usage)  # once only
    assert ledger.balance(key_id) == 1_000_000
    assert [e.kind for e in ledger.entries(key_id)][-1] == "refund"
    record = UsageBook(db).get("gen_r")
    assert record is not None and (record.status, record.cost_micro) == (503, 0)
    assert_books_balance(db)


def test_stale_holds_expire_back_to_the_key(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    stale = ledger.hold(key_id, 400_000, "gen_g")
    fresh = ledger.hold(key_id, 100_000, "gen_h")
    assert stale is not None and fresh is not None
    with db.write() as conn:  # as if the process holding it died long ago
        past = datetime.now(UTC) - timedelta(seconds=1)
        conn.execute(
            update(CreditHoldRow).where(CreditHoldRow.id == stale.id).values(expires_at=past)
        )
    assert ledger.expire_stale() == 1
    assert ledger.expire_stale() == 0
    assert ledger.balance(key_id) == 900_000
    assert ledger.open_holds(key_id) == 1
    with db.engine.connect() as conn:
        status = conn.execute(
            select(CreditHoldRow.status).where(CreditHoldRow.id == stale.id)
        ).scalar_one()
    assert status == "expired"
    # The late settlement of the expired hold still charges, directly.
    ledger.settle(stale, 30_000, _usage(key_id, "gen_g"))
    assert ledger.balance(key_id) == 870_000
    assert _ledger_sum(ledger, key_id) == 870_000
    assert_books_balance(db)


def test_top_up(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 0.25)
    assert ledger.top_up(key_id, 750_000, "invoice 7") == 1_000_000
    assert ledger.entries(key_id)[-1].note == "invoice 7"
    unlimited = _key(db, None)
    assert ledger.top_up(unlimited, 5_000_000) == 5_000_000  # now it has a limit
    with pytest.raises(NotFound):
        ledger.top_up("nosuchkey", 1)
    with pytest.raises(InvalidRequest):
        ledger.top_up(key_id, 0)


def test_concurrent_holds_never_overdraw(db: Database) -> None:
    """32 threads race for holds of 30k on a 300k balance: exactly 10 win."""
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 0.3)
    wins: list[int] = []
    refused: list[int] = []
    start = threading.Barrier(32)

    def race(i: int) -> None:
        start.wait()
        try:
            ledger.hold(key_id, 30_000, f"gen_{i}")
            wins.append(i)
        except InsufficientCredits:
            refused.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(wins), len(refused)) == (10, 22)
    assert ledger.balance(key_id) == 0
    assert ledger.open_holds(key_id) == 10


def test_usage_summary_groups(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    book = UsageBook(db)
    a, b = _key(db, None), _key(db, None)
    ledger.settle(None, 10_000, _usage(a, "g1", "m/x", "p1"))
    ledger.settle(None, 20_000, _usage(a, "g2", "m/y", "p1"))
    ledger.settle(None, 30_000, _usage(b, "g3", "m/x", "p2"))
    failed = _usage(b, "g4", "m/x", "p2")
    failed.status = 502
    ledger.release(None, failed)
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    by_model = book.summary(start, end, "model")
    assert by_model["totals"] == {"requests": 4, "succeeded": 3, "images": 4, "cost_usd": 0.06}
    assert [(g["group"], g["requests"], g["cost_usd"]) for g in by_model["data"]] == [
        ("m/x", 3, 0.04),
        ("m/y", 1, 0.02),
    ]
    only_a = book.summary(start, end, "provider", key_id=a)
    assert only_a["totals"]["cost_usd"] == 0.03
    by_day = book.summary(start, end, "day")
    assert [g["requests"] for g in by_day["data"]] == [4]
    earlier = book.summary(now - timedelta(days=3), now - timedelta(days=2), "key")
    assert earlier["totals"]["requests"] == 0 and earlier["data"] == []


def test_idempotency_store(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    key_id = _key(db, None)
    digest = request_hash({"prompt": "a", "n": 1}, [b"file"])
    assert digest == request_hash({"n": 1, "prompt": "a"}, [b"file"])  # key order ignored
    assert digest != request_hash({"n": 1, "prompt": "a"}, [b"other"])
    assert store.begin(key_id, "k1", digest) is None
    with pytest.raises(Conflict) as info:
        store.begin(key_id, "k1", digest)
    assert info.value.status == 409
    first = StoredResponse(200, {"x-imagegate-cost-usd": "0.01"}, b'{"data": []}')
    store.complete(key_id, "k1", first)
    assert store.begin(key_id, "k1", digest) == first
    with pytest.raises(InvalidRequest) as reused:
        store.begin(key_id, "k1", request_hash({"prompt": "b"}, []))
    assert reused.value.param == "Idempotency-Key"
    # A failed first request gives the key back.
    assert store.begin(key_id, "k2", digest) is None
    store.abandon(key_id, "k2")
    assert store.begin(key_id, "k2", digest) is None


def test_expired_records_are_purged(db: Database) -> None:
    from imagegate.db.models import IdempotencyRow

    store = IdempotencyStore(db, pending_ttl_s=60)
    key_id = _key(db, None)
    store.begin(key_id, "old", "d")
    store.begin(key_id, "new", "d")
    with db.write() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        conn.execute(
            update(IdempotencyRow)
            .where(IdempotencyRow.idempotency_key == "old")
            .values(expires_at=past)
        )
    assert store.purge_expired() == 1
    with pytest.raises(Conflict):
        store.begin(key_id, "new", "d")


def test_abandoned_pending_key_is_taken_over_after_its_ttl(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=0.2)
    key_id = _key(db, None)
    assert store.begin(key_id, "k", "d") is None
    time.sleep(0.3)
    assert store.begin(key_id, "k", "d") is None


def test_migration_0003_opens_the_ledger_of_existing_keys(database_url: str) -> None:
    """Keys funded before 0003 had no ledger row for their first credits; the migration adds
    one, so their books balance."""
    db = Database(database_url)
    try:
        db.migrate("0002")
        with db.write() as conn:
            conn.execute(
                insert(ApiKeyRow).values(
                    id="oldkey", name="old", secret_hash="0" * 64, credits_micro=2_500_000
                )
            )
        with pytest.raises(BooksUnbalanced):
            verify_books(db)
        db.migrate()
        assert [(e.kind, e.amount_micro) for e in Ledger(db, 60).entries("oldkey")] == [
            ("open", 2_500_000)
        ]
        assert_books_balance(db)
    finally:
        db.dispose()


class _Undone(Exception):
    """Stands for the deadlock that rolls a write-batch job back before it is run again."""


def test_a_refund_run_again_after_its_transaction_was_undone_gives_the_whole_charge_back(
    db: Database,
) -> None:
    """The write batcher runs a job again when its savepoint was undone (a lost deadlock):
    the second run must refund the charge, not find it already zeroed by the first."""
    ledger, key_id, hold, usage = _undelivered(db, "gen_u")
    with pytest.raises(_Undone), db.write() as conn:
        refund_job(conn, hold, usage)  # the first run, rolled back
        raise _Undone
    assert ledger.balance(key_id) == 950_000
    ledger.refund(hold, usage)  # the run that commits
    assert ledger.balance(key_id) == 1_000_000
    assert usage.cost_micro == 0
    record = UsageBook(db).get("gen_u")
    assert record is not None and (record.status, record.cost_micro) == (503, 0)
    assert [e.kind for e in ledger.entries(key_id)][-1] == "refund"
    assert_books_balance(db)
