"""Daily usage rollups per key, so an admin's usage grouped by key reads a page of keys.

- ``usage_key_daily``: usage summed per key and UTC day, filled here from the hourly
  rollups of 0007 (a day is the sum of its hours), then kept with each new record.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0009", "0008"

_TS = sa.DateTime(timezone=True)
_CHUNK = 5000


def upgrade() -> None:
    op.create_table(
        "usage_key_daily",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("day", _TS, primary_key=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("succeeded", sa.BigInteger(), nullable=False),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("cost_micro", sa.BigInteger(), nullable=False),
    )
    _backfill()


def _backfill() -> None:
    """Sum the hourly rows per day in Python: day truncation differs between dialects."""
    from imagegate.accounts.rollup import ALL_KEYS, floor_day

    conn = op.get_bind()
    days: dict[tuple[str, datetime], list[int]] = {}
    rows = conn.execute(
        sa.text(
            "SELECT key_id, bucket, requests, succeeded, images, cost_micro "
            "FROM usage_hourly WHERE key_id != :everyone"
        ),
        {"everyone": ALL_KEYS},
    )
    while chunk := rows.fetchmany(_CHUNK):
        for key_id, bucket, *values in chunk:
            if isinstance(bucket, str):  # SQLite through an untyped query
                bucket = datetime.fromisoformat(bucket)
            acc = days.setdefault((key_id, floor_day(bucket)), [0, 0, 0, 0])
            for i, value in enumerate(values):
                acc[i] += int(value or 0)
    table = sa.table(
        "usage_key_daily",
        sa.column("key_id", sa.String),
        sa.column("day", _TS),
        sa.column("requests", sa.BigInteger),
        sa.column("succeeded", sa.BigInteger),
        sa.column("images", sa.BigInteger),
        sa.column("cost_micro", sa.BigInteger),
    )
    names = ("requests", "succeeded", "images", "cost_micro")
    batch = [
        {"key_id": key_id, "day": day} | dict(zip(names, values, strict=True))
        for (key_id, day), values in sorted(days.items())
    ]
    for i in range(0, len(batch), _CHUNK):
        conn.execute(sa.insert(table), batch[i : i + _CHUNK])


def downgrade() -> None:
    op.drop_table("usage_key_daily")
