"""SQLAlchemy table definitions.

Only portable column types are used so the same models (and the same hand-written
Alembic migrations) work on SQLite and PostgreSQL. A test compares the migrated schema
with these models, so a change here needs a matching migration.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Timezone-aware "now"; all stored timestamps are UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base whose ``metadata`` Alembic migrates towards."""


class ApiKeyRow(Base):
    """One API key. The secret is never stored, only its SHA-256.

    Keys carry 32 random bytes, so a plain hash is enough; a slow KDF would only add
    latency to every authenticated request.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # JSON list of model ids/aliases the key may use; NULL means every model.
    models: Mapped[list[str] | None] = mapped_column(JSON)
    # Credit limit in micro-USD; NULL means no credit limit.
    credits_micro: Mapped[int | None] = mapped_column(BigInteger)
    # Requests per minute; NULL means no limit.
    rpm: Mapped[int | None] = mapped_column(Integer)
    # Images per minute and concurrent requests; NULL means no limit.
    ipm: Mapped[int | None] = mapped_column(Integer)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"ApiKeyRow(id={self.id!r}, name={self.name!r}, is_admin={self.is_admin!r})"


class KeyEpochRow(Base):
    """One row counting changes to keys (revocations, top-ups) for in-memory key caches:
    each process re-reads it at most every ``REVOCATION_BOUND_S`` and drops its cache
    when it moved (see accounts/keys.py)."""

    __tablename__ = "key_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger)


class _Reservation:
    """What a hold and a lease share: an amount of a key's balance set aside until
    ``expires_at``, ``open`` until closed at ``closed_at``."""

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    amount_micro: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CreditHoldRow(_Reservation, Base):
    """Credit set aside for one request in flight: the worst case it can cost.

    ``open`` until settled (charged ``charged_micro``, the rest returned), released (the
    request failed) or expired (its process died; a sweeper returns it all).
    """

    __tablename__ = "credit_holds"

    charged_micro: Mapped[int | None] = mapped_column(BigInteger)
    generation_id: Mapped[str] = mapped_column(String(40))

    __table_args__ = (Index("ix_credit_holds_status_expires", "status", "expires_at"),)


class CreditLeaseRow(_Reservation, Base):
    """A slice of a key's balance taken by one worker, which holds from it in memory.

    ``amount_micro`` is what the lease holds of the key's money (taken, less parts given
    back), ``charged_micro`` what requests settled through it; ``open`` until its worker
    returns the rest (``returned``) or a sweeper does after ``expires_at`` (``expired``:
    the worker died). See accounts/leases.py.
    """

    __tablename__ = "credit_leases"

    worker: Mapped[str] = mapped_column(String(100))
    charged_micro: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_credit_leases_status_expires", "status", "expires_at"),)


class LedgerEntryRow(Base):
    """One credit movement; append-only. ``amount_micro`` is signed: + adds to the balance.

    Kinds: ``topup``, ``hold``, ``charge`` (settled part of a hold, or a direct charge),
    ``release`` (unused part of a hold returned), ``expire`` (a stale hold or lease
    returned), ``lease`` (a slice leased by a worker; ``hold_id`` names the lease) and
    ``lease_return`` (what a lease did not spend, given back).
    ``balance_micro`` is the key's balance right after the movement.
    """

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    key_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    amount_micro: Mapped[int] = mapped_column(BigInteger)
    balance_micro: Mapped[int | None] = mapped_column(BigInteger)
    hold_id: Mapped[str | None] = mapped_column(String(40))
    generation_id: Mapped[str | None] = mapped_column(String(40))
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    # A key's ledger page (``WHERE key_id = ? AND id > ? ORDER BY id``) reads one index range.
    __table_args__ = (Index("ix_ledger_entries_key_id_id", "key_id", "id"),)


class UsageRow(Base):
    """One request that reached routing, whatever its outcome."""

    __tablename__ = "usage_records"

    generation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    operation: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(100))
    upstream_model: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    images: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    cost_micro: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The credit lease the request was charged through (accounts/leases.py); NULL: a hold.
    lease_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        # Keyset pages of GET /v1/generations: (created_at, id) in index order, per key or all.
        Index("ix_usage_records_key_created_id", "key_id", "created_at", "generation_id"),
        Index("ix_usage_records_created_id", "created_at", "generation_id"),
    )


class UsageHourlyRow(Base):
    """Usage records summed per key, UTC hour, model and provider (``""``: none).

    Written in the same transaction as each usage record, so ``GET /v1/usage`` over 30
    days reads at most 720 rows per key and model instead of every record.
    """

    __tablename__ = "usage_hourly"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    succeeded: Mapped[int] = mapped_column(BigInteger)
    images: Mapped[int] = mapped_column(BigInteger)
    cost_micro: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_usage_hourly_bucket", "bucket"),)


class UpstreamHourlyRow(Base):
    """Upstream calls (every attempt of every request) summed per key, UTC hour and
    provider: what upstreams billed, read by ``GET /v1/usage`` without parsing attempts."""

    __tablename__ = "usage_upstream_hourly"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)
    succeeded: Mapped[int] = mapped_column(BigInteger)
    cost_micro: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_usage_upstream_hourly_bucket", "bucket"),)


class KeyDailyRow(Base):
    """Usage records summed per key and UTC day (no model or provider), for an admin's
    usage grouped by key: a page of keys reads at most one row per key and day."""

    __tablename__ = "usage_key_daily"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    succeeded: Mapped[int] = mapped_column(BigInteger)
    images: Mapped[int] = mapped_column(BigInteger)
    cost_micro: Mapped[int] = mapped_column(BigInteger)


class IdempotencyRow(Base):
    """The first response to an ``Idempotency-Key``, replayed for 24 hours.

    ``status`` is ``pending`` while the first request runs, then ``done`` with the stored
    response; a failed first request deletes its row so a retry runs again.
    """

    __tablename__ = "idempotency_records"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
