"""A key's generations, newest first, paged by keyset (OpenAI list style: ``after``).

Keyset paging (``created_at``, then id) stays fast and stable while new rows arrive,
which an offset would not: a page boundary never skips or repeats a row.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import literal, select, tuple_

from imagegate.accounts.usage import UsageRecord, record_from_row
from imagegate.db.models import UsageRow
from imagegate.db.session import Database

MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Page:
    records: list[UsageRecord]
    has_more: bool


class CursorNotFound(LookupError):
    """``after`` names no generation this key can see."""


def list_generations(
    db: Database, key_id: str | None, after: str | None = None, limit: int = 20
) -> Page:
    """Up to ``limit`` records older than ``after``; ``key_id`` None lists every key's."""
    query = select(UsageRow)
    if key_id is not None:
        query = query.where(UsageRow.key_id == key_id)
    with db.session() as session:
        if after is not None:
            cursor = session.get(UsageRow, after)
            if cursor is None or (key_id is not None and cursor.key_id != key_id):
                raise CursorNotFound(after)
            # A row-value comparison, which both databases match against the
            # (key_id,) created_at, generation_id index as one range.
            query = query.where(
                tuple_(UsageRow.created_at, UsageRow.generation_id)
                < tuple_(literal(cursor.created_at, UsageRow.created_at.type), cursor.generation_id)
            )
        query = query.order_by(UsageRow.created_at.desc(), UsageRow.generation_id.desc())
        rows = session.scalars(query.limit(limit + 1)).all()
        records = [record_from_row(row) for row in rows[:limit]]
    return Page(records, has_more=len(rows) > limit)
