"""``Idempotency-Key``: the same key and body within 24 hours returns the first result.

The first request inserts a ``pending`` row (the primary key makes the insert the lock:
exactly one concurrent request wins), runs, and stores its response. A repeat with the
same body gets the stored response and is not charged again; one that arrives while the
first still runs gets 409; one with a different body gets 400. A first request that fails
deletes its row, so the retry a client sends after an error runs for real. A pending row
older than the hold expiry belongs to a process that died and is taken over.

The stored body holds no image bytes: the pipeline (``generation/record.py``) keeps ``b64_json``
images in the image store and stores their file ids; streams store their completed event.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from imagegate.core.errors import Conflict, InvalidRequest
from imagegate.db.models import IdempotencyRow, utcnow
from imagegate.db.session import Database

HEADER = "idempotency-key"
RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def request_hash(fields: dict[str, object], files: list[bytes]) -> str:
    """A digest of what the caller sent: its fields (key order ignored) and file bytes."""
    digest = hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS, default=str))
    for data in files:
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def check_key(value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_KEY_LENGTH:
        raise InvalidRequest(
            f"The Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} characters.",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class IdempotencyStore:
    def __init__(self, db: Database, pending_ttl_s: float) -> None:
        self._db = db
        self._pending_ttl = timedelta(seconds=pending_ttl_s)

    def begin(self, key_id: str, idem_key: str, digest: str) -> StoredResponse | None:
        """Claim the key (None: go ahead) or return the first response to replay."""
        now = utcnow()
        with self._db.write() as conn:
            row = conn.execute(
                select(IdempotencyRow).where(
                    IdempotencyRow.key_id == key_id, IdempotencyRow.idempotency_key == idem_key
                )
            ).one_or_none()
            if row is not None:
                stale = _utc(row.expires_at) <= now or (
                    row.status == "pending" and _utc(row.created_at) + self._pending_ttl <= now
                )
                if not stale:
                    return _existing(row, digest)
                conn.execute(
                    delete(IdempotencyRow).where(
                        IdempotencyRow.key_id == key_id,
                        IdempotencyRow.idempotency_key == idem_key,
                    )
                )
            try:
                conn.execute(
                    insert(IdempotencyRow).values(
                        key_id=key_id,
                        idempotency_key=idem_key,
                        request_hash=digest,
                        status="pending",
                        created_at=now,
                        expires_at=now + RETENTION,
                    )
                )
            except IntegrityError:
                # PostgreSQL: a concurrent first request inserted it after our select.
                raise _in_progress() from None
        return None

    def complete(self, key_id: str, idem_key: str, response: StoredResponse) -> None:
        with self._db.write() as conn:
            complete_in(conn, key_id, idem_key, response)

    def purge_expired(self) -> int:
        """Delete records past their 24 hours (stored responses can be large)."""
        with self._db.write() as conn:
            return int(
                conn.execute(
                    delete(IdempotencyRow).where(IdempotencyRow.expires_at < utcnow())
                ).rowcount
            )

    def abandon(self, key_id: str, idem_key: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                delete(IdempotencyRow).where(
                    IdempotencyRow.key_id == key_id,
                    IdempotencyRow.idempotency_key == idem_key,
                    IdempotencyRow.status == "pending",
                )
            )


def complete_in(conn: Connection, key_id: str, idem_key: str, response: StoredResponse) -> None:
    """Store the response in ``conn``'s transaction: the settlement's, so that a request is
    charged exactly when its record is completed."""
    conn.execute(
        update(IdempotencyRow)
        .where(IdempotencyRow.key_id == key_id, IdempotencyRow.idempotency_key == idem_key)
        .values(
            status="done",
            response_status=response.status,
            response_headers=response.headers,
            response_body=response.body,
        )
    )


def _existing(row: Any, digest: str) -> StoredResponse:
    if row.request_hash != digest:
        raise InvalidRequest(
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new request.",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    if row.status != "done":
        raise _in_progress()
    return StoredResponse(
        status=int(row.response_status),
        headers=dict(row.response_headers or {}),
        body=bytes(row.response_body or b""),
    )


def _in_progress() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still in progress; retry once it finishes.",
        param="Idempotency-Key",
        code="idempotency_key_in_progress",
        headers={"Retry-After": "1"},
    )
