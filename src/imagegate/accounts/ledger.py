"""Credits per key in integer micro-USD: holds before the upstream call, settlement after.

``api_keys.credits_micro`` is the balance available to new requests; a hold moves the
worst-case cost out of it with one conditional ``UPDATE ... WHERE credits_micro >= amount``,
so concurrent requests can never overdraw a key, on SQLite or PostgreSQL, in one process or
many. Settlement closes the hold, returns what was not spent and records the request's
usage in the same transaction; a hold whose process died is returned by
:meth:`Ledger.expire_stale` once it is past its expiry. Every movement appends a
``ledger_entries`` row whose ``amount_micro`` values sum to the balance.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, insert, select, update

from imagegate.accounts import leases
from imagegate.accounts.entries import ADD, MICROS_PER_USD, TAKE, Hold, usd, write_entry
from imagegate.accounts.key_epoch import bump_key_epoch
from imagegate.accounts.usage import UsageRecord, insert_usage
from imagegate.core.errors import InsufficientCredits, InvalidRequest, NotFound
from imagegate.db.batch import WriteBatcher
from imagegate.db.models import ApiKeyRow, CreditHoldRow, LedgerEntryRow, UsageRow, utcnow
from imagegate.db.session import Database
from imagegate.obs import metrics

log = logging.getLogger("imagegate.ledger")

__all__ = [
    "MICROS_PER_USD",
    "Hold",
    "HoldClosed",
    "Ledger",
    "LedgerEntry",
    "opening_entry",
    "usd",
]


class HoldClosed(RuntimeError):
    """A settlement or release of a hold that is already settled or released."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    key_id: str
    kind: str
    amount_micro: int
    balance_micro: int | None
    hold_id: str | None
    generation_id: str | None
    note: str | None
    created_at: datetime


# The hot path's statements, built once: building a statement per call costs far more
# than running it (SQLAlchemy's coercion and cache-key work).
_BALANCE = select(ApiKeyRow.credits_micro).where(ApiKeyRow.id == bindparam("key_id"))
_OPEN_HOLD = insert(CreditHoldRow)
_CLOSE_HOLD = (
    update(CreditHoldRow)
    .where(CreditHoldRow.id == bindparam("hold_id"), CreditHoldRow.status == "open")
    .values(
        status=bindparam("status"),
        charged_micro=bindparam("charged"),
        closed_at=bindparam("closed_at"),
    )
)


