"""The ledger's rules as a user of it states them: which key a movement touches, what each
ledger row says, and when a hold counts as stale. Two keys and two holds wherever a filter
picks one; every test ends on the ledger invariant (the rows sum to the balance)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update

from imagegate.accounts.keys import KeyStore
from imagegate.accounts.ledger import Hold, HoldClosed, Ledger, usd
from imagegate.accounts.usage import UsageBook, UsageRecord
from imagegate.core.errors import InsufficientCredits, InvalidRequest, NotFound
from imagegate.db.models import ApiKeyRow, CreditHoldRow
from imagegate.db.session import Database


def _key(db: Database, credits: float | None, name: str = "k") -> str:
    key, _ = KeyStore(db).create(name, credits_usd=credits)
    return key.id


def _usage(key_id: str, gen: str) -> UsageRecord:
    return UsageRecord(gen, key_id, "m/a", "generate", provider="p", images=1)


OPENING_NOTE = "credits given at key creation"


def _all_rows(ledger: Ledger, key_id: str) -> list[tuple[Any, ...]]:
    return [
        (e.kind, e.amount_micro, e.balance_micro, e.hold_id, e.generation_id, e.note)
        for e in ledger.entries(key_id)
    ]


def _rows(ledger: Ledger, key_id: str) -> list[tuple[Any, ...]]:
    """A key's rows after its ``open`` row (which :func:`_assert_invariant` checks)."""
    rows = _all_rows(ledger, key_id)
    return rows[1:] if rows and rows[0][0] == "open" else rows


def _assert_invariant(ledger: Ledger, key_id: str, opening_micro: int) -> None:
    """A key created with credits has an ``open`` row first, for exactly those credits;
    and the ledger rows of a key sum to its balance."""
    rows = _all_rows(ledger, key_id)
    opening = [r for r in rows if r[0] == "open"]
    if opening_micro:
        assert rows[0] == ("open", opening_micro, opening_micro, None, None, OPENING_NOTE)
        assert opening == [rows[0]]
    else:
        assert opening == []
    assert sum(r[1] for r in rows) == ledger.balance(key_id)


def _hold_status(db: Database, hold_id: str) -> tuple[str, int | None]:
    """A hold's status and charge; a closed hold must say when it closed."""
    with db.engine.connect() as conn:
        row = conn.execute(
            select(
                CreditHoldRow.status, CreditHoldRow.charged_micro, CreditHoldRow.closed_at
            ).where(CreditHoldRow.id == hold_id)
        ).one()
    assert (row[2] is None) == (row[0] == "open"), f"closed_at {row[2]} of a {row[0]} hold"
    return row[0], row[1]


def _recorded_cost(db: Database, generation_id: str) -> int:
    """The cost on a generation's usage record (which must exist)."""
    record = UsageBook(db).get(generation_id)
    assert record is not None, generation_id
    return record.cost_micro


def _granted(hold: Hold | None) -> Hold:
    """A hold the ledger must have granted (a limited key with enough credits)."""
    assert hold is not None
    return hold


def _expires_at(db: Database, hold_id: str) -> datetime:
    with db.engine.connect() as conn:
        value = conn.execute(
            select(CreditHoldRow.expires_at).where(CreditHoldRow.id == hold_id)
        ).scalar_one()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _age(db: Database, *holds: Hold, seconds: float = 1) -> None:
    """As if the processes holding these died: their expiry is ``seconds`` ago."""
    past = datetime.now(UTC) - timedelta(seconds=seconds)
    with db.write() as conn:
        for hold in holds:
            conn.execute(
                update(CreditHoldRow).where(CreditHoldRow.id == hold.id).values(expires_at=past)
            )


# -- top-up ------------------------------------------------------------------------------


