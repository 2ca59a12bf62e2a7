"""Credit leases: a worker takes a slice of a key's balance in one write and holds from it
in memory, so most requests write to the database once (their settlement), not twice.

Why it stays exact:

- **A lease is a ledger movement.** Taking one is the same conditional
  ``UPDATE api_keys ... WHERE credits_micro >= slice`` as a hold, plus a ``credit_leases``
  row and a ``lease`` ledger row (``hold_id`` names the lease). The money is out of the
  balance, so no other worker or host can spend it: no overdraft across processes.
- **Holds from a lease live in memory** (one event loop: no locks needed). A lease never
  grants more than ``amount - reserved - spent``. Settlement writes the usage record (with
  ``lease_id``) and adds its cost to ``credit_leases.charged_micro`` in one transaction,
  batched as before; it no longer touches the key's row.
- **The unused slice goes back** (``lease_return`` row: amount less charged) when the
  lease's window (``credits.lease_s``) has passed and its last hold ended, at shutdown,
  and, in part, as soon as a request does not fit what is left: the free remainder is
  given back in the same transaction that tries the next lease.
- **Small balances fall back.** A lease is taken only when the balance covers a whole
  slice (and the request fits in one); otherwise the request takes today's per-request
  hold. Draining a key to exactly zero therefore works as before: a worker whose lease
  cannot cover a request first gives its free remainder back, then holds per request.
- **A crash leaves a lease open**; it carries its worker and ``expires_at`` (window +
  ``credits.hold_ttl_s``, so every hold taken from it could have settled), after which any
  worker's sweep returns amount less charged (``expire`` row). A settlement that arrives
  after that charges the key directly (``charge`` row), as a late hold settlement does.
- **The books:** per key, ledger rows still sum to the balance; per lease, its rows sum to
  minus its amount while open and to minus its charge once closed, and its charge is the
  sum of its usage records' costs (accounts/audit.py).

Cost of the bargain: money leased by one worker is not available to another until given
back, so with several workers a request can get 402 while another worker's lease still
has an unreserved remainder (it goes back at that worker's next miss or window end).
Off by default (``credits.lease_usd: 0``): a killed worker's money then comes back after
``lease_s`` + ``hold_ttl_s`` as a lease, not as its requests' ``credit_holds`` rows, and a
key's shown balance drops by a slice at its first request (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, bindparam, insert, select, update

from imagegate.accounts.entries import ADD, TAKE, Hold, usd, write_entry
from imagegate.accounts.usage import UsageRecord, insert_usage
from imagegate.core.errors import InsufficientCredits
from imagegate.db.models import CreditLeaseRow, UsageRow, utcnow
from imagegate.db.session import Database
from imagegate.obs import metrics

if TYPE_CHECKING:
    from imagegate.accounts.ledger import Ledger

log = logging.getLogger("imagegate.leases")

# What a lease write ends with: a new lease's id, else a per-request hold (None: the key has
# no credit limit), else the 402 to raise (returned, not raised, so the give-back commits).
_Renewal = tuple[str | None, Hold | None, InsufficientCredits | None]

_CHARGE_OPEN = (
    update(CreditLeaseRow)
    .where(CreditLeaseRow.id == bindparam("lease_id"), CreditLeaseRow.status == "open")
    .values(charged_micro=CreditLeaseRow.charged_micro + bindparam("amount"))
)
_CHARGE_ANY = (
    update(CreditLeaseRow)
    .where(CreditLeaseRow.id == bindparam("lease_id"))
    .values(charged_micro=CreditLeaseRow.charged_micro + bindparam("amount"))
)


def worker_name() -> str:
    """Who holds a lease, for operators reading ``credit_leases``: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


@dataclass(slots=True)
class Lease:
    """This worker's view of one open lease (the database row is the truth for money)."""

    id: str
    key_id: str
    amount_micro: int
    usable_until: float  # time.monotonic(): no new holds after it
    reserved_micro: int = 0  # holds in flight
    spent_micro: int = 0  # settled charges
    holds: int = 0
    draining: bool = False  # no new holds; closed when its last hold ends

    def free_micro(self) -> int:
        return self.amount_micro - self.reserved_micro - self.spent_micro

    def can_hold(self, amount_micro: int, now: float) -> bool:
        """A hold of ``amount_micro`` fits: not draining, in its window, enough left."""
        return not self.draining and now < self.usable_until and amount_micro <= self.free_micro()


# --- database movements (each runs inside a transaction the caller owns) -----------------