class Ledger:
    """Holds, settlements, top-ups and the append-only ledger of one database.

    ``hold``/``settle``/``release`` run one transaction each (CLI, tests, sweeps); the
    request path uses their ``*_async`` forms, which go through a :class:`WriteBatcher`
    so that concurrent requests share commits.
    """

    def __init__(
        self, db: Database, hold_ttl_s: float, lease_micro: int = 0, lease_s: float = 30.0
    ) -> None:
        """``lease_micro`` > 0 turns on credit leases of that size, each taking new holds
        for ``lease_s`` (accounts/leases.py); 0 keeps one database hold per request."""
        self._db = db
        self.hold_ttl_s = hold_ttl_s
        self.batcher = WriteBatcher(db)
        self.leases: leases.Leases | None = None
        if lease_micro > 0:
            self.leases = leases.Leases(self, lease_micro, lease_s)

    def hold(self, key_id: str, amount_micro: int, generation_id: str) -> Hold | None:
        """Set aside ``amount_micro`` or raise 402; None for a key without a credit limit."""
        with self._db.write() as conn:
            return self._hold(conn, key_id, amount_micro, generation_id)

    def settle(self, hold: Hold | None, cost_micro: int, usage: UsageRecord) -> None:
        """Charge ``cost_micro`` (at most the hold), return the rest, record usage."""
        with self._db.write() as conn:
            _settle(conn, hold, cost_micro, usage)

    def release(self, hold: Hold | None, usage: UsageRecord) -> None:
        """The request failed: return the whole hold and record usage, at cost 0."""
        with self._db.write() as conn:
            _release(conn, hold, usage)

    def refund(self, hold: Hold | None, usage: UsageRecord) -> None:
        """A settled request could not be delivered: give its charge back."""
        with self._db.write() as conn:
            _refund(conn, hold, usage)
        usage.cost_micro = 0

    async def hold_async(self, key_id: str, amount_micro: int, generation_id: str) -> Hold | None:
        """:meth:`hold`, from this worker's credit lease when leases are on, else
        committed with whatever other writes are waiting."""
        if self.leases is not None:
            return await self.leases.hold(key_id, amount_micro, generation_id)
        return await self.hold_in_db(key_id, amount_micro, generation_id)

    async def hold_in_db(self, key_id: str, amount_micro: int, generation_id: str) -> Hold | None:
        """A per-request hold (a ``credit_holds`` row), through the write batcher."""
        return await self.batcher.run(
            lambda conn: self._hold(conn, key_id, amount_micro, generation_id), order=key_id
        )

    def hold_on(
        self, conn: Connection, key_id: str, amount_micro: int, generation_id: str
    ) -> Hold | None:
        """A per-request hold inside the caller's transaction (leases fall back to it)."""
        return self._hold(conn, key_id, amount_micro, generation_id)

    async def settle_async(
        self,
        hold: Hold | None,
        cost_micro: int,
        usage: UsageRecord,
        also: Callable[[Connection], None] | None = None,
    ) -> None:
        """:meth:`settle`, committed with whatever other writes are waiting; ``also``
        writes in the same transaction (the request's idempotency record)."""
        settle = self._settler(hold, cost_micro)

        def job(conn: Connection) -> None:
            settle(conn, hold, cost_micro, usage)
            if also is not None:
                also(conn)

        await self.batcher.run(job, order=usage.key_id)

    async def release_async(self, hold: Hold | None, usage: UsageRecord) -> None:
        """:meth:`release`, committed with whatever other writes are waiting."""
        settle = self._settler(hold, 0)
        if settle is _settle:
            await self.batcher.run(lambda conn: _release(conn, hold, usage), order=usage.key_id)
        else:
            await self.batcher.run(lambda conn: settle(conn, hold, 0, usage), order=usage.key_id)

    async def refund_async(self, hold: Hold | None, usage: UsageRecord) -> None:
        """:meth:`refund`, committed with whatever other writes are waiting."""
        if hold is None or hold.lease_id is None:
            await self.batcher.run(lambda conn: _refund(conn, hold, usage), order=usage.key_id)
            usage.cost_micro = 0
            return
        lease_hold = hold
        refunded = await self.batcher.run(
            lambda conn: leases.refund(conn, lease_hold, usage), order=usage.key_id
        )
        usage.cost_micro = 0
        if self.leases is not None:
            self.leases.refunded(hold, refunded)

    def _settler(
        self, hold: Hold | None, cost_micro: int
    ) -> Callable[[Connection, Hold | None, int, UsageRecord], None]:
        """How to settle ``hold``: a database hold's ``_settle``, or a charge through its
        lease (which also closes a draining lease whose last hold this was)."""
        if hold is None or hold.lease_id is None:
            return _settle
        closing = self.leases.finish(hold, cost_micro) if self.leases is not None else None

        def settle(conn: Connection, h: Hold | None, cost: int, usage: UsageRecord) -> None:
            assert h is not None
            leases.charge(conn, h, cost, usage)
            if closing is not None:
                leases.close_lease(conn, closing, "returned")

        return settle

    def close(self) -> None:
        """Commit what is queued, stop the writer thread and return this worker's leases."""
        self.batcher.close()
        if self.leases is not None:
            self.leases.return_all(self._db)

    def _hold(
        self, conn: Connection, key_id: str, amount_micro: int, generation_id: str
    ) -> Hold | None:
        balance = conn.execute(TAKE, {"key_id": key_id, "amount": amount_micro}).scalar()
        if balance is None:
            current = conn.execute(_BALANCE, {"key_id": key_id}).scalar()
            if current is None:
                return None  # no such key (revoked meanwhile) or no credit limit
            raise InsufficientCredits(
                f"This API key's balance ({usd(current)}) cannot cover this request, "
                f"which may cost up to {usd(amount_micro)}. Top up the key's credits or "
                "ask for fewer or smaller images.",
            )
        now = utcnow()
        hold = Hold("hold_" + secrets.token_hex(12), key_id, amount_micro, generation_id)
        conn.execute(
            _OPEN_HOLD,
            {
                "id": hold.id,
                "key_id": key_id,
                "amount_micro": amount_micro,
                "charged_micro": None,
                "status": "open",
                "generation_id": generation_id,
                "created_at": now,
                "closed_at": None,
                "expires_at": now + timedelta(seconds=self.hold_ttl_s),
            },
        )
        write_entry(conn, key_id, "hold", -amount_micro, balance, hold.id, generation_id)
        return hold

    def expire_stale(self, limit: int = 500, now: datetime | None = None) -> int:
        """Return every open hold and credit lease past its expiry (at ``now``) to its
        key; the number returned. Each is good up to and including its expiry instant."""
        now = now or utcnow()
        with self._db.engine.connect() as conn:
            stale = conn.execute(
                select(
                    CreditHoldRow.id,
                    CreditHoldRow.key_id,
                    CreditHoldRow.amount_micro,
                    CreditHoldRow.generation_id,
                )
                .where(CreditHoldRow.status == "open", CreditHoldRow.expires_at < now)
                .limit(limit)
            ).all()
        expired = 0
        for hold_id, key_id, amount, generation_id in stale:
            with self._db.write() as conn:
                closed = conn.execute(
                    update(CreditHoldRow)
                    .where(CreditHoldRow.id == hold_id, CreditHoldRow.status == "open")
                    .values(status="expired", charged_micro=0, closed_at=now)
                ).rowcount
                if not closed:
                    continue
                balance = conn.execute(
                    ADD, {"key_id": key_id, "amount": amount}
                ).scalar_one_or_none()
                write_entry(
                    conn,
                    key_id,
                    "expire",
                    amount,
                    balance,
                    hold_id,
                    generation_id,
                    "hold expired: its request never finished",
                )
                expired += 1
        if expired:
            log.warning("returned expired credit holds", extra={"holds": expired})
        return expired + leases.expire_leases(self._db, limit, now)

    def top_up(self, key_id: str, amount_micro: int, note: str | None = None) -> int:
        """Add credits; a key without a credit limit gets one, starting from this amount."""
        if amount_micro <= 0:
            raise InvalidRequest("'amount' must be a positive number of USD.", param="amount")
        with self._db.write() as conn:
            balance = conn.execute(
                ADD, {"key_id": key_id, "amount": amount_micro}
            ).scalar_one_or_none()
            if balance is None:
                exists = conn.execute(
                    update(ApiKeyRow)
                    .where(ApiKeyRow.id == key_id, ApiKeyRow.credits_micro.is_(None))
                    .values(credits_micro=amount_micro)
                    .returning(ApiKeyRow.credits_micro)
                ).scalar_one_or_none()
                if exists is None:
                    raise NotFound(
                        f"No API key with id '{key_id}'.", param="key_id", code="key_not_found"
                    )
                balance = exists
            write_entry(conn, key_id, "topup", amount_micro, balance, None, None, note)
            bump_key_epoch(conn)  # cached keys may hold a spent balance or no credit limit
        return int(balance)

    def balance(self, key_id: str) -> int | None:
        with self._db.engine.connect() as conn:
            return conn.execute(
                select(ApiKeyRow.credits_micro).where(ApiKeyRow.id == key_id)
            ).scalar_one_or_none()

    def open_holds(self, key_id: str | None = None) -> int:
        """How many holds are open (all keys, or one)."""
        query = select(CreditHoldRow.id).where(CreditHoldRow.status == "open")
        if key_id is not None:
            query = query.where(CreditHoldRow.key_id == key_id)
        with self._db.engine.connect() as conn:
            return len(conn.execute(query).all())

    def entries(
        self, key_id: str, limit: int = 1000, after: int | None = None
    ) -> list[LedgerEntry]:
        """A key's ledger, oldest first; ``after`` (an entry id) pages by keyset."""
        query = select(LedgerEntryRow).where(LedgerEntryRow.key_id == key_id)
        if after is not None:
            query = query.where(LedgerEntryRow.id > after)
        query = query.order_by(LedgerEntryRow.id).limit(limit)
        with self._db.session() as session:
            return [
                LedgerEntry(
                    r.id,
                    r.key_id,
                    r.kind,
                    r.amount_micro,
                    r.balance_micro,
                    r.hold_id,
                    r.generation_id,
                    r.note,
                    r.created_at,
                )
                for r in session.scalars(query)
            ]


