"""Usage records: one row per request that reached routing, and reports over them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, func, insert, select

from imagegate.accounts.edges import Filter, upstream_sums, usage_sums
from imagegate.accounts.rollup import ALL_KEYS, Rollup, ceil_day, ceil_hour, floor_day, floor_hour
from imagegate.db.models import KeyDailyRow, UpstreamHourlyRow, UsageHourlyRow, UsageRow, utcnow
from imagegate.db.session import Database

GroupBy = Literal["model", "provider", "key", "day"]
GROUP_BY: tuple[GroupBy, ...] = ("model", "provider", "key", "day")
MAX_KEYS_PAGE = 1000  # keys in one page of usage grouped by key


@dataclass(slots=True)
class UsageRecord:
    generation_id: str
    key_id: str
    model: str
    operation: str
    status: int = 200
    provider: str | None = None
    upstream_model: str | None = None
    error_code: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    images: int = 0
    latency_ms: float = 0.0
    cost_micro: int = 0
    created_at: datetime = field(default_factory=utcnow)

    def to_json(self, *, upstream_costs: bool = False) -> dict[str, Any]:
        """The ``GET /v1/generations/{id}`` body. Each attempt's ``cost_micro`` (what the
        upstream bills the operator) only with ``upstream_costs`` (admin keys)."""
        body = asdict(self)
        if not upstream_costs:
            body["attempts"] = caller_attempts(self.attempts)
        body["id"] = body.pop("generation_id")
        body["object"] = "generation"
        body["cost_usd"] = round(self.cost_micro / 1_000_000, 6)
        body["latency_ms"] = round(self.latency_ms, 1)
        body["created_at"] = int(_utc(self.created_at).timestamp())
        return body


def caller_attempts(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attempts as a caller may see them: without what each call costs the operator."""
    return [{k: v for k, v in a.items() if k != "cost_micro"} for a in attempts]


_INSERT = insert(UsageRow)  # built once: building it per request costs more than running it


def insert_usage(conn: Connection, record: UsageRecord, lease_id: str | None = None) -> None:
    """Write the record and its rollups; ``lease_id``: the credit lease it was charged
    through (accounts/leases.py), None for a per-request hold or no charge at all."""
    conn.execute(
        _INSERT,
        {
            "generation_id": record.generation_id,
            "key_id": record.key_id,
            "model": record.model,
            "operation": record.operation,
            "status": record.status,
            "provider": record.provider,
            "upstream_model": record.upstream_model,
            "error_code": record.error_code,
            "attempts": record.attempts,
            "images": record.images,
            "latency_ms": record.latency_ms,
            "cost_micro": record.cost_micro,
            "created_at": record.created_at,
            "lease_id": lease_id,
        },
    )
    rollup = Rollup()
    rollup.add(
        record.key_id,
        record.created_at,
        record.model,
        record.provider,
        record.status,
        record.images,
        record.cost_micro,
        record.attempts,
    )
    rollup.write(conn)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def record_from_row(row: UsageRow) -> UsageRecord:
    return UsageRecord(
        generation_id=row.generation_id,
        key_id=row.key_id,
        model=row.model,
        operation=row.operation,
        status=row.status,
        provider=row.provider,
        upstream_model=row.upstream_model,
        error_code=row.error_code,
        attempts=list(row.attempts or []),
        images=row.images,
        latency_ms=row.latency_ms,
        cost_micro=row.cost_micro,
        created_at=_utc(row.created_at),
    )