def take_lease(
    conn: Connection, key_id: str, amount_micro: int, worker: str, ttl: timedelta
) -> str | None:
    """Move ``amount_micro`` from the key's balance into a new lease that expires ``ttl``
    from now; None when the balance cannot cover it (or the key has no credit limit)."""
    balance = conn.execute(TAKE, {"key_id": key_id, "amount": amount_micro}).scalar()
    if balance is None:
        return None
    lease_id = "lease_" + secrets.token_hex(12)
    now = utcnow()
    conn.execute(
        insert(CreditLeaseRow),
        {
            "id": lease_id,
            "key_id": key_id,
            "worker": worker,
            "amount_micro": amount_micro,
            "charged_micro": 0,
            "status": "open",
            "created_at": now,
            "expires_at": now + ttl,
            "closed_at": None,
        },
    )
    write_entry(conn, key_id, "lease", -amount_micro, balance, lease_id, None, f"to {worker}")
    return lease_id


def give_back(conn: Connection, lease_id: str, key_id: str, amount_micro: int) -> bool:
    """Return part of an open lease's money to its key; False if the lease is closed."""
    shrunk = conn.execute(
        update(CreditLeaseRow)
        .where(CreditLeaseRow.id == lease_id, CreditLeaseRow.status == "open")
        .values(amount_micro=CreditLeaseRow.amount_micro - amount_micro)
    ).rowcount
    if not shrunk:
        return False
    balance = conn.execute(ADD, {"key_id": key_id, "amount": amount_micro}).scalar()
    note = f"unreserved {usd(amount_micro)} given back"
    write_entry(conn, key_id, "lease_return", amount_micro, balance, lease_id, None, note)
    return True


def close_lease(conn: Connection, lease_id: str, status: str, now: datetime | None = None) -> int:
    """Close an open lease (``returned`` or ``expired``), giving its key what it did not
    charge; returns that amount (0 if it was closed already)."""
    row = conn.execute(
        update(CreditLeaseRow)
        .where(CreditLeaseRow.id == lease_id, CreditLeaseRow.status == "open")
        .values(status=status, closed_at=now or utcnow())
        .returning(CreditLeaseRow.key_id, CreditLeaseRow.amount_micro, CreditLeaseRow.charged_micro)
    ).first()
    if row is None:
        return 0
    key_id, amount, charged = row[0], int(row[1]), int(row[2])
    rest = amount - charged
    if rest != 0:  # negative only when a cost above its hold overspent the lease
        balance = conn.execute(ADD, {"key_id": key_id, "amount": rest}).scalar()
        kind = "expire" if status == "expired" else "lease_return"
        note = f"charged {usd(charged)} of {usd(amount)}"
        if status == "expired":
            note += ": its worker stopped"
        write_entry(conn, key_id, kind, rest, balance, lease_id, None, note)
    return rest


def charge(conn: Connection, hold: Hold, cost_micro: int, usage: UsageRecord) -> None:
    """Settle a hold taken from a lease: the cost goes on the lease (or, the lease being
    closed already, straight on the key) and the usage record names the lease."""
    assert hold.lease_id is not None
    usage.cost_micro = cost_micro
    if cost_micro > hold.amount_micro:
        log.error(
            "cost above its hold; charged whole through its lease",
            extra={"lease": hold.lease_id, "cost_micro": cost_micro, "held": hold.amount_micro},
        )
        metrics.record_charge_above_hold()
    if cost_micro != 0:
        params = {"lease_id": hold.lease_id, "amount": cost_micro}
        if not conn.execute(_CHARGE_OPEN, params).rowcount:
            # The lease was returned or expired meanwhile: its money is back on the key.
            conn.execute(_CHARGE_ANY, params)
            balance = conn.execute(ADD, {"key_id": hold.key_id, "amount": -cost_micro}).scalar()
            note = "late settlement through a closed lease"
            write_entry(
                conn,
                hold.key_id,
                "charge",
                -cost_micro,
                balance,
                hold.lease_id,
                hold.generation_id,
                note,
            )
    insert_usage(conn, usage, hold.lease_id)


