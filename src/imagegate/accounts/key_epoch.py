"""The key change counter: one row bumped by every change that cached keys must see.

Revocations and top-ups bump it in their own transaction; each process's key cache
(accounts/keys.py) re-reads it at most every ``REVOCATION_BOUND_S`` and drops what it
holds when it moved. Its own module so the ledger (top-ups) and the key store can both
use it without importing each other.
"""

from __future__ import annotations

import os

from sqlalchemy import Connection, select, update

from imagegate.db.models import KeyEpochRow

# A revocation (or top-up) made anywhere takes effect in every process within this many
# seconds (``IMAGEGATE_REVOCATION_BOUND_S``, default 1). With Redis the gateway that made
# the change also pushes it (``KEYS_CHANNEL``), so the other processes usually see it at once.
REVOCATION_BOUND_S = float(os.environ.get("IMAGEGATE_REVOCATION_BOUND_S") or 1.0)
KEYS_CHANNEL = "imagegate:keys"

_EPOCH = select(KeyEpochRow.epoch).where(KeyEpochRow.id == 1)
_BUMP = update(KeyEpochRow).where(KeyEpochRow.id == 1).values(epoch=KeyEpochRow.epoch + 1)


def bump_key_epoch(conn: Connection) -> None:
    """Count a change to a key, in the transaction that makes it."""
    conn.execute(_BUMP)


def read_key_epoch(conn: Connection) -> int | None:
    value = conn.execute(_EPOCH).scalar()
    return None if value is None else int(value)
