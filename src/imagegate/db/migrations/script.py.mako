"""${message}

Hand-written or reviewed: migrations must work on SQLite and PostgreSQL, and the
schema they produce must match imagegate.db.models (a test compares them). The column
shapes they share are in imagegate.db.ddl. Add ``branch_labels``/``depends_on`` only
when needed (alembic reads them as None when absent).
"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision, down_revision = ${repr(up_revision)}, ${repr(down_revision)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
