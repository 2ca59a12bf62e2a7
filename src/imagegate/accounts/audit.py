"""The books' invariant, checked from the database alone (``imagegate ledger verify``).

Money is right when, for every key, the ledger entries sum to its balance; every closed
hold's entries sum to minus what it charged; every settled hold has its usage record at
that cost; every credit lease's entries sum to minus what it holds while open and to minus
what it charged once closed, and its charge is the sum of its usage records' costs; and
every upstream call the gateway made is on record (an attempt in a usage
record) with its provider, upstream model, outcome and what the provider bills for it.
Tests run the same check at the end of every test that moves money.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from imagegate.db.models import (
    ApiKeyRow,
    CreditHoldRow,
    CreditLeaseRow,
    LedgerEntryRow,
    UsageRow,
)
from imagegate.db.session import Database

ATTEMPT_FIELDS = ("provider", "upstream_model", "status", "cost_micro")


@dataclass(frozen=True, slots=True)
class BooksSummary:
    keys: int
    holds: int
    usage_records: int
    upstream_calls: int
    charged_micro: int
    upstream_cost_micro: int


class BooksUnbalanced(AssertionError):
    """The first discrepancy found in the books."""


def verify_books(db: Database) -> BooksSummary:
    """Check the invariant; raise :class:`BooksUnbalanced` with the first discrepancy."""
    with db.engine.connect() as conn:
        first = next(_discrepancies(conn), None)
        if first is not None:
            raise BooksUnbalanced(first)
        return _summary(conn)


def _discrepancies(conn: Connection) -> Iterator[str]:
    yield from _key_balances(conn)
    yield from _holds(conn)
    yield from _leases(conn)
    yield from _usage(conn)


def _key_balances(conn: Connection) -> Iterator[str]:
    sums = dict(
        conn.execute(
            select(LedgerEntryRow.key_id, func.sum(LedgerEntryRow.amount_micro)).group_by(
                LedgerEntryRow.key_id
            )
        ).all()
    )
    for key_id, balance in conn.execute(select(ApiKeyRow.id, ApiKeyRow.credits_micro)).all():
        total = int(sums.pop(key_id, 0) or 0)
        if total != int(balance or 0):
            yield (
                f"key {key_id}: ledger entries sum to {total} micro-USD, its balance is {balance}"
            )
    for key_id in sums:
        yield f"ledger entries for key {key_id}, which does not exist"


def _holds(conn: Connection) -> Iterator[str]:
    sums = _sums_by_hold(conn, LedgerEntryRow.hold_id.is_not(None))
    costs = dict(conn.execute(select(UsageRow.generation_id, UsageRow.cost_micro)).all())
    holds = conn.execute(
        select(
            CreditHoldRow.id,
            CreditHoldRow.status,
            CreditHoldRow.amount_micro,
            CreditHoldRow.charged_micro,
            CreditHoldRow.generation_id,
        )
    ).all()
    for hold_id, status, amount, charged, generation_id in holds:
        expected = -int(amount) if status == "open" else -int(charged or 0)
        total = int(sums.get(hold_id, 0) or 0)
        if total != expected:
            yield f"hold {hold_id} ({status}): its entries sum to {total}, expected {expected}"
        if status in ("settled", "released", "refunded"):
            cost = costs.get(generation_id)
            if cost is None:
                yield f"hold {hold_id} ({status}) has no usage record {generation_id}"
            elif int(cost) != int(charged or 0):
                yield (
                    f"hold {hold_id} charged {charged}, its usage record {generation_id} "
                    f"says {cost}"
                )


def _leases(conn: Connection) -> Iterator[str]:
    """An open lease is money held (its rows: minus its amount); a closed one kept only
    what it charged; either way its charge is what its requests' usage records cost."""
    leases = conn.execute(
        select(
            CreditLeaseRow.id,
            CreditLeaseRow.status,
            CreditLeaseRow.amount_micro,
            CreditLeaseRow.charged_micro,
        )
    ).all()
    if not leases:
        return
    entries = _sums_by_hold(conn, LedgerEntryRow.hold_id.in_([lease.id for lease in leases]))
    costs = dict(
        conn.execute(
            select(UsageRow.lease_id, func.sum(UsageRow.cost_micro))
            .where(UsageRow.lease_id.is_not(None))
            .group_by(UsageRow.lease_id)
        ).all()
    )
    for lease_id, status, amount, charged in leases:
        expected = -int(amount) if status == "open" else -int(charged)
        total = int(entries.get(lease_id, 0) or 0)
        if total != expected:
            yield f"lease {lease_id} ({status}): its entries sum to {total}, expected {expected}"
        cost = int(costs.pop(lease_id, 0) or 0)
        if cost != int(charged):
            yield f"lease {lease_id} charged {charged}, its usage records cost {cost}"
    for orphan in costs:
        yield f"usage records charged through lease {orphan}, which does not exist"


def _usage(conn: Connection) -> Iterator[str]:
    rows = conn.execute(
        select(UsageRow.generation_id, UsageRow.status, UsageRow.provider, UsageRow.attempts)
    ).all()
    for generation_id, status, provider, attempts in rows:
        if status == 200 and not provider:
            yield f"usage record {generation_id} succeeded without a provider"
        for attempt in attempts or []:
            missing = [f for f in ATTEMPT_FIELDS if _absent(attempt, f)]
            if missing:
                yield (
                    f"usage record {generation_id}: an upstream call without "
                    f"{', '.join(missing)}: {attempt}"
                )


def _absent(attempt: dict[str, Any], name: str) -> bool:
    return attempt.get(name) is None


def _cost(attempt: dict[str, Any]) -> int:
    value = attempt.get("cost_micro")
    return int(value) if isinstance(value, int | float) else 0


def _summary(conn: Connection) -> BooksSummary:
    keys = conn.execute(select(func.count()).select_from(ApiKeyRow)).scalar_one()
    holds = conn.execute(select(func.count()).select_from(CreditHoldRow)).scalar_one()
    rows = conn.execute(select(UsageRow.cost_micro, UsageRow.attempts)).all()
    calls = sum(len(attempts or []) for _, attempts in rows)
    upstream = sum(_cost(a) for _, attempts in rows for a in attempts or [])
    charged = sum(int(cost or 0) for cost, _ in rows)
    return BooksSummary(int(keys), int(holds), len(rows), calls, charged, upstream)


def _sums_by_hold(conn: Connection, which: ColumnElement[bool]) -> dict[str | None, int]:
    """The ledger entries' sum per ``hold_id`` (a hold's or a lease's id), for ``which``."""
    query = (
        select(LedgerEntryRow.hold_id, func.sum(LedgerEntryRow.amount_micro))
        .where(which)
        .group_by(LedgerEntryRow.hold_id)
    )
    return {hold_id: int(total) for hold_id, total in conn.execute(query).all()}
