"""Opening ledger rows: the credits a key was created with, so entries sum to balances.

Keys created before this revision got their first credits without a ledger row; one
``open`` row per such key makes the difference good (``imagegate ledger verify``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()
    missing = conn.execute(
        sa.text(
            "SELECT k.id, k.credits_micro - COALESCE(SUM(e.amount_micro), 0) AS gap "
            "FROM api_keys k LEFT JOIN ledger_entries e ON e.key_id = k.id "
            "WHERE k.credits_micro IS NOT NULL GROUP BY k.id, k.credits_micro"
        )
    ).all()
    now = datetime.now(UTC)
    for key_id, gap in missing:
        if gap:
            conn.execute(
                sa.text(
                    "INSERT INTO ledger_entries (key_id, kind, amount_micro, balance_micro, "
                    "hold_id, generation_id, note, created_at) VALUES "
                    "(:key_id, 'open', :gap, NULL, NULL, NULL, :note, :now)"
                ),
                {
                    "key_id": key_id,
                    "gap": int(gap),
                    "note": "opening balance (migration 0003)",
                    "now": now,
                },
            )


def downgrade() -> None:
    op.execute("DELETE FROM ledger_entries WHERE kind = 'open'")