def test_a_top_up_credits_only_the_key_it_names(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    limited_a, limited_b = _key(db, 1.0, "a"), _key(db, 2.0, "b")
    unlimited_a, unlimited_b = _key(db, None, "c"), _key(db, None, "d")
    assert ledger.top_up(limited_a, 250_000, "invoice 1") == 1_250_000
    assert ledger.top_up(unlimited_a, 500_000, "first credit") == 500_000
    assert ledger.balance(limited_b) == 2_000_000
    assert ledger.balance(unlimited_b) is None  # still without a credit limit
    assert _rows(ledger, limited_a) == [("topup", 250_000, 1_250_000, None, None, "invoice 1")]
    assert _rows(ledger, unlimited_a) == [("topup", 500_000, 500_000, None, None, "first credit")]
    assert _rows(ledger, limited_b) == [] and ledger.entries(unlimited_b) == []
    _assert_invariant(ledger, limited_a, 1_000_000)
    _assert_invariant(ledger, limited_b, 2_000_000)
    _assert_invariant(ledger, unlimited_a, 0)


def test_a_second_top_up_of_a_formerly_unlimited_key_adds_to_the_first(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, None)
    assert ledger.top_up(key_id, 300_000) == 300_000
    assert ledger.top_up(key_id, 200_000) == 500_000
    assert [(e.kind, e.amount_micro, e.balance_micro) for e in ledger.entries(key_id)] == [
        ("topup", 300_000, 300_000),
        ("topup", 200_000, 500_000),
    ]
    _assert_invariant(ledger, key_id, 0)


def test_a_top_up_of_nothing_or_less_is_refused_naming_amount(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    for amount in (0, -1):
        with pytest.raises(InvalidRequest) as info:
            ledger.top_up(key_id, amount)
        assert (info.value.status, info.value.param) == (400, "amount")
        assert info.value.message == "'amount' must be a positive number of USD."
    assert ledger.top_up(key_id, 1) == 1_000_001  # the smallest top-up is one micro-USD
    _assert_invariant(ledger, key_id, 1_000_000)


def test_a_top_up_of_an_unknown_key_is_404_key_not_found(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    other = _key(db, None)
    with pytest.raises(NotFound) as info:
        ledger.top_up("nosuchkey", 10)
    err = info.value
    assert (err.status, err.code, err.param) == (404, "key_not_found", "key_id")
    assert "nosuchkey" in err.message
    assert ledger.balance(other) is None and ledger.entries(other) == []


# -- holds, settlements, releases --------------------------------------------------------


def test_hold_and_settle_rows_name_the_hold_the_generation_and_the_charge(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = ledger.hold(key_id, 300_000, "gen_1")
    assert hold == Hold(hold.id if hold else "", key_id, 300_000, "gen_1")
    assert hold is not None and re.fullmatch(r"hold_[0-9a-f]{24}", hold.id)
    ledger.settle(hold, 120_000, _usage(key_id, "gen_1"))
    assert _rows(ledger, key_id) == [
        ("hold", -300_000, 700_000, hold.id, "gen_1", None),
        ("settle", 180_000, 880_000, hold.id, "gen_1", "charged $0.120000 of $0.300000"),
    ]
    assert _hold_status(db, hold.id) == ("settled", 120_000)
    assert _recorded_cost(db, "gen_1") == 120_000
    _assert_invariant(ledger, key_id, 1_000_000)


def test_a_release_is_a_release_row_returning_the_whole_hold(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = _granted(ledger.hold(key_id, 400_000, "gen_r"))
    usage = _usage(key_id, "gen_r")
    usage.cost_micro = 999  # a release charges nothing, whatever the record said
    ledger.release(hold, usage)
    assert _rows(ledger, key_id)[-1] == (
        "release",
        400_000,
        1_000_000,
        hold.id,
        "gen_r",
        "charged $0.000000 of $0.400000",
    )
    assert _hold_status(db, hold.id) == ("released", 0)
    assert _recorded_cost(db, "gen_r") == 0
    _assert_invariant(ledger, key_id, 1_000_000)


def test_settling_at_exactly_the_hold_returns_nothing_and_keeps_the_cost(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = ledger.hold(key_id, 250_000, "gen_x")
    usage = _usage(key_id, "gen_x")
    with caplog.at_level(logging.WARNING, logger="imagegate.ledger"):
        ledger.settle(hold, 250_000, usage)
    assert caplog.records == []  # a cost of exactly the hold is no overrun
    assert usage.cost_micro == 250_000
    assert _rows(ledger, key_id)[-1][:3] == ("settle", 0, 750_000)
    _assert_invariant(ledger, key_id, 1_000_000)


def test_a_cost_above_the_hold_is_charged_whole_by_an_adjust_row_and_logged(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A pricing rule that costs more than its own worst case: the upstream call was paid,
    so the whole cost is charged (never dropped): the hold by its settle row, the excess
    by an ``adjust`` row naming both, with an error in the log."""
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = _granted(ledger.hold(key_id, 100_000, "gen_over"))
    usage = _usage(key_id, "gen_over")
    with caplog.at_level(logging.WARNING, logger="imagegate.ledger"):
        ledger.settle(hold, 100_001, usage)
    assert [
        (
            r.levelname,
            r.getMessage(),
            getattr(r, "hold", None),
            getattr(r, "cost_micro", None),
            getattr(r, "held", None),
        )
        for r in caplog.records
    ] == [
        (
            "ERROR",
            "cost above its hold; the excess is charged by an adjust entry",
            hold.id,
            100_001,
            100_000,
        )
    ]
    assert usage.cost_micro == 100_001
    assert _rows(ledger, key_id)[-2:] == [
        ("settle", 0, 900_000, hold.id, "gen_over", "charged $0.100000 of $0.100000"),
        (
            "adjust",
            -1,
            899_999,
            hold.id,
            "gen_over",
            "cost $0.100001 above its hold $0.100000",
        ),
    ]
    assert _hold_status(db, hold.id) == ("settled", 100_001)
    assert _recorded_cost(db, "gen_over") == 100_001
    _assert_invariant(ledger, key_id, 1_000_000)


async def test_the_batched_forms_move_money_exactly_as_the_direct_ones(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    try:
        a, b = _key(db, 1.0, "a"), _key(db, 1.0, "b")
        unlimited = _key(db, None, "c")
        kept = await ledger.hold_async(a, 300_000, "gen_a")
        returned = await ledger.hold_async(b, 200_000, "gen_b")
        assert kept == Hold(kept.id if kept else "", a, 300_000, "gen_a")
        assert returned == Hold(returned.id if returned else "", b, 200_000, "gen_b")
        assert await ledger.hold_async(unlimited, 10**9, "gen_c") is None
        charged = _usage(a, "gen_a")
        await ledger.settle_async(kept, 120_000, charged)
        await ledger.release_async(returned, _usage(b, "gen_b"))
        assert charged.cost_micro == 120_000
        assert [r[:5] for r in _rows(ledger, a)] == [
            ("hold", -300_000, 700_000, kept.id if kept else "", "gen_a"),
            ("settle", 180_000, 880_000, kept.id if kept else "", "gen_a"),
        ]
        assert [r[:5] for r in _rows(ledger, b)] == [
            ("hold", -200_000, 800_000, returned.id if returned else "", "gen_b"),
            ("release", 200_000, 1_000_000, returned.id if returned else "", "gen_b"),
        ]
        book = UsageBook(db)
        assert [(r.key_id, r.cost_micro) for r in (book.get("gen_a"), book.get("gen_b")) if r] == [
            (a, 120_000),
            (b, 0),
        ]
        _assert_invariant(ledger, a, 1_000_000)
        _assert_invariant(ledger, b, 1_000_000)
    finally:
        ledger.close()


def test_a_hold_of_exactly_the_balance_is_granted_one_micro_more_is_402(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 0.5)
    other = _key(db, 5.0)
    with pytest.raises(InsufficientCredits) as info:
        ledger.hold(key_id, 500_001, "gen_over")
    err = info.value
    assert (err.status, err.code) == (402, "insufficient_credits")
    assert err.message == (
        "This API key's balance ($0.500000) cannot cover this request, which may cost up to "
        "$0.500001. Top up the key's credits or ask for fewer or smaller images."
    )
    assert ledger.hold(key_id, 500_000, "gen_all") is not None
    assert ledger.balance(key_id) == 0 and ledger.balance(other) == 5_000_000
    assert _rows(ledger, other) == []
    _assert_invariant(ledger, key_id, 500_000)
    _assert_invariant(ledger, other, 5_000_000)


def test_a_key_without_a_credit_limit_gets_no_hold_and_no_rows(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    unlimited, limited = _key(db, None), _key(db, 1.0)
    assert ledger.hold(unlimited, 10**12, "gen_u") is None
    usage = _usage(unlimited, "gen_u")
    ledger.settle(None, 70_000, usage)
    assert usage.cost_micro == 70_000
    failed = _usage(unlimited, "gen_v")
    failed.cost_micro = 5
    ledger.release(None, failed)
    assert failed.cost_micro == 0
    assert ledger.entries(unlimited) == [] and ledger.balance(unlimited) is None
    assert ledger.balance(limited) == 1_000_000
    book = UsageBook(db)
    assert [r.cost_micro for r in (book.get("gen_u"), book.get("gen_v")) if r] == [70_000, 0]


def test_open_holds_counts_the_named_key_only(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    a, b = _key(db, 1.0, "a"), _key(db, 1.0, "b")
    first = ledger.hold(a, 100_000, "gen_a1")
    ledger.hold(a, 100_000, "gen_a2")
    ledger.hold(b, 100_000, "gen_b1")
    assert (ledger.open_holds(a), ledger.open_holds(b), ledger.open_holds()) == (2, 1, 3)
    ledger.settle(first, 10_000, _usage(a, "gen_a1"))
    assert (ledger.open_holds(a), ledger.open_holds(b), ledger.open_holds()) == (1, 1, 2)
    _assert_invariant(ledger, a, 1_000_000)
    _assert_invariant(ledger, b, 1_000_000)


def test_entries_are_the_named_keys_oldest_first_up_to_the_limit(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    a, b = _key(db, 1.0, "a"), _key(db, 1.0, "b")
    ledger.top_up(a, 1, "one")
    ledger.top_up(b, 5, "other key")
    ledger.top_up(a, 2, "two")
    ledger.top_up(a, 3, "three")
    assert [e.note for e in ledger.entries(a)] == [OPENING_NOTE, "one", "two", "three"]
    assert [e.note for e in ledger.entries(a, limit=2)] == [OPENING_NOTE, "one"]
    entries = ledger.entries(a)
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    assert all(e.key_id == a for e in entries)
    assert all(e.created_at is not None for e in entries)
    _assert_invariant(ledger, a, 1_000_000)
    _assert_invariant(ledger, b, 1_000_000)


def test_usd_formats_micro_usd_with_six_decimals_and_a_sign() -> None:
    assert usd(1_500_000) == "$1.500000"
    assert usd(1) == "$0.000001"
    assert usd(0) == "$0.000000"
    assert usd(-2_000_001) == "-$2.000001"


# -- expiry ------------------------------------------------------------------------------


def test_a_hold_is_good_up_to_its_expiry_instant(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = _granted(ledger.hold(key_id, 100_000, "gen_t"))
    expires = _expires_at(db, hold.id)
    assert ledger.expire_stale(now=expires) == 0
    assert ledger.open_holds(key_id) == 1
    assert ledger.expire_stale(now=expires + timedelta(microseconds=1)) == 1
    assert ledger.open_holds(key_id) == 0
    _assert_invariant(ledger, key_id, 1_000_000)


def test_the_hold_ttl_sets_the_expiry(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=90)
    key_id = _key(db, 1.0)
    before = datetime.now(UTC)
    hold = _granted(ledger.hold(key_id, 100_000, "gen_ttl"))
    expires = _expires_at(db, hold.id)
    assert before + timedelta(seconds=90) <= expires <= datetime.now(UTC) + timedelta(seconds=90)


def test_expiry_returns_every_stale_hold_with_an_expire_row_each(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    a, b = _key(db, 1.0, "a"), _key(db, 2.0, "b")
    stale_a = ledger.hold(a, 300_000, "gen_sa")
    stale_b = ledger.hold(b, 500_000, "gen_sb")
    fresh = ledger.hold(a, 100_000, "gen_fa")
    assert stale_a is not None and stale_b is not None and fresh is not None
    _age(db, stale_a, stale_b)
    with caplog.at_level(logging.WARNING, logger="imagegate.ledger"):
        assert ledger.expire_stale() == 2
        assert ledger.expire_stale() == 0
    logged = [(r.getMessage(), getattr(r, "holds", None)) for r in caplog.records]
    assert logged == [("returned expired credit holds", 2)]  # once, and not for nothing
    note = "hold expired: its request never finished"
    assert _rows(ledger, a)[-1] == ("expire", 300_000, 900_000, stale_a.id, "gen_sa", note)
    assert _rows(ledger, b)[-1] == ("expire", 500_000, 2_000_000, stale_b.id, "gen_sb", note)
    assert _hold_status(db, stale_a.id) == ("expired", 0)
    assert _hold_status(db, fresh.id) == ("open", None)
    _assert_invariant(ledger, a, 1_000_000)
    _assert_invariant(ledger, b, 2_000_000)


def test_expiry_returns_at_most_limit_holds_per_sweep(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    holds = [ledger.hold(key_id, 100_000, f"gen_{i}") for i in range(3)]
    _age(db, *[h for h in holds if h is not None])
    assert ledger.expire_stale(limit=2) == 2
    assert ledger.open_holds(key_id) == 1
    assert ledger.expire_stale(limit=2) == 1
    assert ledger.balance(key_id) == 1_000_000
    _assert_invariant(ledger, key_id, 1_000_000)


def test_a_hold_settled_during_a_sweep_is_skipped_and_the_sweep_goes_on(db: Database) -> None:
    """The sweep lists stale holds, then closes them one by one: one settled in between
    (its request finished at the last moment) is left alone, the next still returned."""
    ledger = Ledger(db, hold_ttl_s=60)
    a, b = _key(db, 1.0, "a"), _key(db, 1.0, "b")
    first = ledger.hold(a, 300_000, "gen_first")
    second = ledger.hold(b, 200_000, "gen_second")
    assert first is not None and second is not None
    _age(db, first, seconds=20)
    _age(db, second, seconds=10)  # listed after the first (by expiry, and by insertion)
    settled: list[str] = []

    def settle_first_meanwhile(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if settled or not statement.lstrip().upper().startswith("UPDATE CREDIT_HOLDS"):
            return
        settled.append(first.id)
        # The request's own settlement commits just before the sweep's update runs.
        conn.exec_driver_sql(
            "UPDATE credit_holds SET status = 'settled', charged_micro = 0, "
            f"closed_at = CURRENT_TIMESTAMP WHERE id = '{first.id}'"
        )

    event.listen(db.engine, "before_cursor_execute", settle_first_meanwhile)
    try:
        assert ledger.expire_stale() == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", settle_first_meanwhile)
    assert settled == [first.id]
    assert _hold_status(db, first.id)[0] == "settled"
    assert _hold_status(db, second.id) == ("expired", 0)
    assert [r[0] for r in _rows(ledger, a)] == ["hold"]  # no expire row for the settled one
    assert ledger.balance(b) == 1_000_000
    _assert_invariant(ledger, b, 1_000_000)


def test_a_late_settlement_after_expiry_charges_directly(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    hold = _granted(ledger.hold(key_id, 400_000, "gen_late"))
    other = _granted(ledger.hold(key_id, 50_000, "gen_other"))
    _age(db, hold, other)
    assert ledger.expire_stale() == 2
    ledger.settle(hold, 30_000, _usage(key_id, "gen_late"))
    assert _hold_status(db, other.id) == ("expired", 0)  # only the settled hold changes
    assert _rows(ledger, key_id)[-1] == (
        "charge",
        -30_000,
        970_000,
        hold.id,
        "gen_late",
        "late settlement of an expired hold",
    )
    assert _hold_status(db, hold.id) == ("settled", 30_000)
    # A late release (nothing to charge) of another expired hold writes no row at all.
    gone = _granted(ledger.hold(key_id, 100_000, "gen_gone"))
    _age(db, gone)
    assert ledger.expire_stale() == 1
    count = len(ledger.entries(key_id))
    ledger.release(gone, _usage(key_id, "gen_gone"))
    assert len(ledger.entries(key_id)) == count
    assert ledger.balance(key_id) == 970_000
    _assert_invariant(ledger, key_id, 1_000_000)


def test_a_hold_settles_or_releases_once_a_second_close_raises_and_moves_nothing(
    db: Database,
) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    settled = ledger.hold(key_id, 300_000, "gen_s")
    released = ledger.hold(key_id, 200_000, "gen_r")
    assert settled is not None and released is not None
    ledger.settle(settled, 100_000, _usage(key_id, "gen_s"))
    ledger.release(released, _usage(key_id, "gen_r"))
    rows = _all_rows(ledger, key_id)
    for close in (
        lambda: ledger.settle(settled, 100_000, _usage(key_id, "gen_s2")),
        lambda: ledger.release(settled, _usage(key_id, "gen_s3")),
        lambda: ledger.settle(released, 5, _usage(key_id, "gen_r2")),
    ):
        with pytest.raises(HoldClosed) as info:
            close()
        assert re.fullmatch(
            r"credit hold hold_[0-9a-f]{24} is already (settled|released)", str(info.value)
        )
    assert _all_rows(ledger, key_id) == rows
    assert ledger.balance(key_id) == 900_000
    assert (_hold_status(db, settled.id), _hold_status(db, released.id)) == (
        ("settled", 100_000),
        ("released", 0),
    )
    _assert_invariant(ledger, key_id, 1_000_000)


# -- refunds -----------------------------------------------------------------------------


async def test_an_undelivered_response_gets_its_charge_back_once_by_a_refund_row(
    db: Database,
) -> None:
    """A settled request whose response never reached the caller: the charge comes back
    by one ``refund`` row naming why, the usage record says so at cost 0, and nothing
    else (another key, another generation, a released hold) moves."""
    ledger = Ledger(db, hold_ttl_s=60)
    try:
        a, b = _key(db, 1.0, "a"), _key(db, 1.0, "b")
        hold = ledger.hold(a, 300_000, "gen_lost")
        kept = ledger.hold(b, 300_000, "gen_kept")
        released = ledger.hold(a, 100_000, "gen_failed")
        assert hold is not None and kept is not None and released is not None
        lost = _usage(a, "gen_lost")
        ledger.settle(hold, 120_000, lost)
        ledger.settle(kept, 70_000, _usage(b, "gen_kept"))
        failed = _usage(a, "gen_failed")
        ledger.release(released, failed)
        lost.status, lost.error_code = 499, "client_disconnected"
        await ledger.refund_async(hold, lost)
        assert lost.cost_micro == 0
        refund = ("refund", 120_000, 1_000_000, hold.id, "gen_lost")
        assert _rows(ledger, a)[-1] == (*refund, "response not delivered: client_disconnected")
        await ledger.refund_async(hold, lost)  # a second refund moves nothing
        again = _usage(a, "gen_lost")
        again.status, again.error_code = 499, "client_disconnected"
        again.cost_micro = 120_000  # ... whatever the record it comes with says
        ledger.refund(hold, again)
        failed.status, failed.error_code = 499, "client_disconnected"
        ledger.refund(released, failed)  # nothing was charged: nothing to give back
        assert [r[0] for r in _rows(ledger, a)] == ["hold", "hold", "settle", "release", "refund"]
        assert _hold_status(db, hold.id) == ("refunded", 0)
        assert _hold_status(db, kept.id) == ("settled", 70_000)
        book = UsageBook(db)
        got = [(r.status, r.error_code, r.cost_micro) for r in (book.get("gen_lost"),) if r]
        assert got == [(499, "client_disconnected", 0)]
        other = book.get("gen_kept")
        assert other is not None and (other.status, other.cost_micro) == (200, 70_000)
        assert ledger.balance(b) == 930_000
        _assert_invariant(ledger, a, 1_000_000)
        _assert_invariant(ledger, b, 1_000_000)
    finally:
        ledger.close()


def test_a_refund_gives_back_exactly_the_charge_and_nothing_for_a_free_request(
    db: Database,
) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id, unlimited = _key(db, 1.0, "a"), _key(db, None, "u")
    free, one = ledger.hold(key_id, 1000, "gen_free"), ledger.hold(key_id, 1000, "gen_one")
    assert free is not None and one is not None
    free_usage, one_usage = _usage(key_id, "gen_free"), _usage(key_id, "gen_one")
    ledger.settle(free, 0, free_usage)
    ledger.settle(one, 1, one_usage)
    ledger.refund(free, free_usage)
    ledger.refund(one, one_usage)
    assert [r[:3] for r in _rows(ledger, key_id) if r[0] == "refund"] == [("refund", 1, 1_000_000)]
    assert (_hold_status(db, free.id), _hold_status(db, one.id)) == (
        ("settled", 0),
        ("refunded", 0),
    )
    _assert_invariant(ledger, key_id, 1_000_000)
    # A key without a credit limit has no hold: its usage record is corrected, no rows.
    usage = _usage(unlimited, "gen_u")
    ledger.settle(None, 50_000, usage)
    usage.status, usage.error_code = 499, "client_disconnected"
    ledger.refund(None, usage)
    record = UsageBook(db).get("gen_u")
    assert record is not None and (record.status, record.cost_micro) == (499, 0)
    assert ledger.entries(unlimited) == [] and ledger.balance(unlimited) is None


async def test_a_batched_settlement_runs_its_extra_write_in_the_same_transaction(
    db: Database,
) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    try:
        key_id = _key(db, 1.0)
        hold = await ledger.hold_async(key_id, 300_000, "gen_also")
        seen: list[int | None] = []
        balance = select(ApiKeyRow.credits_micro).where(ApiKeyRow.id == key_id)
        await ledger.settle_async(
            hold,
            100_000,
            _usage(key_id, "gen_also"),
            also=lambda conn: seen.append(conn.execute(balance).scalar()),
        )
        assert seen == [900_000]  # it sees the settlement it commits with
        _assert_invariant(ledger, key_id, 1_000_000)
    finally:
        ledger.close()


def test_closing_a_hold_that_does_not_exist_raises_naming_it(db: Database) -> None:
    ledger = Ledger(db, hold_ttl_s=60)
    key_id = _key(db, 1.0)
    with pytest.raises(HoldClosed) as info:
        ledger.settle(Hold("hold_nope", key_id, 10, "gen_n"), 10, _usage(key_id, "gen_n"))
    assert str(info.value) == "credit hold hold_nope is already missing"
    assert ledger.balance(key_id) == 1_000_000
    _assert_invariant(ledger, key_id, 1_000_000)
