"""Indexes for keyset pages, and hourly usage rollups, so reads stay flat as data grows.

- ``ledger_entries (key_id, id)`` replaces ``(key_id)``: a key's ledger page is one range.
- ``usage_records (key_id, created_at, generation_id)`` replaces ``(key_id, created_at)``
  and ``(created_at, generation_id)`` is added: ``GET /v1/generations`` pages by keyset.
- ``usage_hourly`` / ``usage_upstream_hourly``: usage summed per key and UTC hour, filled
  here from the existing records, then kept with each new record.
- ``key_epoch``: a counter of key changes, polled by in-memory key caches.

Revision ID: 0007
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_BACKFILL_CHUNK = 5000


def upgrade() -> None:
    op.create_index("ix_ledger_entries_key_id_id", "ledger_entries", ["key_id", "id"])
    op.drop_index("ix_ledger_entries_key_id", table_name="ledger_entries")
    op.create_index(
        "ix_usage_records_key_created_id",
        "usage_records",
        ["key_id", "created_at", "generation_id"],
    )
    op.create_index("ix_usage_records_created_id", "usage_records", ["created_at", "generation_id"])
    op.drop_index("ix_usage_records_key_created", table_name="usage_records")
    op.create_table(
        "usage_hourly",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("bucket", _TS, primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("provider", sa.String(100), primary_key=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("succeeded", sa.BigInteger(), nullable=False),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("cost_micro", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_hourly_bucket", "usage_hourly", ["bucket"])
    op.create_table(
        "usage_upstream_hourly",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("bucket", _TS, primary_key=True),
        sa.Column("provider", sa.String(100), primary_key=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("succeeded", sa.BigInteger(), nullable=False),
        sa.Column("cost_micro", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_upstream_hourly_bucket", "usage_upstream_hourly", ["bucket"])
    op.create_table(
        "key_epoch",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO key_epoch (id, epoch) VALUES (1, 0)")
    _backfill()


def _backfill() -> None:
    """Sum the existing records in Python: hour truncation differs between dialects."""
    from imagegate.accounts.rollup import Rollup

    conn = op.get_bind()
    rollup = Rollup(days=False)  # usage_key_daily comes in 0009, which fills it itself
    rows = conn.execute(
        sa.text(
            "SELECT key_id, model, provider, status, images, cost_micro, attempts, created_at "
            "FROM usage_records"
        )
    )
    while chunk := rows.fetchmany(_BACKFILL_CHUNK):
        for row in chunk:
            rollup.add_row(row)
    rollup.write(conn)


def downgrade() -> None:
    op.drop_table("key_epoch")
    op.drop_table("usage_upstream_hourly")
    op.drop_table("usage_hourly")
    op.create_index("ix_usage_records_key_created", "usage_records", ["key_id", "created_at"])
    op.drop_index("ix_usage_records_created_id", table_name="usage_records")
    op.drop_index("ix_usage_records_key_created_id", table_name="usage_records")
    op.create_index("ix_ledger_entries_key_id", "ledger_entries", ["key_id"])
    op.drop_index("ix_ledger_entries_key_id_id", table_name="ledger_entries")
