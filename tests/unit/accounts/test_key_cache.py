"""Keys are served from memory; a revocation made elsewhere still takes effect within
the stated bound (``REVOCATION_BOUND_S``), and at once where Redis pushes it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from gateway import run_gateway
from imagegate.accounts.keys import KeyStore
from imagegate.accounts.ledger import Ledger
from imagegate.core.errors import Unauthorized
from imagegate.db.session import Database


def _statements(db: Database) -> tuple[list[str], Any]:
    seen: list[str] = []

    def listen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", listen)
    return seen, listen


def test_authenticate_reads_the_database_once_per_bound(db: Database) -> None:
    store = KeyStore(db, bound_s=3600)
    _, token = store.create("app", credits_usd=5)
    seen, listen = _statements(db)
    try:
        for _ in range(20):
            assert store.authenticate(token).credits_micro == 5_000_000
    finally:
        event.remove(db.engine, "before_cursor_execute", listen)
    assert len(seen) <= 2  # the change counter, then the key: not one read per request


def test_revocation_elsewhere_is_refused_within_the_bound(db: Database) -> None:
    bound_s = 0.3
    serving, elsewhere = KeyStore(db, bound_s=bound_s), KeyStore(db)
    key, token = elsewhere.create("app")
    assert serving.authenticate(token).id == key.id  # cached now
    assert elsewhere.revoke(key.id)
    time.sleep(bound_s * 1.5)
    with pytest.raises(Unauthorized, match="revoked"):
        serving.authenticate(token)


def test_revocation_here_is_refused_at_once(db: Database) -> None:
    store = KeyStore(db, bound_s=3600)
    key, token = store.create("app")
    store.authenticate(token)
    store.revoke(key.id)
    with pytest.raises(Unauthorized, match="revoked"):
        store.authenticate(token)


def test_top_ups_elsewhere_are_seen(db: Database) -> None:
    """A spent key is re-read every time (its cached balance is not trusted); a new
    credit limit counts as a change, seen within the bound."""
    bound_s = 0.3
    serving, elsewhere = KeyStore(db, bound_s=bound_s), KeyStore(db)
    ledger = Ledger(db, 60)
    spent, spent_token = elsewhere.create("spent", credits_usd=0)
    unlimited, unlimited_token = elsewhere.create("unlimited")
    assert serving.authenticate(spent_token).credits_micro == 0
    assert serving.authenticate(unlimited_token).credits_micro is None
    ledger.top_up(spent.id, 2_000_000)
    assert serving.authenticate(spent_token).credits_micro == 2_000_000
    ledger.top_up(unlimited.id, 3_000_000)
    time.sleep(bound_s * 1.5)
    assert serving.authenticate(unlimited_token).credits_micro == 3_000_000


@pytest.fixture
def two_gateways(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two gateway processes on one PostgreSQL and one Redis; the second polls the key
    change counter only once an hour, so only the Redis push can reach it in time."""
    env = {"IMAGEGATE_DATABASE_URL": pg_url, "IMAGEGATE_REDIS_URL": redis_url}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        run_gateway(tmp_path / "a", env=env) as a,
        run_gateway(tmp_path / "b", env=env | {"IMAGEGATE_REVOCATION_BOUND_S": "3600"}) as b,
    ):
        yield a.url, b.url


def _wait_for(check: Any, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.postgres
def test_revocation_is_pushed_to_another_process(two_gateways: tuple[str, str]) -> None:
    from gateway import ADMIN_KEY

    a, b = two_gateways
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(f"{a}/v1/admin/keys", json={"name": "app"}, headers=admin, timeout=10)
    key_id, key = created.json()["id"], created.json()["key"]
    listing = f"{b}/v1/generations"
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(listing, headers=headers, timeout=10).status_code == 200  # cached in b
    revoked = httpx.delete(f"{a}/v1/admin/keys/{key_id}", headers=admin, timeout=10)
    assert revoked.status_code == 200
    # Not a timing assertion: b would refuse only after an hour without the push.
    assert _wait_for(lambda: httpx.get(listing, headers=headers).status_code == 401, 30)
