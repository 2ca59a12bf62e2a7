"""Hourly usage rollups: sums per key and UTC hour, kept with every usage record.

``GET /v1/usage`` over 30 days would otherwise read (and parse the attempts of) every
record in the window: a cost that grows with traffic. With the rollups it reads whole
hours from ``usage_hourly`` / ``usage_upstream_hourly`` and only the records of the two
partial hours at the window's edges, so its cost is flat in the number of records.

The rollup rows are upserted (``ON CONFLICT DO UPDATE`` adding the new amounts) in the
transaction that inserts the record, so they never disagree with the records.

Rows with ``key_id = ""`` (``ALL_KEYS``) sum every key, for an admin's usage over all
keys. Every request updates them, so in a write batch they are deferred to the end of the
batch (db/batch.py ``DEFERRED``) and written in sorted order, after every per-key lock:
concurrent batches then take locks in one global order and cannot deadlock on them. A
key's own rows are deferred the same way and written just before them (sorted, after
every ``api_keys`` lock of the batch): the jobs of a batch that share a key, hour and
model add up to one upsert instead of one each (a busy key's requests mostly do).

``usage_key_daily`` sums each key per UTC day (no ALL_KEYS rows, no model): an admin's
usage grouped by key pages through it, at most one row per key and day.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Insert, Table
from sqlalchemy.dialects import postgresql, sqlite

from imagegate.db.batch import DEFERRED
from imagegate.db.models import KeyDailyRow, UpstreamHourlyRow, UsageHourlyRow

ALL_KEYS = ""

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_USAGE: Table = UsageHourlyRow.__table__  # type: ignore[assignment]
_UPSTREAM: Table = UpstreamHourlyRow.__table__  # type: ignore[assignment]
_USAGE_KEY = ("key_id", "bucket", "model", "provider")
_DAILY: Table = KeyDailyRow.__table__  # type: ignore[assignment]
_UPSTREAM_KEY = ("key_id", "bucket", "provider")
_DAILY_KEY = ("key_id", "day")
_COUNTS = ("requests", "succeeded", "images", "cost_micro")
_CALLS = ("calls", "succeeded", "cost_micro")
_STATEMENTS: dict[str, tuple[Insert, Insert, Insert]] = {}
# Names of the deferred sums in a write batch; the batch flushes them in sorted name order.
KEY_ROWS = "usage_keys"
TOTAL_ROWS = "usage_totals"
assert KEY_ROWS < TOTAL_ROWS


def floor_hour(value: datetime) -> datetime:
    """The UTC hour ``value`` falls in (naive values are UTC, as SQLite returns them)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: datetime) -> datetime:
    floor = floor_hour(value)
    return floor if floor == value else floor + HOUR


def floor_day(value: datetime) -> datetime:
    """The UTC day ``value`` falls in, as midnight."""
    return floor_hour(value).replace(hour=0)


def ceil_day(value: datetime) -> datetime:
    floor = floor_day(value)
    return floor if floor == value else floor + DAY


def _upsert(dialect: str, table: Table, key: tuple[str, ...]) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    adds = {c.name: c + stmt.excluded[c.name] for c in table.c if c.name not in key}
    return stmt.on_conflict_do_update(index_elements=list(key), set_=adds)


def _statements(conn: Connection) -> tuple[Insert, Insert, Insert]:
    """The three upserts for this dialect, built once (building costs more than running)."""
    dialect = conn.dialect.name
    if dialect not in _STATEMENTS:
        _STATEMENTS[dialect] = (
            _upsert(dialect, _USAGE, _USAGE_KEY),
            _upsert(dialect, _UPSTREAM, _UPSTREAM_KEY),
            _upsert(dialect, _DAILY, _DAILY_KEY),
        )
    return _STATEMENTS[dialect]


