"""``GET /v1/usage`` over windows with partial hours gives what a count of the records gives.

The partial hours at a window's edges are summed by the database (accounts/edges.py:
GROUP BY, the attempts expanded as JSON), the whole hours come from the rollups: every
answer here is compared, whole, with a plain count over the records written, on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagegate.accounts.usage import UsageBook, UsageRecord, insert_usage
from imagegate.db.session import Database

BASE = datetime(2026, 11, 20, tzinfo=UTC)  # midnight: windows below cross it
ATTEMPTS: list[list[dict[str, Any]]] = [
    [{"provider": "p1", "status": 200, "cost_micro": 7}],
    [
        {"provider": "p2", "status": 502, "cost_micro": 3},
        {"provider": "p1", "status": 200, "cost_micro": 11},
    ],
    [{"provider": "p2", "status": "timeout", "cost_micro": 0}],
    [{"provider": "", "status": 429}, {"status": 200, "cost_micro": 5}],  # -> "unknown"
    [],
]
WINDOWS = {
    "partial hours at both ends": (
        BASE - timedelta(hours=5, minutes=47),
        BASE + timedelta(hours=3, minutes=12),
    ),
    "inside one hour": (
        BASE + timedelta(hours=1, minutes=5),
        BASE + timedelta(hours=1, minutes=50),
    ),
    "across one hour boundary": (BASE - timedelta(minutes=25), BASE + timedelta(minutes=35)),
    "whole hours only": (BASE - timedelta(hours=4), BASE + timedelta(hours=2)),
    "from an hour to a partial one": (BASE - timedelta(hours=2), BASE + timedelta(minutes=1)),
}


def _records(rng: random.Random) -> list[UsageRecord]:
    records = []
    for i in range(240):
        status = rng.choice((200, 200, 200, 502, 429))
        records.append(
            UsageRecord(
                generation_id=f"gen_e{i}",
                key_id=rng.choice(("ka", "kb", "kc")),
                model=rng.choice(("m1", "m2", "m3")),
                operation="generate",
                status=status,
                provider=rng.choice(("p1", "p2", None)),
                attempts=rng.choice(ATTEMPTS),
                images=rng.randrange(3) if status == 200 else 0,
                cost_micro=rng.randrange(1000) if status == 200 else 0,
                created_at=BASE + timedelta(seconds=rng.randrange(-7 * 3600, 5 * 3600)),
            )
        )
    records.append(  # on an edge exactly: the start is inclusive, the end exclusive
        UsageRecord("gen_on_edge", "ka", "m1", "generate", created_at=WINDOWS["inside one hour"][0])
    )
    return records


def _counted(
    records: list[UsageRecord], group: Callable[[UsageRecord], Any] | None
) -> dict[str, Any]:
    """What the answer must be: sums over the records, one by one."""

    def totals(rs: list[UsageRecord], **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "requests": len(rs),
            "succeeded": sum(r.status == 200 for r in rs),
            "images": sum(r.images for r in rs),
            "cost_usd": round(sum(r.cost_micro for r in rs) / 1_000_000, 6),
        }

    data = []
    if group is not None:
        values = sorted({group(r) for r in records}, key=lambda g: (g is None, g or ""))
        data = [totals([r for r in records if group(r) == g], group=g) for g in values]
    calls = [a for r in records for a in r.attempts]
    providers = sorted({str(a.get("provider") or "unknown") for a in calls})

    def upstream(name: str) -> dict[str, Any]:
        mine = [a for a in calls if str(a.get("provider") or "unknown") == name]
        return {
            "provider": name,
            "calls": len(mine),
            "succeeded": sum(a.get("status") == 200 for a in mine),
            "cost_usd": round(sum(int(a.get("cost_micro") or 0) for a in mine) / 1e6, 6),
        }

    return {
        "totals": totals(records),
        "data": data,
        "upstream": {
            "cost_usd": round(sum(int(a.get("cost_micro") or 0) for a in calls) / 1e6, 6),
            "calls": len(calls),
            "by_provider": [upstream(p) for p in providers],
        },
    }


GROUPS: dict[str | None, Callable[[UsageRecord], Any] | None] = {
    None: None,
    "model": lambda r: r.model,
    "provider": lambda r: r.provider,
    "key": lambda r: r.key_id,
    "day": lambda r: r.created_at.strftime("%Y-%m-%d"),
}


@pytest.mark.parametrize("window", list(WINDOWS))
def test_usage_over_partial_hours_equals_a_count_of_the_records(db: Database, window: str) -> None:
    records = _records(random.Random(11))
    with db.write() as conn:
        for record in records:
            insert_usage(conn, record)
    book = UsageBook(db)
    start, end = WINDOWS[window]
    inside = [r for r in records if start <= r.created_at < end]
    assert inside
    for group_by, group in GROUPS.items():
        for key_id in (None, "ka"):
            if group_by == "key" and key_id is not None:
                continue
            mine = [r for r in inside if key_id is None or r.key_id == key_id]
            body = book.summary(start, end, group_by, key_id)  # type: ignore[arg-type]
            got = {name: body[name] for name in ("totals", "data", "upstream")}
            assert got == _counted(mine, group), (window, group_by, key_id)
    pages, after = [], None
    while True:  # an admin's pages of keys: each key's sums, and every key's totals
        page = book.summary(start, end, "key", None, limit=2, after=after)
        assert page["totals"] == _counted(inside, None)["totals"]
        assert page["upstream"] == _counted(inside, None)["upstream"]
        pages += page["data"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert pages == _counted(inside, GROUPS["key"])["data"]