def _settle(conn: Connection, hold: Hold | None, cost_micro: int, usage: UsageRecord) -> None:
    """Charge the whole cost: the hold's part closes it; any excess (a pricing rule that
    costs more than its own worst case) is charged by an ``adjust`` row, never dropped."""
    usage.cost_micro = cost_micro
    if hold is not None:
        covered = min(cost_micro, hold.amount_micro)
        _close(conn, hold, "settled", covered, total=cost_micro)
        excess = cost_micro - covered
        if excess > 0:
            log.error(
                "cost above its hold; the excess is charged by an adjust entry",
                extra={"hold": hold.id, "cost_micro": cost_micro, "held": hold.amount_micro},
            )
            metrics.record_charge_above_hold()
            balance = conn.execute(ADD, {"key_id": hold.key_id, "amount": -excess}).scalar()
            note = f"cost {usd(cost_micro)} above its hold {usd(hold.amount_micro)}"
            write_entry(
                conn, hold.key_id, "adjust", -excess, balance, hold.id, hold.generation_id, note
            )
    insert_usage(conn, usage)


def _release(conn: Connection, hold: Hold | None, usage: UsageRecord) -> None:
    usage.cost_micro = 0
    if hold is not None:
        _close(conn, hold, "released", 0)
    insert_usage(conn, usage)