def refund(conn: Connection, hold: Hold, usage: UsageRecord) -> int:
    """Give back a lease-settled charge whose response was not delivered, once; returns
    the amount refunded."""
    assert hold.lease_id is not None
    refunded = usage.cost_micro  # zeroed by the caller once committed: a rerun reads it again
    reset = conn.execute(
        update(UsageRow)
        .where(UsageRow.generation_id == usage.generation_id, UsageRow.cost_micro > 0)
        .values(status=usage.status, error_code=usage.error_code, cost_micro=0)
    ).rowcount
    if not reset or refunded <= 0:
        conn.execute(
            update(UsageRow)
            .where(UsageRow.generation_id == usage.generation_id)
            .values(status=usage.status, error_code=usage.error_code)
        )
        return 0
    params = {"lease_id": hold.lease_id, "amount": -refunded}
    if not conn.execute(_CHARGE_OPEN, params).rowcount:
        conn.execute(_CHARGE_ANY, params)
        balance = conn.execute(ADD, {"key_id": hold.key_id, "amount": refunded}).scalar()
        note = f"response not delivered: {usage.error_code}"
        write_entry(
            conn, hold.key_id, "refund", refunded, balance, hold.lease_id, hold.generation_id, note
        )
    return refunded


def expire_leases(db: Database, limit: int = 500, now: datetime | None = None) -> int:
    """Close every open lease past its expiry (at ``now``): its worker died or hung. A
    lease is good up to and including its expiry instant. Returns how many closed."""
    now = now or utcnow()
    with db.engine.connect() as conn:
        stale = (
            conn.execute(
                select(CreditLeaseRow.id)
                .where(CreditLeaseRow.status == "open", CreditLeaseRow.expires_at < now)
                .limit(limit)
            )
            .scalars()
            .all()
        )
    expired = 0
    for lease_id in stale:
        with db.write() as conn:
            row = conn.execute(
                select(CreditLeaseRow.status).where(CreditLeaseRow.id == lease_id)
            ).scalar()
            if row == "open":
                close_lease(conn, lease_id, "expired", now)
                expired += 1
    if expired:
        log.warning("returned expired credit leases", extra={"leases": expired})
    return expired


# --- this worker's leases ------------------------------------------------------------------


