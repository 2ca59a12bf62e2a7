"""The books' invariant as a test helper: every money-moving test ends with it.

It runs the same check as ``imagegate ledger verify`` and, given what the fake upstreams
saw, that every upstream call the gateway made is on record.
"""

from __future__ import annotations

from pathlib import Path

from gateway import RunningGateway
from imagegate.accounts.audit import BooksSummary, verify_books
from imagegate.db.session import Database


def gateway_database(gw: RunningGateway, database_url: str | None = None) -> str:
    """The database a test gateway used: ``database_url``, else its data dir's SQLite."""
    return database_url or f"sqlite:///{Path(gw.data_dir) / 'imagegate.db'}"


def assert_books_balance(
    database: str | Database, upstream_calls: int | None = None
) -> BooksSummary:
    """Ledger entries sum to every balance, holds and usage agree, and (when given) the
    number of upstream calls on record is what the fake upstreams received."""
    if isinstance(database, Database):
        summary = verify_books(database)
    else:
        db = Database(database)
        try:
            summary = verify_books(db)
        finally:
            db.dispose()
    if upstream_calls is not None:
        assert summary.upstream_calls == upstream_calls, (
            f"{upstream_calls} upstream calls made, {summary.upstream_calls} on record"
        )
    return summary
