"""Shared fixtures.

PostgreSQL tests use a real server (``IMAGEGATE_TEST_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``): one fresh database per test session,
emptied before each test. Without a server they skip locally but fail under CI, so a
broken CI database cannot pass silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy.engine import make_url

from imagegate.db.session import Database

PG_ADMIN_URL = os.environ.get(
    "IMAGEGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs a PostgreSQL server")


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL (``postgresql://``) of a uniquely named database created for this session."""
    try:
        import psycopg
    except ImportError as exc:
        _unavailable(f"psycopg is not installed ({exc})")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        _unavailable(f"{PG_ADMIN_URL}: {exc}")
    name = f"imagegate_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session's PostgreSQL database, emptied (fresh ``public`` schema) for this test."""
    import psycopg

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return pg_database


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: SQLite in ``tmp_path``, then PostgreSQL."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'imagegate.db'}"


REDIS_URL = os.environ.get("IMAGEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database (SQLite, and PostgreSQL where marked), disposed after the test."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The local Redis; tests use unique key ids, so nothing is flushed."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        if _in_ci():
            pytest.fail(f"Redis is required under CI: {REDIS_URL}: {exc}", pytrace=False)
        pytest.skip(f"Redis unavailable: {exc}")
    return REDIS_URL


# The end-to-end stack (fake upstreams + one gateway process), shared by the e2e tests.
from e2e_support import stack  # noqa: E402, F401

# The moto S3 server, shared by the S3 store tests and the gateway's S3 operations tests.
from s3_support import s3_endpoint, s3_env  # noqa: E402, F401
