"""Credit leases: a worker takes a slice of a key's balance in one write (accounts/leases.py).

- ``credit_leases``: one row per slice, open until returned or expired.
- ``usage_records.lease_id``: the lease a request was charged through, so the books can
  check that a lease's charge is the sum of its requests'.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0008", "0007"

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "credit_leases",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(100), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=False),
        sa.Column("charged_micro", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("closed_at", _TS, nullable=True),
    )
    op.create_index("ix_credit_leases_key_id", "credit_leases", ["key_id"])
    op.create_index("ix_credit_leases_status_expires", "credit_leases", ["status", "expires_at"])
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("lease_id", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("lease_id")
    op.drop_table("credit_leases")
