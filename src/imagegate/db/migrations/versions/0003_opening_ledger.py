"""Opening ledger rows: the credits a key was created with, so entries sum to balances.

Keys created before this revision got their first credits without a ledger row; one
``open`` row per such key makes the difference good (``imagegate ledger verify``).
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0003", "0002"


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