class Leases:
    """The leases of one worker (one event loop), one current lease per key."""

    def __init__(self, ledger: Ledger, lease_micro: int, lease_s: float) -> None:
        self._ledger = ledger
        self.lease_micro = lease_micro
        self.lease_s = lease_s
        self.worker = worker_name()
        self._current: dict[str, Lease] = {}  # key id -> the lease new holds come from
        self._draining: dict[str, Lease] = {}  # lease id -> lease with holds still in flight
        self._renewing: dict[str, asyncio.Future[_Renewal]] = {}  # key id -> lease write queued
        self._short_until: dict[str, float] = {}  # key id -> monotonic end of per-request holds

    def open(self) -> list[Lease]:
        """Every lease this worker holds, current or draining."""
        return [*self._current.values(), *self._draining.values()]

    def take(self, key_id: str, amount_micro: int, generation_id: str) -> Hold | None:
        """A hold from the key's current lease, in memory, or None if it does not fit."""
        lease = self._current.get(key_id)
        if lease is None or not lease.can_hold(amount_micro, time.monotonic()):
            return None
        return _hold_from(lease, amount_micro, generation_id)

    async def hold(self, key_id: str, amount_micro: int, generation_id: str) -> Hold | None:
        """Hold from a lease, leasing a new slice when needed; a request bigger than a
        slice, or a balance below one, takes a per-request hold instead."""
        while True:  # wait for the lease another request is taking, then try it
            if amount_micro > self.lease_micro or self._short(key_id):
                return await self._ledger.hold_in_db(key_id, amount_micro, generation_id)
            hold = self.take(key_id, amount_micro, generation_id)
            if hold is not None:
                return hold
            pending = self._renewing.get(key_id)
            if pending is None:
                return await self._renew(key_id, amount_micro, generation_id)
            await asyncio.wait([pending])

    def _short(self, key_id: str) -> bool:
        """The last lease write found the balance short of a slice: hold per request
        (concurrently, batched as without leases) until ``lease_s`` has passed."""
        until = self._short_until.get(key_id)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._short_until[key_id]
        return False

    async def _renew(self, key_id: str, amount_micro: int, generation_id: str) -> Hold | None:
        """One write: give back the current lease's free remainder (closing it if idle),
        then lease a new slice, or, the balance being short of one, hold per request."""
        old = self._current.pop(key_id, None)
        closing, returning = self._retire(old)
        usable_until = time.monotonic() + self.lease_s
        ttl = timedelta(seconds=self.lease_s + self._ledger.hold_ttl_s)

        def job(conn: Connection) -> _Renewal:
            if closing is not None:
                close_lease(conn, closing, "returned")
            elif old is not None and returning > 0:
                give_back(conn, old.id, key_id, returning)
            lease_id = take_lease(conn, key_id, self.lease_micro, self.worker, ttl)
            if lease_id is not None:
                return lease_id, None, None
            try:
                return None, self._ledger.hold_on(conn, key_id, amount_micro, generation_id), None
            except InsufficientCredits as exc:  # keep the give-back: it is not undone
                return None, None, exc

        write = asyncio.ensure_future(self._ledger.batcher.run(job, order=key_id))
        self._renewing[key_id] = write
        try:
            lease_id, hold, refused = await asyncio.shield(write)
        finally:
            if self._renewing.get(key_id) is write:
                del self._renewing[key_id]
        if refused is not None:
            self._short_until[key_id] = time.monotonic() + self.lease_s
            raise refused
        if lease_id is None:
            self._short_until[key_id] = time.monotonic() + self.lease_s
            return hold
        fresh = Lease(lease_id, key_id, self.lease_micro, usable_until)
        replaced = self._current.get(key_id)  # a concurrent renewal's lease: retire it
        self._current[key_id] = fresh
        if replaced is not None:
            self._close_later(replaced)
        return _hold_from(fresh, amount_micro, generation_id)  # fits: no bigger than a slice

    def _retire(self, lease: Lease | None) -> tuple[str | None, int]:
        """Stop holding from ``lease``: (its id if it can close now, else None; the free
        remainder to give back now). The in-memory amount shrinks at once."""
        if lease is None:
            return None, 0
        lease.draining = True
        if lease.holds == 0:
            return lease.id, 0
        returning = max(lease.free_micro(), 0)
        lease.amount_micro -= returning
        self._draining[lease.id] = lease
        return None, returning

    def _close_later(self, lease: Lease) -> None:
        closing, _ = self._retire(lease)
        if closing is not None:
            task = asyncio.ensure_future(
                self._ledger.batcher.run(_closer(closing), order=lease.key_id)
            )
            _pending_closes.add(task)
            task.add_done_callback(_pending_closes.discard)

    def finish(self, hold: Hold, cost_micro: int) -> str | None:
        """A lease hold ended at ``cost_micro``: update this worker's view; returns the
        lease's id when that was the last hold of a draining lease (close it now)."""
        lease = self._current.get(hold.key_id)
        if lease is None or lease.id != hold.lease_id:
            lease = self._draining.get(hold.lease_id or "")
        if lease is None:
            return None
        lease.holds -= 1
        lease.reserved_micro -= hold.amount_micro
        lease.spent_micro += cost_micro
        if lease.draining and lease.holds == 0:
            del self._draining[lease.id]
            return lease.id
        return None

    def refunded(self, hold: Hold, amount_micro: int) -> None:
        """A lease-settled charge was given back: it is free again in this worker's view."""
        lease = self._current.get(hold.key_id)
        if lease is not None and lease.id == hold.lease_id:
            lease.spent_micro -= amount_micro

    async def return_idle(self) -> int:
        """Close the leases whose window passed: now if idle, else at their last hold."""
        now = time.monotonic()
        closing: list[str] = []
        for key_id, lease in list(self._current.items()):
            if now >= lease.usable_until:
                del self._current[key_id]
                lease_id, _ = self._retire(lease)
                if lease_id is not None:
                    closing.append(lease_id)
        for lease_id in closing:
            await self._ledger.batcher.run(_closer(lease_id))
        return len(closing)

    def return_all(self, db: Database) -> int:
        """Shutdown: close every lease this worker holds, one transaction each. A hold
        still in flight settles later as a direct charge. Returns the money given back."""
        given = 0
        for lease in self.open():
            with db.write() as conn:
                given += close_lease(conn, lease.id, "returned")
        self._current.clear()
        self._draining.clear()
        return given


_pending_closes: set[asyncio.Future[int]] = set()  # closes nobody awaits, kept referenced


def _hold_from(lease: Lease, amount_micro: int, generation_id: str) -> Hold:
    lease.reserved_micro += amount_micro
    lease.holds += 1
    hold_id = "lhold_" + secrets.token_hex(12)
    return Hold(hold_id, lease.key_id, amount_micro, generation_id, lease.id)


def _closer(lease_id: str) -> Callable[[Connection], int]:
    """A write job that returns ``lease_id``'s unspent money (``close_lease``)."""

    def job(conn: Connection) -> int:
        return close_lease(conn, lease_id, "returned")

    return job
