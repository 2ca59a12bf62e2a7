"""Column shapes the migrations repeat: one definition each, so tables read as lists of names.

Only for ``db/migrations/versions``: a migration must keep producing the schema it first
produced, so change a shape here only as a new migration would.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def timestamp(name: str, **options: Any) -> sa.Column[Any]:
    """A timezone-aware instant, NOT NULL unless ``nullable=True``."""
    return sa.Column(name, sa.DateTime(timezone=True), **_not_null(options))


def varchar(name: str, length: int, **options: Any) -> sa.Column[Any]:
    """A ``VARCHAR(length)``, NOT NULL unless ``nullable=True``."""
    return sa.Column(name, sa.String(length), **_not_null(options))


def bigint(name: str, **options: Any) -> sa.Column[Any]:
    """A 64-bit integer (micro-USD amounts, counters), NOT NULL unless ``nullable=True``."""
    return sa.Column(name, sa.BigInteger(), **_not_null(options))


def key_id(**options: Any) -> sa.Column[Any]:
    """The owning API key's id."""
    return varchar("key_id", 32, **options)


def reservation_lifetime() -> tuple[sa.Column[Any], ...]:
    """When a hold or lease was taken, when it lapses unless closed, and when it was closed."""
    return (timestamp("created_at"), timestamp("expires_at"), timestamp("closed_at", nullable=True))


def _not_null(options: dict[str, Any]) -> dict[str, Any]:
    if options.get("primary_key"):
        return options
    return {"nullable": False, **options}
