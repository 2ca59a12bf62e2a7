"""Hourly usage rollups: sums per key and UTC hour, kept with every usage record.

``GET /v1/usage`` over 30 days would otherwise read (and parse the attempts of) every
record in the window: a cost that grows with traffic. With the rollups it reads whole
hours from ``usage_hourly`` / ``usage_upstream_hourly`` and only the records of the two
partial hours at the window's edges, so its cost is flat in the number of records.

The rollup rows are upserted (``ON CONFLICT DO UPDATE`` adding the new amounts) in the
transaction that inserts the record, so they never disagree with the records.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Insert, Table
from sqlalchemy.dialects import postgresql, sqlite

from imagegate.db.models import UpstreamHourlyRow, UsageHourlyRow

HOUR = timedelta(hours=1)
_USAGE: Table = UsageHourlyRow.__table__  # type: ignore[assignment]
_UPSTREAM: Table = UpstreamHourlyRow.__table__  # type: ignore[assignment]
_USAGE_KEY = ("key_id", "bucket", "model", "provider")
_UPSTREAM_KEY = ("key_id", "bucket", "provider")
_STATEMENTS: dict[str, tuple[Insert, Insert]] = {}


def floor_hour(value: datetime) -> datetime:
    """The UTC hour ``value`` falls in (naive values are UTC, as SQLite returns them)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: datetime) -> datetime:
    floor = floor_hour(value)
    return floor if floor == value else floor + HOUR


def _upsert(dialect: str, table: Table, key: tuple[str, ...]) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    adds = {c.name: c + stmt.excluded[c.name] for c in table.c if c.name not in key}
    return stmt.on_conflict_do_update(index_elements=list(key), set_=adds)


def _statements(conn: Connection) -> tuple[Insert, Insert]:
    """The two upserts for this dialect, built once (building costs more than running)."""
    dialect = conn.dialect.name
    if dialect not in _STATEMENTS:
        _STATEMENTS[dialect] = (
            _upsert(dialect, _USAGE, _USAGE_KEY),
            _upsert(dialect, _UPSTREAM, _UPSTREAM_KEY),
        )
    return _STATEMENTS[dialect]


class Rollup:
    """Sums of some usage records, by the rollup tables' keys, ready to upsert."""

    def __init__(self) -> None:
        self.usage: dict[tuple[str, datetime, str, str], list[int]] = {}
        self.upstream: dict[tuple[str, datetime, str], list[int]] = {}

    def add(
        self,
        key_id: str,
        created_at: datetime,
        model: str,
        provider: str | None,
        status: int,
        images: int | None,
        cost_micro: int | None,
        attempts: Iterable[dict[str, Any]] | None,
    ) -> None:
        bucket = floor_hour(created_at)
        acc = self.usage.setdefault((key_id, bucket, model, provider or ""), [0, 0, 0, 0])
        acc[0] += 1
        acc[1] += int(status == 200)
        acc[2] += int(images or 0)
        acc[3] += int(cost_micro or 0)
        for attempt in attempts or ():
            name = str(attempt.get("provider") or "unknown")
            up = self.upstream.setdefault((key_id, bucket, name), [0, 0, 0])
            up[0] += 1
            up[1] += int(attempt.get("status") == 200)
            up[2] += int(attempt.get("cost_micro") or 0)

    def add_row(self, row: Any) -> None:
        """Add a ``usage_records`` row (attempts as stored: JSON text on SQLite)."""
        attempts = row.attempts
        if isinstance(attempts, str | bytes):
            attempts = orjson.loads(attempts)
        self.add(
            row.key_id,
            row.created_at,
            row.model,
            row.provider,
            row.status,
            row.images,
            row.cost_micro,
            attempts,
        )

    def write(self, conn: Connection) -> None:
        """Add these sums to the rollup tables (one statement per table)."""
        usage_stmt, upstream_stmt = _statements(conn)
        if self.usage:
            conn.execute(
                usage_stmt,
                [
                    dict(zip(_USAGE_KEY, k, strict=True))
                    | {"requests": v[0], "succeeded": v[1], "images": v[2], "cost_micro": v[3]}
                    for k, v in self.usage.items()
                ],
            )
        if self.upstream:
            conn.execute(
                upstream_stmt,
                [
                    dict(zip(_UPSTREAM_KEY, k, strict=True))
                    | {"calls": v[0], "succeeded": v[1], "cost_micro": v[2]}
                    for k, v in self.upstream.items()
                ],
            )
