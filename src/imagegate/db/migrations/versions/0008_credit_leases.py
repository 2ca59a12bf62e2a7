"""Credit leases: a worker takes a slice of a key's balance in one write (accounts/leases.py).

- ``credit_leases``: one row per slice, open until returned or expired.
- ``usage_records.lease_id``: the lease a request was charged through, so the books can
  check that a lease's charge is the sum of its requests'.
"""

from __future__ import annotations

from alembic import op

from imagegate.db.ddl import bigint, key_id, reservation_lifetime, varchar

revision, down_revision = "0008", "0007"


def upgrade() -> None:
    op.create_table(
        "credit_leases",
        varchar("id", 40, primary_key=True),
        key_id(),
        varchar("worker", 100),
        bigint("amount_micro"),
        bigint("charged_micro"),
        varchar("status", 16),
        *reservation_lifetime(),
    )
    op.create_index("ix_credit_leases_key_id", "credit_leases", ["key_id"])
    op.create_index("ix_credit_leases_status_expires", "credit_leases", ["status", "expires_at"])
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(varchar("lease_id", 40, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("lease_id")
    op.drop_table("credit_leases")
