"""Idempotency-Key rules as a client relies on them: a key is scoped to one API key, a repeat
replays the first response exactly, and the errors say why (``code``, ``param``, status).
Two API keys using the same Idempotency-Key wherever a filter picks a row; time moves by
editing the stored timestamps, so nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from imagegate.accounts.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyStore,
    StoredResponse,
    check_key,
    request_hash,
)
from imagegate.accounts.keys import KeyStore
from imagegate.core.errors import Conflict, InvalidRequest
from imagegate.db.models import IdempotencyRow
from imagegate.db.session import Database

FIRST = StoredResponse(200, {"x-imagegate-cost-usd": "0.04"}, b'{"data": [1]}')
OTHER = StoredResponse(201, {"x-other": "1"}, b'{"data": [2]}')


def _keys(db: Database) -> tuple[str, str]:
    store = KeyStore(db)
    return store.create("a")[0].id, store.create("b")[0].id


def _shift(db: Database, key_id: str, idem: str, **ages: timedelta) -> None:
    """Move a record's timestamps back in time (``created_at=...``, ``expires_at=...``)."""
    now = datetime.now(UTC)
    with db.write() as conn:
        conn.execute(
            update(IdempotencyRow)
            .where(IdempotencyRow.key_id == key_id, IdempotencyRow.idempotency_key == idem)
            .values(**{column: now - age for column, age in ages.items()})
        )


def _records(db: Database) -> list[tuple[str, str, str]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(IdempotencyRow.key_id, IdempotencyRow.idempotency_key, IdempotencyRow.status)
        ).all()
    return sorted((r[0], r[1], r[2]) for r in rows)