class Rollup:
    """Sums of some usage records, by the rollup tables' keys, ready to upsert."""

    def __init__(self, *, totals: bool = True, days: bool = True) -> None:
        self._totals = totals  # also sum into the ALL_KEYS rows
        self._days = days  # also sum into usage_key_daily (migration 0007 predates it)
        self.usage: dict[tuple[str, datetime, str, str], list[int]] = {}
        self.upstream: dict[tuple[str, datetime, str], list[int]] = {}
        self.daily: dict[tuple[str, datetime], list[int]] = {}

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
        values = (1, int(status == 200), int(images or 0), int(cost_micro or 0))
        calls = [
            (
                str(attempt.get("provider") or "unknown"),
                (1, int(attempt.get("status") == 200), int(attempt.get("cost_micro") or 0)),
            )
            for attempt in attempts or ()
        ]
        for kid in (key_id, ALL_KEYS) if self._totals else (key_id,):
            _add(self.usage.setdefault((kid, bucket, model, provider or ""), [0, 0, 0, 0]), values)
            for name, call in calls:
                _add(self.upstream.setdefault((kid, bucket, name), [0, 0, 0]), call)
        if self._days:
            day = bucket.replace(hour=0)
            _add(self.daily.setdefault((key_id, day), [0, 0, 0, 0]), values)

    def merge(self, other: Rollup) -> None:
        for key, values in other.usage.items():
            _add(self.usage.setdefault(key, [0, 0, 0, 0]), values)
        for ukey, uvalues in other.upstream.items():
            _add(self.upstream.setdefault(ukey, [0, 0, 0]), uvalues)
        for dkey, dvalues in other.daily.items():
            _add(self.daily.setdefault(dkey, [0, 0, 0, 0]), dvalues)

    def add_row(self, row: Any) -> None:
        """Add a ``usage_records`` row (as stored: JSON and time as text on SQLite)."""
        attempts = row.attempts
        if isinstance(attempts, str | bytes):
            attempts = orjson.loads(attempts)
        created_at = row.created_at  # text from SQLite through a raw (untyped) query
        if isinstance(created_at, str):
            created_at = datetime.fromisoformat(created_at)
        self.add(
            row.key_id,
            created_at,
            row.model,
            row.provider,
            row.status,
            row.images,
            row.cost_micro,
            attempts,
        )

    def write(self, conn: Connection) -> None:
        """Add these sums to the rollup tables; the ALL_KEYS rows at the end of the write
        batch when inside one, else now."""
        mine, everyone = Rollup(), Rollup()
        for key, values in self.usage.items():
            (everyone if key[0] == ALL_KEYS else mine).usage[key] = values
        for ukey, uvalues in self.upstream.items():
            (everyone if ukey[0] == ALL_KEYS else mine).upstream[ukey] = uvalues
        mine.daily = self.daily
        deferred = conn.info.get(DEFERRED)
        if deferred is None:
            mine.flush(conn)
            everyone.flush(conn)
        else:  # the batch flushes in name order: every key's rows, then the ALL_KEYS rows
            deferred.setdefault(KEY_ROWS, Rollup()).merge(mine)
            deferred.setdefault(TOTAL_ROWS, Rollup()).merge(everyone)

    def flush(self, conn: Connection) -> None:
        """Upsert every sum, in key order (one lock order for every writer)."""
        usage_stmt, upstream_stmt, daily_stmt = _statements(conn)
        for stmt, names, fields, sums in (
            (usage_stmt, _USAGE_KEY, _COUNTS, self.usage),
            (upstream_stmt, _UPSTREAM_KEY, _CALLS, self.upstream),
            (daily_stmt, _DAILY_KEY, _COUNTS, self.daily),
        ):
            if sums:
                conn.execute(stmt, [_row(names, k, fields, v) for k, v in sorted(sums.items())])


def _add(acc: list[int], values: Iterable[int]) -> None:
    for i, value in enumerate(values):
        acc[i] += value


def _row(
    names: tuple[str, ...], key: tuple[Any, ...], fields: tuple[str, ...], sums: Any
) -> dict[str, Any]:
    return dict(zip(names, key, strict=True)) | dict(zip(fields, sums, strict=True))
