"""Keyset paging of usage records (SQLite and PostgreSQL): stable order, ties broken by id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagegate.accounts.history import CursorNotFound, list_generations
from imagegate.accounts.usage import UsageBook, UsageRecord
from imagegate.db.session import Database


def test_pages_cover_every_record_once_even_with_equal_times(db: Database) -> None:
    book = UsageBook(db)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    ids = []
    for i in range(7):  # pairs share a timestamp, so only the id orders them
        gid = f"gen_{i:02d}"
        ids.append(gid)
        when = base + timedelta(seconds=i // 2)
        book.record(UsageRecord(gid, "k1", "m", "generate", created_at=when))
    book.record(UsageRecord("gen_other", "k2", "m", "generate", created_at=base))
    seen: list[str] = []
    after = None
    while True:
        page = list_generations(db, "k1", after, limit=3)
        seen += [r.generation_id for r in page.records]
        if not page.has_more:
            break
        after = page.records[-1].generation_id
    expected = sorted(ids, key=lambda g: ((int(g[4:]) // 2), g), reverse=True)
    assert seen == expected
    everyone = list_generations(db, None, limit=100).records
    assert len(everyone) == 8
    with pytest.raises(CursorNotFound):
        list_generations(db, "k1", "gen_other")
