"""Usage records: one row per request that reached routing, and reports over them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, case, func, insert, select

from imagegate.db.models import UsageRow, utcnow
from imagegate.db.session import Database

GroupBy = Literal["model", "provider", "key", "day"]
GROUP_BY: tuple[GroupBy, ...] = ("model", "provider", "key", "day")


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

    def to_json(self) -> dict[str, Any]:
        """The ``GET /v1/generations/{id}`` body."""
        body = asdict(self)
        body["id"] = body.pop("generation_id")
        body["object"] = "generation"
        body["cost_usd"] = round(self.cost_micro / 1_000_000, 6)
        body["latency_ms"] = round(self.latency_ms, 1)
        body["created_at"] = int(_utc(self.created_at).timestamp())
        return body


_INSERT = insert(UsageRow)  # built once: building it per request costs more than running it


def insert_usage(conn: Connection, record: UsageRecord) -> None:
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
        },
    )


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
    ) -> dict[str, Any]:
        """Totals between ``start`` (inclusive) and ``end`` (exclusive), optionally grouped."""
        columns = [
            func.count().label("requests"),
            func.sum(func.coalesce(UsageRow.images, 0)).label("images"),
            func.sum(UsageRow.cost_micro).label("cost_micro"),
            func.sum(_case_ok()).label("succeeded"),
        ]
        where = [UsageRow.created_at >= start, UsageRow.created_at < end]
        if key_id is not None:
            where.append(UsageRow.key_id == key_id)
        with self._db.engine.connect() as conn:
            total = conn.execute(select(*columns).where(*where)).one()
            groups: list[dict[str, Any]] = []
            if group_by == "day":
                plain = select(
                    UsageRow.created_at, UsageRow.images, UsageRow.cost_micro, UsageRow.status
                ).where(*where)
                groups = _by_day(conn.execute(plain).all())
            elif group_by is not None:
                column = {
                    "model": UsageRow.model,
                    "provider": UsageRow.provider,
                    "key": UsageRow.key_id,
                }[group_by]
                grouped = conn.execute(
                    select(column.label("group"), *columns)
                    .where(*where)
                    .group_by(column)
                    .order_by(column)
                ).all()
                groups = [_totals(r, group=r.group) for r in grouped]
            spend = conn.execute(select(UsageRow.attempts).where(*where)).scalars().all()
        return {
            "object": "usage",
            "start": int(_utc(start).timestamp()),
            "end": int(_utc(end).timestamp()),
            "group_by": group_by,
            "totals": _totals(total),
            "data": groups,
            "upstream": upstream_spend(spend),
        }


def upstream_spend(attempt_lists: Sequence[Any]) -> dict[str, Any]:
    """What upstreams billed for these requests' calls (hedge losers, failures and calls
    cut short included), in total and per provider: compare with ``totals.cost_usd``,
    what callers were charged."""
    by_provider: dict[str, dict[str, int]] = {}
    for attempts in attempt_lists:
        for attempt in attempts or []:
            provider = str(attempt.get("provider") or "unknown")
            acc = by_provider.setdefault(provider, {"calls": 0, "succeeded": 0, "cost": 0})
            acc["calls"] += 1
            acc["succeeded"] += int(attempt.get("status") == 200)
            acc["cost"] += int(attempt.get("cost_micro") or 0)
    total = sum(acc["cost"] for acc in by_provider.values())
    return {
        "cost_usd": round(total / 1_000_000, 6),
        "calls": sum(acc["calls"] for acc in by_provider.values()),
        "by_provider": [
            {
                "provider": provider,
                "calls": acc["calls"],
                "succeeded": acc["succeeded"],
                "cost_usd": round(acc["cost"] / 1_000_000, 6),
            }
            for provider, acc in sorted(by_provider.items())
        ],
    }


def _case_ok() -> Any:
    return case((UsageRow.status == 200, 1), else_=0)


def _totals(row: Any, **extra: Any) -> dict[str, Any]:
    cost = int(row.cost_micro or 0)
    return {
        **extra,
        "requests": int(row.requests or 0),
        "succeeded": int(row.succeeded or 0),
        "images": int(row.images or 0),
        "cost_usd": round(cost / 1_000_000, 6),
    }


def _by_day(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Group per UTC day in Python: date functions differ between SQLite and PostgreSQL."""
    days: dict[str, dict[str, int]] = {}
    for row in rows:
        day = _utc(row.created_at).strftime("%Y-%m-%d")
        acc = days.setdefault(day, {"requests": 0, "succeeded": 0, "images": 0, "cost": 0})
        acc["requests"] += 1
        acc["succeeded"] += int(row.status == 200)
        acc["images"] += int(row.images or 0)
        acc["cost"] += int(row.cost_micro or 0)
    return [
        {
            "group": day,
            "requests": v["requests"],
            "succeeded": v["succeeded"],
            "images": v["images"],
            "cost_usd": round(v["cost"] / 1_000_000, 6),
        }
        for day, v in sorted(days.items())
    ]
