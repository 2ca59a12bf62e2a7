"""API keys and the database layer under them, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import delete, inspect, select

from imagegate.accounts.keys import (
    INCORRECT_KEY_MESSAGE,
    MISSING_KEY_MESSAGE,
    REVOKED_KEY_MESSAGE,
    ApiKey,
    KeyStore,
    bearer_token,
)
from imagegate.core.errors import InvalidRequest, Unauthorized
from imagegate.db.models import ApiKeyRow, Base
from imagegate.db.session import Database, database_url_for, normalize_url


@pytest.fixture
def store(db: Database) -> KeyStore:
    return KeyStore(db)


def _head(db: Database) -> str | None:
    return ScriptDirectory.from_config(db.alembic_config()).get_current_head()


# --- keys ---------------------------------------------------------------------------------


def test_create_and_authenticate_round_trip(store: KeyStore) -> None:
    key, token = store.create("alice", models=["openai/gpt-image-1"], credits_usd=1.5, rpm=60)
    prefix, key_id, secret = token.split("_", 2)
    assert (prefix, key_id) == ("ig", key.id)
    assert re.fullmatch(r"[a-z0-9]{12}", key.id)
    assert len(secret) >= 43
    assert key.models == ("openai/gpt-image-1",)
    assert key.credits_micro == 1_500_000 and key.rpm == 60
    assert not key.is_admin and not key.revoked
    assert key.created_at.tzinfo is not None
    assert store.authenticate(token) == key
    assert store.get(key.id) == key


def test_defaults_mean_no_limits(store: KeyStore) -> None:
    key, token = store.create("unlimited")
    assert (key.models, key.credits_micro, key.rpm) == (None, None, None)
    assert store.authenticate(token).allows_model("anything/at-all")


def test_only_a_hash_of_the_secret_is_stored(db: Database, store: KeyStore) -> None:
    key, token = store.create("bob")
    secret = token.split("_", 2)[2]
    with db.session() as session:
        row = session.get(ApiKeyRow, key.id)
        assert row is not None
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr(row.__dict__)


def test_wrong_secret_is_rejected(store: KeyStore) -> None:
    key, token = store.create("carol")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(Unauthorized) as info:
        store.authenticate(wrong)
    assert info.value.status == 401 and info.value.message == INCORRECT_KEY_MESSAGE
    with pytest.raises(Unauthorized):
        store.authenticate(f"ig_{key.id}_")


@pytest.mark.parametrize(
    "token",
    ["", "ig_", "ig_x", "ig_x_", "ig__secret", "sk-" + "a" * 48, "ig_ABC_secret", "x" * 10_000],
)
def test_malformed_tokens_are_rejected(store: KeyStore, token: str) -> None:
    store.create("someone")
    with pytest.raises(Unauthorized) as info:
        store.authenticate(token)
    assert info.value.message == INCORRECT_KEY_MESSAGE
    assert info.value.to_dict()["error"]["type"] == "invalid_request_error"


def test_secret_may_contain_underscores(store: KeyStore) -> None:
    key, token = store.create("dave", plaintext="ig_abc123_se_cr-et_")
    assert key.id == "abc123"
    assert store.authenticate(token) == key
    with pytest.raises(Unauthorized):
        store.authenticate("ig_abc123_se")


def test_foreign_format_plaintext_gets_a_stable_derived_id(store: KeyStore) -> None:
    key, token = store.create("external", plaintext="sk-my-own-admin-token")
    assert token == "sk-my-own-admin-token"
    assert len(key.id) == 12 and all(c in "0123456789abcdef" for c in key.id)
    assert store.authenticate(token) == key
    with pytest.raises(InvalidRequest) as info:
        store.create("again", plaintext="sk-my-own-admin-token")
    assert info.value.code == "key_exists"


def test_revoke_takes_effect_in_every_worker_within_the_bound(
    database_url: str, store: KeyStore
) -> None:
    """At once in the worker that revoked; within the bound (the key change counter's
    poll, ``REVOCATION_BOUND_S``; 0.2 s here) in every other."""
    key, token = store.create("erin")
    other_key, other_token = store.create("frank")
    other_db = Database(database_url)
    try:
        other_worker = KeyStore(other_db, bound_s=0.2)
        assert other_worker.authenticate(token) == key
        assert store.revoke(key.id) is True
        time.sleep(0.3)
        for keys in (store, other_worker):
            with pytest.raises(Unauthorized) as info:
                keys.authenticate(token)
            assert info.value.message == REVOKED_KEY_MESSAGE
    finally:
        other_db.dispose()
    revoked = store.get(key.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert store.revoke(key.id) is True
    assert store.get(key.id) == revoked  # the first revocation time is kept
    assert store.revoke("nosuchkey") is False
    assert store.authenticate(other_token) == other_key
    assert [k.id for k in store.list(include_revoked=False)] == [other_key.id]
    assert {k.id for k in store.list()} == {key.id, other_key.id}


def test_revoked_message_needs_the_right_secret(store: KeyStore) -> None:
    key, token = store.create("gina")
    store.revoke(key.id)
    with pytest.raises(Unauthorized) as info:
        store.authenticate(token + "x")
    assert info.value.message == INCORRECT_KEY_MESSAGE


def test_models_restriction(store: KeyStore) -> None:
    _, token = store.create("restricted", models=["openai/gpt-image-1", "flux-1-schnell"])
    key = store.authenticate(token)
    assert key.allows_model("openai/gpt-image-1")
    assert not key.allows_model("openai/dall-e-3", aliases=["dall-e-3"])
    assert key.allows_model("black-forest-labs/flux-1-schnell", aliases=["flux-1-schnell"])
    nothing, _ = store.create("nothing", models=[])
    assert not nothing.allows_model("imagegate/sandbox", aliases=["sandbox"])


def test_allows_model_without_restriction() -> None:
    key = ApiKey("k", "n", False, None, None, None, created_at=None, revoked_at=None)  # type: ignore[arg-type]
    assert key.allows_model("any/model")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"name": " "}, "name"),
        ({"credits_usd": -1.0}, "credits"),
        ({"credits_usd": float("nan")}, "credits"),
        ({"rpm": 0}, "rpm"),
        ({"models": ["ok", ""]}, "models"),
        ({"plaintext": "has space"}, "key"),
        ({"plaintext": ""}, "key"),
    ],
)
def test_create_validates(store: KeyStore, kwargs: dict[str, object], param: str) -> None:
    args: dict[str, object] = {"name": "valid", **kwargs}
    with pytest.raises(InvalidRequest) as info:
        store.create(**args)  # type: ignore[arg-type]
    assert info.value.param == param and info.value.status == 400
    assert store.list() == []


def test_credits_are_stored_in_micro_usd(store: KeyStore) -> None:
    assert store.create("a", credits_usd=0.1)[0].credits_micro == 100_000
    assert store.create("b", credits_usd=0)[0].credits_micro == 0
    assert store.create("c", credits_usd=12345.678901)[0].credits_micro == 12_345_678_901


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  ig_a_b-c_d ", "ig_a_b-c_d"), ("BEARER\tx", "x")],
)
def test_bearer_token(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "abc"])
def test_bearer_token_missing(header: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        bearer_token(header)
    assert info.value.message == MISSING_KEY_MESSAGE


# --- admin bootstrap ----------------------------------------------------------------------


def test_admin_bootstrap_writes_a_private_key_file(store: KeyStore, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = store.ensure_admin(None, data_dir)
    assert path == (data_dir / "admin-key").absolute()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert store.authenticate(token).is_admin
    assert store.ensure_admin(None, data_dir) is None
    assert path.read_text().strip() == token
    assert [k.is_admin for k in store.list()] == [True]


def test_admin_bootstrap_regenerates_when_no_active_admin(store: KeyStore, tmp_path: Path) -> None:
    store.create("user")
    first = store.ensure_admin(None, tmp_path)
    assert first is not None
    old = first.read_text().strip()
    first.chmod(0o644)
    store.revoke(store.authenticate(old).id)
    second = store.ensure_admin(None, tmp_path)
    assert second == first and stat.S_IMODE(second.stat().st_mode) == 0o600
    new = second.read_text().strip()
    assert new != old and store.authenticate(new).is_admin


@pytest.mark.parametrize("env_key", ["ig_boot0_s3cr3t_value", "my-own-admin-token-123"])
def test_admin_bootstrap_from_env(store: KeyStore, tmp_path: Path, env_key: str) -> None:
    assert store.ensure_admin(env_key, tmp_path) is None
    assert not (tmp_path / "admin-key").exists()
    key = store.authenticate(env_key)
    assert key.is_admin and key.models is None and key.credits_micro is None
    assert store.ensure_admin(env_key, tmp_path) is None
    assert store.ensure_admin(None, tmp_path) is None  # an active admin exists
    assert store.list() == [key]
    store.revoke(key.id)
    assert store.ensure_admin(env_key, tmp_path) is None
    with pytest.raises(Unauthorized):
        store.authenticate(env_key)  # an env var does not undo a revocation


def test_admin_env_key_conflicts(store: KeyStore, tmp_path: Path) -> None:
    user, token = store.create("user")
    with pytest.raises(ValueError, match="non-admin"):
        store.ensure_admin(token, tmp_path)
    with pytest.raises(ValueError, match="another existing key"):
        store.ensure_admin(f"ig_{user.id}_different", tmp_path)
    assert not store.authenticate(token).is_admin


# --- database and migrations --------------------------------------------------------------


def test_migrate_is_idempotent(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert db.current_revision() is None
        db.migrate()
        db.migrate()
        assert db.current_revision() == _head(db)
        tables = set(inspect(db.engine).get_table_names())
        assert {"api_keys", "credit_holds", "ledger_entries", "usage_records"} <= tables
    finally:
        db.dispose()


def test_migrations_match_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


_STARTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from imagegate.accounts.keys import KeyStore
    from imagegate.db.session import Database

    url, workdir, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    (workdir / f"ready-{n}").touch()
    while not (workdir / "go").exists():
        time.sleep(0.005)
    db = Database(url)
    db.migrate()
    path = KeyStore(db).ensure_admin(None, workdir / f"data-{n}")
    print(path or "-")
    """
)


