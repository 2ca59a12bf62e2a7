"""Indexes for keyset pages, and hourly usage rollups, so reads stay flat as data grows.

- ``ledger_entries (key_id, id)`` replaces ``(key_id)``: a key's ledger page is one range.
- ``usage_records (key_id, created_at, generation_id)`` replaces ``(key_id, created_at)``
  and ``(created_at, generation_id)`` is added: ``GET /v1/generations`` pages by keyset.
- ``usage_hourly`` / ``usage_upstream_hourly``: usage summed per key and UTC hour, filled
  here from the existing records, then kept with each new record.
- ``key_epoch``: a counter of key changes, polled by in-memory key caches.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from imagegate.db.ddl import bigint, key_id, timestamp, varchar

revision, down_revision = "0007", "0003"
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
    _hourly_rollup(
        "usage_hourly",
        varchar("model", 200, primary_key=True),
        varchar("provider", 100, primary_key=True),
        bigint("requests"),
        bigint("succeeded"),
        bigint("images"),
        bigint("cost_micro"),
    )
    _hourly_rollup(
        "usage_upstream_hourly",
        varchar("provider", 100, primary_key=True),
        bigint("calls"),
        bigint("succeeded"),
        bigint("cost_micro"),
    )
    op.create_table(
        "key_epoch",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO key_epoch (id, epoch) VALUES (1, 0)")
    _backfill()


def _hourly_rollup(name: str, *columns: sa.Column[Any]) -> None:
    """A table of sums per key and UTC hour (``bucket``), and its index on the hour."""
    op.create_table(name, key_id(primary_key=True), timestamp("bucket", primary_key=True), *columns)
    op.create_index(f"ix_{name}_bucket", name, ["bucket"])


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