class UsageBook:
    """Reads over the usage records (writes happen with the ledger's transactions)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, record: UsageRecord) -> None:
        with self._db.write() as conn:
            insert_usage(conn, record)

    def get(self, generation_id: str) -> UsageRecord | None:
        with self._db.session() as session:
            row = session.get(UsageRow, generation_id)
            return None if row is None else record_from_row(row)

    def summary(
        self,
        start: datetime,
        end: datetime,
        group_by: GroupBy | None = None,
        key_id: str | None = None,
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> dict[str, Any]:
        """Totals between ``start`` (inclusive) and ``end`` (exclusive), optionally grouped.

        Whole hours come from the hourly rollups, the partial hours at either edge from
        the records themselves: the cost does not grow with the number of records.

        Grouped by key over every key with a ``limit``, ``data`` is one page of ``limit``
        keys after the key id ``after``, in key id order; ``has_more`` and ``last_id``
        (the next ``after``) say where the next page starts, and the totals and upstream
        calls stay those of every key. Without a ``limit`` (the CLI) every key is summed
        from the hourly rollups at once.
        """
        paged = group_by == "key" and key_id is None and limit is not None
        page: dict[Any, list[int]] = {}
        has_more, last_id = False, None
        with self._db.engine.connect() as conn:
            groups, upstream = _window_sums(conn, start, end, None if paged else group_by, key_id)
            if paged and limit is not None:
                page, has_more, last_id = _key_page(conn, start, end, limit, after)
        total = [sum(acc[i] for acc in groups.values()) for i in range(4)]
        data = [] if group_by is None else _group_rows(page if paged else groups)
        body = {
            "object": "usage",
            "start": int(_utc(start).timestamp()),
            "end": int(_utc(end).timestamp()),
            "group_by": group_by,
            "totals": _totals(total),
            "data": data,
            "upstream": _upstream_json(upstream),
        }
        if paged:
            body |= {"has_more": has_more, "last_id": last_id}
        return body


def _window_sums(
    conn: Connection,
    start: datetime,
    end: datetime,
    group_by: GroupBy | None,
    key_id: str | None,
    keys: Sequence[str] | None = None,
) -> tuple[dict[Any, list[int]], dict[str, list[int]]]:
    """Sums over ``[start, end)``: whole hours from the rollups, the rest from records."""
    lo, hi = ceil_hour(start), floor_hour(end)
    edges = [(start, lo), (hi, end)] if lo <= hi else [(start, end)]  # each inside an hour
    groups, upstream = _edge_sums(conn, edges, group_by, key_id, keys)
    if lo < hi:
        _rollup_sums(conn, groups, upstream, lo, hi, group_by, key_id, keys)
    return groups, upstream


def _key_page(
    conn: Connection, start: datetime, end: datetime, limit: int, after: str | None
) -> tuple[dict[Any, list[int]], bool, str | None]:
    """One page of keys with usage in ``[start, end)``, summed per key.

    The page's keys are those with a daily row in a day the window touches, after
    ``after`` in key order (one index range of ``usage_key_daily``); the sums read only
    those keys: whole days from the daily rows, the partial days at either edge as any
    window is read (hourly rollups and records), so a page costs the same however many
    records and keys there are.
    """
    d = KeyDailyRow
    found = select(d.key_id).where(d.day >= floor_day(start), d.day < ceil_day(end))
    if after is not None:
        found = found.where(d.key_id > after)
    found = found.group_by(d.key_id).order_by(d.key_id).limit(limit + 1)
    keys = list(conn.execute(found).scalars())
    has_more, keys = len(keys) > limit, keys[:limit]
    if not keys:
        return {}, False, None
    lo, hi = ceil_day(start), floor_day(end)
    spans = [(start, lo), (hi, end)] if lo < hi else [(start, end)]
    groups: dict[Any, list[int]] = {}
    for span_start, span_end in spans:
        if span_start < span_end:
            part, _ = _window_sums(conn, span_start, span_end, "key", None, keys)
            for group, values in part.items():
                _add(groups.setdefault(group, [0, 0, 0, 0]), values)
    if lo < hi:
        sums = [func.sum(d.requests), func.sum(d.succeeded), func.sum(d.images)]
        whole = select(d.key_id, *sums, func.sum(d.cost_micro)).where(
            d.key_id.in_(keys), d.day >= lo, d.day < hi
        )
        for row in conn.execute(whole.group_by(d.key_id)):
            _add(groups.setdefault(row[0], [0, 0, 0, 0]), row[1:])
    return groups, has_more, keys[-1]


def _add(acc: list[int], values: Sequence[int]) -> None:
    for i, value in enumerate(values):
        acc[i] += int(value or 0)


def _edge_sums(
    conn: Connection,
    edges: list[tuple[datetime, datetime]],
    group_by: GroupBy | None,
    key_id: str | None,
    keys: Sequence[str] | None = None,
) -> tuple[dict[Any, list[int]], dict[str, list[int]]]:
    """Sums of the records in the partial hours (each edge inside one hour), summed by
    the database; the upstream calls only for a whole window (a page of keys has none)."""
    column = {"model": "model", "provider": "provider", "key": "key_id"}.get(group_by or "")
    where: Filter = "all"
    params: dict[str, Any] = {}
    if key_id is not None:
        where, params = "key", {"key_id": key_id}
    if keys is not None:
        where, params = "keys", {"keys": list(keys)}
    groups: dict[Any, list[int]] = {}
    upstream: dict[str, list[int]] = {}
    for lo, hi in edges:
        if lo >= hi:
            continue
        span = {"lo": lo, "hi": hi, **params}
        for row in usage_sums(conn, column, where, span):
            if not row[-4]:
                continue  # no record (the one row of an ungrouped sum)
            group = row[0] if column is not None else None
            if group_by == "day":
                group = floor_day(lo).strftime("%Y-%m-%d")  # an edge lies inside one hour
            elif group_by == "provider":
                group = group or None
            _add(groups.setdefault(group, [0, 0, 0, 0]), row[-4:])
        if keys is None:
            for provider, *calls in upstream_sums(conn, where, span):
                _add(upstream.setdefault(provider, [0, 0, 0]), calls)
    return groups, upstream


def _rollup_sums(
    conn: Connection,
    groups: dict[Any, list[int]],
    upstream: dict[str, list[int]],
    lo: datetime,
    hi: datetime,
    group_by: GroupBy | None,
    key_id: str | None,
    keys: Sequence[str] | None = None,
) -> None:
    """Add the whole hours ``[lo, hi)`` from the rollup tables, grouped in SQL."""
    u, a = UsageHourlyRow, UpstreamHourlyRow
    column = {
        None: None,
        "model": u.model,
        "provider": u.provider,
        "key": u.key_id,
        "day": u.bucket,
    }[group_by]
    sums = [func.sum(u.requests), func.sum(u.succeeded), func.sum(u.images), func.sum(u.cost_micro)]
    where = [u.bucket >= lo, u.bucket < hi, _keys(u.key_id, key_id, group_by)]
    if keys is not None:
        where.append(u.key_id.in_(keys))
    cols: list[Any] = [] if column is None else [column]
    query: Any = select(*cols, *sums).where(*where)
    if column is not None:
        query = query.group_by(column)
    for row in conn.execute(query).all():
        r: tuple[Any, ...] = tuple(row)
        group: Any = r[0] if cols else None
        if group_by == "day":
            group = _utc(group).strftime("%Y-%m-%d")
        elif group_by == "provider":
            group = group or None
        _add(groups.setdefault(group, [0, 0, 0, 0]), r[len(cols) :])
    if keys is not None:
        return  # a page of keys: the upstream calls are every key's, summed apart
    where_up = [a.bucket >= lo, a.bucket < hi, _keys(a.key_id, key_id, None)]
    spent = select(a.provider, func.sum(a.calls), func.sum(a.succeeded), func.sum(a.cost_micro))
    for row in conn.execute(spent.where(*where_up).group_by(a.provider)):
        _add(upstream.setdefault(row[0], [0, 0, 0]), row[1:])


def _keys(column: Any, key_id: str | None, group_by: GroupBy | None) -> Any:
    """One key's rows; else the ALL_KEYS rows, or every key's to group by key."""
    if key_id is not None:
        return column == key_id
    return column != ALL_KEYS if group_by == "key" else column == ALL_KEYS


def _group_rows(groups: dict[Any, list[int]]) -> list[dict[str, Any]]:
    ordered = sorted(groups.items(), key=lambda item: (item[0] is None, item[0] or ""))
    return [_totals(acc, group=group) for group, acc in ordered if acc[0]]


def _upstream_json(upstream: dict[str, list[int]]) -> dict[str, Any]:
    total = sum(acc[2] for acc in upstream.values())
    return {
        "cost_usd": round(total / 1_000_000, 6),
        "calls": sum(acc[0] for acc in upstream.values()),
        "by_provider": [
            {
                "provider": provider,
                "calls": acc[0],
                "succeeded": acc[1],
                "cost_usd": round(acc[2] / 1_000_000, 6),
            }
            for provider, acc in sorted(upstream.items())
        ],
    }


def _totals(acc: Sequence[int], **extra: Any) -> dict[str, Any]:
    """``acc`` is ``[requests, succeeded, images, cost_micro]``."""
    return {
        **extra,
        "requests": int(acc[0]),
        "succeeded": int(acc[1]),
        "images": int(acc[2]),
        "cost_usd": round(int(acc[3]) / 1_000_000, 6),
    }