def test_concurrent_startup(database_url: str, tmp_path: Path) -> None:
    """Two processes migrating and bootstrapping one fresh database at once."""
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, database_url, str(tmp_path), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for n in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in range(2)):
        assert time.monotonic() < deadline, "starters did not start"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    results = [p.communicate(timeout=120) for p in starters]
    for process, (_, err) in zip(starters, results, strict=True):
        assert process.returncode == 0, err
    paths = [out.strip() for out, _ in results if out.strip() != "-"]
    assert len(paths) == 1, results  # exactly one starter generated the admin key

    db = Database(database_url)
    try:
        assert db.current_revision() == _head(db)
        store = KeyStore(db)
        admins = [k for k in store.list() if k.is_admin]
        assert len(admins) == 1
        assert store.authenticate(Path(paths[0]).read_text().strip()) == admins[0]
    finally:
        db.dispose()


def test_database_url_for(tmp_path: Path) -> None:
    assert database_url_for(tmp_path, "postgresql://u@h/db") == "postgresql://u@h/db"
    data_dir = tmp_path / "new" / "data"
    url = database_url_for(data_dir, None)
    assert data_dir.is_dir()
    assert url == f"sqlite:///{data_dir.absolute()}/imagegate.db"
    assert database_url_for(data_dir, "  ") == url


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    db = Database(database_url_for(tmp_path, None))
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_normalize_url(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


def test_exclusive_rolls_back_on_error(db: Database, store: KeyStore) -> None:
    key, _ = store.create("kept")
    with pytest.raises(RuntimeError), db.exclusive() as conn:
        conn.execute(delete(ApiKeyRow))
        raise RuntimeError
    with db.session() as session:
        assert session.scalars(select(ApiKeyRow.id)).all() == [key.id]


def test_env_admin_key_only_bootstraps_an_empty_database(store: KeyStore, tmp_path: Path) -> None:
    first = "ig_bootone_" + "Q7x" * 12
    assert store.ensure_admin(first, tmp_path) is None
    later = "ig_boottwo_" + "Z9k" * 12
    assert store.ensure_admin(later, tmp_path) is None  # an admin exists: not stored
    with pytest.raises(Unauthorized):
        store.authenticate(later)
    assert store.authenticate(first).is_admin