def _refund(conn: Connection, hold: Hold | None, usage: UsageRecord) -> None:
    """Reverse a settlement whose response could not be delivered (``refund`` row)."""
    refunded = usage.cost_micro  # zeroed by the caller once committed: a rerun reads it again
    conn.execute(
        update(UsageRow)
        .where(UsageRow.generation_id == usage.generation_id)
        .values(status=usage.status, error_code=usage.error_code, cost_micro=0)
    )
    if hold is None or refunded <= 0:
        return
    reopened = conn.execute(
        update(CreditHoldRow)
        .where(CreditHoldRow.id == hold.id, CreditHoldRow.status == "settled")
        .values(status="refunded", charged_micro=0)
    ).rowcount
    if not reopened:
        return  # refunded already
    balance = conn.execute(ADD, {"key_id": hold.key_id, "amount": refunded}).scalar()
    note = f"response not delivered: {usage.error_code}"
    write_entry(conn, hold.key_id, "refund", refunded, balance, hold.id, hold.generation_id, note)


def _close(
    conn: Connection, hold: Hold, status: str, charged: int, total: int | None = None
) -> None:
    """Close an open hold, returning what it did not charge. ``total`` (default
    ``charged``) is recorded as the hold's charge when an ``adjust`` row adds to it."""
    recorded = charged if total is None else total
    params = {"hold_id": hold.id, "status": status, "charged": recorded, "closed_at": utcnow()}
    closed = conn.execute(_CLOSE_HOLD, params).rowcount
    refund = hold.amount_micro - charged if closed else -charged
    kind = "settle" if status == "settled" else "release"
    note = f"charged {usd(charged)} of {usd(hold.amount_micro)}"
    if not closed:
        state = conn.execute(
            select(CreditHoldRow.status).where(CreditHoldRow.id == hold.id)
        ).scalar_one_or_none()
        if state != "expired":
            # Settled or released already: a second settlement must never charge again.
            raise HoldClosed(f"credit hold {hold.id} is already {state or 'missing'}")
        # The sweeper already returned this hold (its expiry passed): charge directly.
        kind, note = "charge", "late settlement of an expired hold"
        if charged == 0:
            return
        conn.execute(
            update(CreditHoldRow)
            .where(CreditHoldRow.id == hold.id, CreditHoldRow.status == "expired")
            .values(status=status, charged_micro=recorded)
        )
    balance = conn.execute(ADD, {"key_id": hold.key_id, "amount": refund}).scalar()
    write_entry(conn, hold.key_id, kind, refund, balance, hold.id, hold.generation_id, note)


def opening_entry(key_id: str, amount_micro: int) -> dict[str, object]:
    """The ``open`` ledger row of a key created with credits (the values to insert)."""
    return {
        "key_id": key_id,
        "kind": "open",
        "amount_micro": amount_micro,
        "balance_micro": amount_micro,
        "hold_id": None,
        "generation_id": None,
        "note": "credits given at key creation",
        "created_at": utcnow(),
    }