def test_the_same_idempotency_key_under_two_api_keys_is_two_requests(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, b = _keys(db)
    assert store.begin(a, "k", "d1") is None
    assert store.begin(b, "k", "d2") is None  # b's "k" is not a's: no 409, no 400
    store.complete(a, "k", FIRST)
    store.complete(b, "k", OTHER)
    assert store.begin(a, "k", "d1") == FIRST
    assert store.begin(b, "k", "d2") == OTHER


def test_a_replay_returns_the_stored_status_headers_and_body(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, _ = _keys(db)
    store.begin(a, "k", "d")
    store.complete(a, "k", StoredResponse(207, {}, b""))
    replay = store.begin(a, "k", "d")
    assert replay == StoredResponse(207, {}, b"")
    assert isinstance(replay, StoredResponse) and isinstance(replay.body, bytes)


def test_a_repeat_while_the_first_runs_is_409_with_retry_after(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, _ = _keys(db)
    store.begin(a, "k", "d")
    with pytest.raises(Conflict) as info:
        store.begin(a, "k", "d")
    err = info.value
    assert (err.status, err.code, err.param) == (
        409,
        "idempotency_key_in_progress",
        "Idempotency-Key",
    )
    assert err.headers == {"Retry-After": "1"}
    assert err.message == (
        "A request with this Idempotency-Key is still in progress; retry once it finishes."
    )


def test_a_repeat_with_another_body_is_400_even_while_the_first_runs(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, _ = _keys(db)
    store.begin(a, "k", "d")
    for _ in range(2):  # pending, then done
        with pytest.raises(InvalidRequest) as info:
            store.begin(a, "k", "other")
        err = info.value
        assert (err.status, err.code, err.param) == (
            400,
            "idempotency_key_reused",
            "Idempotency-Key",
        )
        assert err.message == (
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new request."
        )
        store.complete(a, "k", FIRST)


def test_a_pending_record_older_than_its_ttl_is_taken_over(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, b = _keys(db)
    store.begin(a, "k", "d")
    store.begin(b, "k", "d")
    _shift(db, a, "k", created_at=timedelta(seconds=61))
    _shift(db, b, "k", created_at=timedelta(seconds=30))
    store.begin(a, "other", "d")
    assert store.begin(a, "k", "new digest") is None  # its first request died: run again
    assert (a, "other", "pending") in _records(db)  # taking one over deletes only that one
    with pytest.raises(Conflict):
        store.begin(b, "k", "d")  # still within its ttl


def test_a_done_record_is_replayed_however_old_until_it_expires(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, b = _keys(db)
    for key_id in (a, b):
        store.begin(key_id, "k", "d")
        store.complete(key_id, "k", FIRST)
    _shift(db, a, "k", created_at=timedelta(hours=2))
    assert store.begin(a, "k", "d") == FIRST
    _shift(db, a, "k", expires_at=timedelta(seconds=1))
    assert store.begin(a, "k", "another body") is None  # expired: a new request
    assert store.begin(b, "k", "d") == FIRST
    assert (a, "k", "pending") in _records(db)


def test_a_new_record_is_kept_for_24_hours(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, _ = _keys(db)
    before = datetime.now(UTC)
    store.begin(a, "k", "d")
    with db.engine.connect() as conn:
        created, expires = conn.execute(
            select(IdempotencyRow.created_at, IdempotencyRow.expires_at)
        ).one()
    assert expires - created == timedelta(hours=24)
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
    assert before <= created <= datetime.now(UTC)


def test_abandon_frees_only_the_named_pending_key(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, b = _keys(db)
    for key_id in (a, b):
        store.begin(key_id, "k", "d")
        store.begin(key_id, "done", "d")
        store.complete(key_id, "done", FIRST)
    store.begin(a, "running", "d")
    store.abandon(a, "k")
    store.abandon(a, "done")  # a finished request is not abandoned
    assert _records(db) == sorted(
        [(a, "done", "done"), (a, "running", "pending"), (b, "k", "pending"), (b, "done", "done")]
    )
    assert store.begin(a, "k", "d") is None
    assert store.begin(a, "done", "d") == FIRST


def test_complete_stores_the_response_of_the_named_key_only(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, b = _keys(db)
    store.begin(a, "k", "d")
    store.begin(b, "k", "d")
    store.begin(a, "j", "d")
    store.complete(a, "k", FIRST)
    assert _records(db) == sorted([(a, "k", "done"), (b, "k", "pending"), (a, "j", "pending")])


def test_purge_deletes_only_expired_records_and_counts_them(db: Database) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, b = _keys(db)
    for key_id in (a, b):
        store.begin(key_id, "old", "d")
        store.begin(key_id, "new", "d")
    _shift(db, a, "old", expires_at=timedelta(seconds=1))
    _shift(db, b, "old", expires_at=timedelta(seconds=1))
    assert store.purge_expired() == 2
    assert store.purge_expired() == 0
    assert _records(db) == sorted([(a, "new", "pending"), (b, "new", "pending")])


def test_an_idempotency_key_is_1_to_255_characters_after_trimming() -> None:
    assert check_key("  abc \t") == "abc"
    assert check_key("x" * MAX_KEY_LENGTH) == "x" * 255
    for value in ("", "   ", "x" * 256):
        with pytest.raises(InvalidRequest) as info:
            check_key(value)
        err = info.value
        assert (err.status, err.code, err.param) == (
            400,
            "invalid_idempotency_key",
            "Idempotency-Key",
        )
        assert "1 to 255 characters" in err.message


def test_the_request_digest_covers_every_field_and_file_in_order() -> None:
    base = request_hash({"prompt": "a", "n": 1}, [b"x", b"y"])
    assert base == request_hash({"n": 1, "prompt": "a"}, [b"x", b"y"])
    assert base != request_hash({"prompt": "a", "n": 2}, [b"x", b"y"])
    assert base != request_hash({"prompt": "a", "n": 1}, [b"y", b"x"])
    assert base != request_hash({"prompt": "a", "n": 1}, [b"x"])
    assert base != request_hash({"prompt": "a", "n": 1}, [b"xy"])
    assert len(base) == 64 and int(base, 16) >= 0
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert request_hash({"t": when}, []) == request_hash({"t": when}, [])
    # a value JSON cannot hold is digested by its text, not refused
    assert request_hash({"x": Decimal("1.5")}, []) == request_hash({"x": Decimal("1.5")}, [])
    assert request_hash({"x": Decimal("1.5")}, []) != request_hash({"x": Decimal("2")}, [])


def test_ages_do_not_depend_on_the_servers_time_zone(db: Database, tokyo_clock: None) -> None:
    store = IdempotencyStore(db, pending_ttl_s=60)
    a, b = _keys(db)
    store.begin(a, "fresh", "d")
    with pytest.raises(Conflict):
        store.begin(a, "fresh", "d")  # seconds old: still running, whatever the zone
    store.begin(b, "stale", "d")
    _shift(db, b, "stale", created_at=timedelta(seconds=61))
    assert store.begin(b, "stale", "d") is None
