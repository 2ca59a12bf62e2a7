"""What every money movement shares: the hold handed to a request, micro-USD formatting
and the append-only ``ledger_entries`` row (used by accounts/ledger.py and leases.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, insert, update

from imagegate.db.models import ApiKeyRow, LedgerEntryRow, utcnow

MICROS_PER_USD = 1_000_000

# The key balance's two statements, built once (building a statement per call costs far
# more than running it: SQLAlchemy's coercion and cache-key work).
TAKE = (  # takes ``amount`` only while the balance covers it; no row: 402
    update(ApiKeyRow)
    .where(
        ApiKeyRow.id == bindparam("key_id"),
        ApiKeyRow.credits_micro.is_not(None),
        ApiKeyRow.credits_micro >= bindparam("amount"),
    )
    .values(credits_micro=ApiKeyRow.credits_micro - bindparam("amount"))
    .returning(ApiKeyRow.credits_micro)
)
ADD = (  # moves the balance by a signed ``amount``
    update(ApiKeyRow)
    .where(ApiKeyRow.id == bindparam("key_id"))
    .values(credits_micro=ApiKeyRow.credits_micro + bindparam("amount"))
    .returning(ApiKeyRow.credits_micro)
)


@dataclass(frozen=True, slots=True)
class Hold:
    """Credit set aside for one request. ``lease_id``: taken in memory from that credit
    lease (accounts/leases.py), with no ``credit_holds`` row; None: a database hold."""

    id: str
    key_id: str
    amount_micro: int
    generation_id: str
    lease_id: str | None = None


def usd(micro: int) -> str:
    """Micro-USD as a dollar string with six decimals, for messages."""
    sign = "-" if micro < 0 else ""
    return f"{sign}${abs(micro) / MICROS_PER_USD:.6f}"


_ENTRY = insert(LedgerEntryRow)  # built once: building it per call costs more than running it


def write_entry(
    conn: Connection,
    key_id: str,
    kind: str,
    amount: int,
    balance: int | None,
    hold_id: str | None,
    generation_id: str | None,
    note: str | None = None,
) -> None:
    """Append one ledger row; ``amount`` is signed (+ adds to the key's balance)."""
    conn.execute(
        _ENTRY,
        {
            "key_id": key_id,
            "kind": kind,
            "amount_micro": amount,
            "balance_micro": balance,
            "hold_id": hold_id,
            "generation_id": generation_id,
            "note": note,
            "created_at": utcnow(),
        },
    )
