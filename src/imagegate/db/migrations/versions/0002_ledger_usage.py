"""Credit holds, the ledger, usage records, idempotency records; per-key image and
concurrency limits."""

import sqlalchemy as sa
from alembic import op

from imagegate.db.ddl import bigint, key_id, reservation_lifetime, timestamp, varchar

revision, down_revision = "0002", "0001"


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("ipm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_concurrent", sa.Integer(), nullable=True))
    op.create_table(
        "credit_holds",
        varchar("id", 40, primary_key=True),
        key_id(),
        bigint("amount_micro"),
        bigint("charged_micro", nullable=True),
        varchar("status", 16),
        varchar("generation_id", 40),
        *reservation_lifetime(),
    )
    op.create_index("ix_credit_holds_key_id", "credit_holds", ["key_id"])
    op.create_index("ix_credit_holds_status_expires", "credit_holds", ["status", "expires_at"])
    op.create_table(
        "ledger_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        key_id(),
        varchar("kind", 16),
        bigint("amount_micro"),
        bigint("balance_micro", nullable=True),
        varchar("hold_id", 40, nullable=True),
        varchar("generation_id", 40, nullable=True),
        varchar("note", 200, nullable=True),
        timestamp("created_at"),
    )
    op.create_index("ix_ledger_entries_key_id", "ledger_entries", ["key_id"])
    op.create_table(
        "usage_records",
        varchar("generation_id", 40, primary_key=True),
        key_id(),
        varchar("model", 200),
        varchar("operation", 16),
        varchar("provider", 100, nullable=True),
        varchar("upstream_model", 200, nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        varchar("error_code", 64, nullable=True),
        sa.Column("attempts", sa.JSON(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        bigint("cost_micro"),
        timestamp("created_at"),
    )
    op.create_index("ix_usage_records_key_created", "usage_records", ["key_id", "created_at"])
    op.create_table(
        "idempotency_records",
        key_id(primary_key=True),
        varchar("idempotency_key", 255, primary_key=True),
        varchar("request_hash", 64),
        varchar("status", 16),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", sa.JSON(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        timestamp("created_at"),
        timestamp("expires_at"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_records")
    op.drop_table("usage_records")
    op.drop_table("ledger_entries")
    op.drop_table("credit_holds")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("max_concurrent")
        batch.drop_column("ipm")
