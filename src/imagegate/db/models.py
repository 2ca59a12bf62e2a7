"""SQLAlchemy table definitions.

Only portable column types are used so the same models (and the same hand-written
Alembic migrations) work on SQLite and PostgreSQL. A test compares the migrated schema
with these models, so a change here needs a matching migration.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Integer, String, false
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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"ApiKeyRow(id={self.id!r}, name={self.name!r}, is_admin={self.is_admin!r})"
